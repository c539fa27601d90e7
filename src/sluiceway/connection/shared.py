"""The per-listener facts every connection of one server reads, and the per-connection facts.

``Shared`` is built once per listener (``server/listener.py``) from the
``Config``, the app and the ``ServerState``; every protocol of that listener
(``http1/protocol.py``, ``http2/protocol.py``, which an HTTP/1.1 connection
hands over to) keeps a reference and reads limits and timeouts from it
instead of from ``Config``: a slotted attribute read, once per request.
``connection_info`` builds a connection's ``ConnectionInfo`` once, in
``connection_made``, and the protocols pass it on (scope building, upgrades).

Invariants: nothing here changes after the listener starts, except the few
fields a single event loop thread updates (``loop``, taken by the first
connection; ``holding``/``flush_scheduled``, the HTTP/1.1 write batching;
``last_host``, the last ``Host`` llhttp's path validated).

Imports ``sluiceway.connection.state`` and, lazily, ``sluiceway.transport.tls``;
never a protocol module: the listener builds the HTTP/2 settings and passes
them in (``http2.config.H2Config`` is imported for its type only).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from sluiceway.connection.state import ConnectionInfo

if TYPE_CHECKING:
    from sluiceway.asgi.types import ASGIApp
    from sluiceway.config import Config
    from sluiceway.connection.state import ServerState
    from sluiceway.http2.config import H2Config

# Chunked request framing allowed beyond the body, before the per-body-byte
# share (http1/request_reader.py, _CHUNK_FRAMING_PER_BODY_BYTE): a fixed 4 KiB
# (Twisted caps a chunk-size line at 4 KiB, http.maxChunkSizeLineLength) plus
# the head budget (trailers share it, RFC 9112 §7.1.2).
_CHUNK_FRAMING_BYTES: Final = 4 * 1024


class Shared:
    """Everything every connection of one server shares; built once by the listener."""

    __slots__ = (
        "access_log",
        "app",
        "body_timeout_s",
        "config",
        "flush_scheduled",
        "h2",
        "headers_timeout_s",
        "holding",
        "keep_alive_s",
        "last_host",
        "limit_concurrency",
        "loop",
        "max_body",
        "max_framing",
        "max_head",
        "max_line",
        "metrics",
        "root_path",
        "state",
        "tls",
        "tls_info",
        "ws_enabled",
    )

    def __init__(
        self,
        config: Config,
        app: ASGIApp,
        state: ServerState,
        tls_info: Any = None,
        tls: bool = False,
        h2: H2Config | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.state = state
        # Whether the listener wraps connections in TLS: a plain server skips
        # the transport's ssl_object lookup per connection.
        self.tls = tls or tls_info is not None
        self.tls_info = tls_info
        self.access_log = config.access_log
        # connection/metrics.py's registry with --metrics-port, else None.
        self.metrics = state.metrics
        self.keep_alive_s = config.keep_alive_timeout_s
        self.headers_timeout_s = config.request_headers_timeout_s
        # 0 turns the body timeout off: a deadline that never comes.
        self.body_timeout_s = config.request_body_timeout_s or float("inf")
        self.limit_concurrency = config.limit_concurrency
        self.max_body = config.max_request_body_bytes
        self.max_head = config.max_request_headers_bytes
        self.max_framing = _CHUNK_FRAMING_BYTES + config.max_request_headers_bytes
        self.max_line = config.max_request_line_bytes
        self.root_path = config.root_path
        self.ws_enabled = config.ws != "none"
        # HTTP/2's settings (http2/config.py), made once per server by the
        # listener; None: HTTP/1.1 only.
        self.h2 = h2
        # The server's loop, taken by the first connection: asking for it per
        # connection costs a getpid() syscall on CPython 3.11 (scenario e).
        self.loop: asyncio.AbstractEventLoop | None = None
        # HTTP/1.1 connections holding output for the end of this loop pass
        # (http1/response_writer.py, _write_body), flushed by one callback for them
        # all (flush_holding there). Typed loosely: this module knows no protocol.
        self.holding: list[Any] = []
        self.flush_scheduled = False
        # The last Host value llhttp's path found valid (see on_headers_complete).
        self.last_host = b""


def connection_info(transport: asyncio.BaseTransport, shared: Shared) -> ConnectionInfo:
    """Build the per-connection facts once (ASGI www spec: client/server keys)."""
    peer = transport.get_extra_info("peername")
    sock = transport.get_extra_info("sockname")
    client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) and len(peer) >= 2 else None
    server: tuple[str, int | None] | None
    if isinstance(sock, tuple) and len(sock) >= 2:
        server = (str(sock[0]), int(sock[1]))
    elif isinstance(sock, str) and sock:
        server = (sock, None)  # Unix socket: [path, None]
    else:
        server = None
    if not shared.tls:
        return ConnectionInfo(client, server, "http")
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return ConnectionInfo(client, server, "http")
    tls = None
    if shared.tls_info is not None:
        from sluiceway.transport.tls import tls_extension

        tls = tls_extension(ssl_object, shared.tls_info)
    return ConnectionInfo(
        client=client, server=server, scheme="https", ssl_object=ssl_object, tls=tls
    )
