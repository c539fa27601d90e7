"""RFC 8441: a WebSocket over one HTTP/2 stream (extended CONNECT).

``H2Protocol`` hands every request with ``:protocol`` here
(``start_websocket``); the connection has already checked the RFC 8441 §4
form (``:method CONNECT`` with ``:protocol``, ``:scheme``, ``:path`` and
``:authority``). In order:

1. ``:protocol`` other than ``websocket`` is answered 501: we implement no
   other (RFC 8441 §4 leaves the registry open).
2. A CONNECT whose HEADERS end the stream could never carry a frame: 400.
3. WebSockets off (``ws="none"``), a shutdown under way, or
   ``limit_concurrency`` reached: 503, the answers HTTP/1.1 gives the same
   upgrade (there, the declined upgrade is served as plain HTTP).
4. The WebSocket fields are checked as over HTTP/1.1, by
   ``websocket/handshake.py``'s ``validate_fields`` (RFC 8441 §5: version,
   subprotocols and extensions as in RFC 6455; no key): 426 with
   ``sec-websocket-version: 13`` for another version, 400 for a malformed
   subprotocol list; permessage-deflate is negotiated the same way.
5. The ``websocket`` scope is built as for an upgrade (``asgi/scope.py``'s
   ``websocket_scope``): ``http_version`` "2", ``scheme`` ws/wss from the
   connection's own scheme (not ``:scheme``, which the client chooses),
   ``path``/``query_string`` from ``:path``, and the ``host`` header from
   ``:authority``, first in the list (``http2/headers.py``).
6. A ``WebSocketAdapter`` (which knows no HTTP version) runs the WebSocket
   over an ``H2Carrier`` (``http2/ws_carrier.py``), registered as the
   stream's handler in ``H2Protocol.streams``.

The server's refusals (1-4) go through an ``H2Carrier`` with no adapter, so
that a client holding its window shut delays them without losing them.
Every extended CONNECT counts in ``ServerState.requests`` (as an upgrade
request does over HTTP/1.1); each WebSocket started counts in
``ServerState.h2_websockets`` too, and is logged at debug: how a test tells
a browser's RFC 8441 WebSocket from an HTTP/1.1 upgrade.

Shutdown: the adapter registers itself with the server state, so the
runner's ``shutdown()`` sends it Close 1001 (or 503 in the handshake) while
``H2Protocol.shutdown`` sends GOAWAY; a GOAWAY leaves open streams running,
so the close handshake completes and the connection closes once its last
stream is over.

Imports ``asgi.scope``, ``websocket`` (handshake, deflate, adapter) and its
``http2`` siblings.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from sluiceway import accesslog
from sluiceway.asgi.scope import http_scope, split_target, websocket_scope
from sluiceway.http2.ws_carrier import H2Carrier
from sluiceway.websocket.deflate import DEFAULT_DEFLATE_SETTINGS
from sluiceway.websocket.handshake import Handshake, Rejection, validate_fields
from sluiceway.websocket.protocol import WebSocketAdapter

if TYPE_CHECKING:
    from sluiceway.asgi.types import HeaderList
    from sluiceway.http2.headers import Request
    from sluiceway.http2.protocol import H2Protocol

logger = logging.getLogger(__name__)

_TEXT_PLAIN: Final = (b"content-type", b"text/plain; charset=utf-8")
_NO_HANDSHAKE: Final = Handshake()


def start_websocket(proto: H2Protocol, stream_id: int, request: Request, end_stream: bool) -> None:
    """Answer the extended CONNECT on ``stream_id``: a WebSocket, or a refusal.

    Args:
        proto: the connection.
        stream_id: the CONNECT's stream.
        request: its fields, pseudo-headers split off (``http2/headers.py``).
        end_stream: the HEADERS carried END_STREAM.
    """
    # The connection's server-wide facts; H2Protocol keeps them in the
    # Shared object the HTTP/1.1 protocol handed it.
    shared = proto.shared
    state = shared.state
    config = shared.config
    state.requests += 1
    if request.protocol != b"websocket":
        _refuse(proto, stream_id, request, end_stream, 501, [], b"Not Implemented")
        return
    if end_stream:
        _refuse(
            proto, stream_id, request, True, 400, [], b"extended CONNECT must leave the stream open"
        )
        return
    limit = shared.limit_concurrency
    if (
        config.ws == "none"
        or state.shutting_down
        or (limit is not None and len(state.tasks) >= limit)
    ):
        _refuse(proto, stream_id, request, False, 503, [], b"Service Unavailable")
        return
    result = validate_fields(
        request.headers,
        deflate=DEFAULT_DEFLATE_SETTINGS if config.ws_per_message_deflate else None,
    )
    if isinstance(result, Rejection):
        _refuse(proto, stream_id, request, False, result.status, list(result.headers), result.body)
        return
    info = proto.info
    raw_path, query = split_target(request.path)
    scope = websocket_scope(
        http_scope(
            "CONNECT",
            "2",
            info.scheme,
            raw_path,
            query,
            shared.root_path,
            request.headers,
            info.client,
            info.server,
            state.lifespan_state,
            info.tls,
        ),
        result.subprotocols,
    )
    adapter = WebSocketAdapter(shared.app, scope, result.deflate, config, state)
    carrier = H2Carrier(proto, stream_id, adapter, result)
    proto.streams[stream_id] = carrier
    proto.deadline = None  # a stream is open: the connection is not idle
    state.h2_websockets += 1
    logger.debug("WebSocket over HTTP/2 (RFC 8441) on stream %d from %s", stream_id, info.client)
    adapter.start(carrier, b"")


def _refuse(
    proto: H2Protocol,
    stream_id: int,
    request: Request,
    end_stream: bool,
    status: int,
    headers: HeaderList,
    body: bytes,
) -> None:
    """Answer ``status`` with a plain-text ``body``; the stream then ends (``H2Carrier.deny``).

    Refused before the app saw it: the access line has the status alone, as a
    refused handshake over HTTP/1.1 (``http1/upgrade.py``).
    """
    if proto.shared.access_log and accesslog.access_enabled():
        line = "WebSocket " + accesslog.escape(request.path.decode("latin-1"))
        client = accesslog.format_client(proto.info.client)
        accesslog.log_websocket(client, line, str(status), None)
    carrier = H2Carrier(proto, stream_id, None, _NO_HANDSHAKE, peer_done=end_stream)
    proto.streams[stream_id] = carrier
    carrier.deny(status, [*headers, _TEXT_PLAIN], body, False)
