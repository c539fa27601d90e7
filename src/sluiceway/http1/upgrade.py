"""The seam where an HTTP/1.1 connection may be handed to another protocol.

Contract (the WebSocket engineer fills in ``try_upgrade``):

``try_upgrade(request) -> bool`` is called by ``http1/switching.py`` once the
head of a request asking to switch protocols is complete (it carries
``Upgrade`` and ``Connection: upgrade``; llhttp raised ``HttpParserUpgrade``)
and no earlier request on the connection is still in flight. ``request`` is an
``UpgradeRequest`` holding:

* ``transport``: the connection's transport, still reading;
* ``info``: the connection's ``ConnectionInfo`` (client, server, scheme, TLS);
* ``scope``: the fully built ``http`` scope of the request (method, path,
  headers with lowercased names, ...); a websocket scope can be derived from
  it with ``type``/``scheme`` changed and the HTTP-only keys dropped;
* ``upgrade``: the lowercased ``Upgrade`` header value (e.g. ``b"websocket"``);
* ``buffered``: bytes already read past the request head (the first frames a
  client may send at once); the new protocol must process them first;
* ``app``, ``config``, ``state``: the ASGI app, ``Config`` and ``ServerState``.

Return ``True`` when the new protocol took the connection over: it has called
``transport.set_protocol(new)`` and will drive the transport from now on,
and it registers itself in ``state.connections`` (``shutdown()`` contract of
``server/listener.py``). The HTTP/1 protocol then forgets the transport.

Return ``False`` to decline: the request is served as plain HTTP (what uvicorn
does with ``--ws none``) and the buffered bytes are parsed as the next request.

Must not import ``http1/protocol.py`` or ``http1/switching.py`` (which import this one).

WebSocket (``Upgrade: websocket``): the handshake is checked with
``websocket.handshake.validate_request``; a bad one is answered here (400, or
426 with ``Sec-WebSocket-Version: 13``) and the connection handed to
``transport/linger.py``'s ``LingeringClose``, which drops what the client
still sends (a body, pipelined bytes) until its EOF or a short linger, so that
no RST destroys the answer. A good one gets a ``websocket`` scope derived from
the ``http`` one (``asgi/scope.py``'s ``websocket_scope``, shared with HTTP/2)
and a ``WebSocketAdapter``, which knows nothing of HTTP/1.1:
``http1/ws_carrier.py``'s ``HTTP1Carrier`` takes the transport and carries it
(the 101 or the denial, frames, TCP's close), and the adapter starts with the
buffered bytes. While the server shuts down, or at ``limit_concurrency``, the
upgrade is declined so that HTTP/1 answers 503 as it does for any request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sluiceway import accesslog
from sluiceway.asgi.scope import websocket_scope
from sluiceway.http1.ws_carrier import carry
from sluiceway.transport.linger import LingeringClose
from sluiceway.websocket.deflate import DEFAULT_DEFLATE_SETTINGS
from sluiceway.websocket.handshake import Rejection, validate_request
from sluiceway.websocket.protocol import WebSocketAdapter

if TYPE_CHECKING:
    from sluiceway.asgi.types import ASGIApp
    from sluiceway.config import Config
    from sluiceway.connection.state import ConnectionInfo, ServerState


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    transport: asyncio.Transport
    info: ConnectionInfo
    scope: dict[str, Any]
    upgrade: bytes
    buffered: bytes
    app: ASGIApp
    config: Config
    state: ServerState


def try_upgrade(request: UpgradeRequest) -> bool:
    """Offer the connection to another protocol; see the module docstring."""
    if request.upgrade != b"websocket":
        return False
    config = request.config
    state = request.state
    limit = config.limit_concurrency
    if (
        config.ws == "none"
        or state.shutting_down
        or (limit is not None and len(state.tasks) >= limit)
    ):
        return False
    scope = request.scope
    result = validate_request(
        scope["method"],
        scope["http_version"],
        scope["headers"],
        deflate=DEFAULT_DEFLATE_SETTINGS if config.ws_per_message_deflate else None,
    )
    transport = request.transport
    if isinstance(result, Rejection):
        transport.write(result.to_bytes(state.default_headers))
        if config.access_log and accesslog.access_enabled():
            # Refused before the app saw it: the status alone, as uvicorn's line.
            client = accesslog.format_client(scope["client"])
            line = accesslog.websocket_line(scope)
            accesslog.log_websocket(client, line, str(result.status), None)
        LingeringClose(state).start(transport)
        return True
    adapter = WebSocketAdapter(
        request.app, websocket_scope(scope, result.subprotocols), result.deflate, config, state
    )
    carry(transport, adapter, result, state, request.buffered)
    return True
