"""An HTTP/2 request begins: the scope, the ``H2Stream`` sink and the app's task.

Delegated to from ``http2/protocol.py`` (``H2Protocol._request`` is a
one-line call here; so are a pushed request and stream 1 of an
``Upgrade: h2c``). Functions take the ``H2Protocol`` and work on its state,
as its methods did (mypyc compiles the calls between these modules
natively).

* ``start_request``: a request the connection decoded (HEADERS, or a
  PUSH_PROMISE of ours): a 503 while going away or over
  ``--limit-concurrency``, an RFC 8441 extended CONNECT handed to
  ``http2/websocket.py``, otherwise the app's task, started eagerly;
* ``upgraded_request``: the HTTP/1.1 request of an h2c upgrade, answered on
  stream 1;
* ``run_app``: the app's task, and what its end means for the stream.

Imports ``sluiceway.asgi``, ``sluiceway.connection``, and its ``http2``
siblings; ``http2/protocol.py`` for types only.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from sluiceway.asgi.http import HTTPCycle, ResponseState
from sluiceway.asgi.scope import http_scope, split_target
from sluiceway.connection.tasks import start_eagerly
from sluiceway.forward_throw import forward_throw
from sluiceway.http2 import error_replies
from sluiceway.http2.events import RequestReceived
from sluiceway.http2.headers import split_request
from sluiceway.http2.stream import H2Stream

if TYPE_CHECKING:
    from sluiceway.http2.protocol import H2Protocol

# Fields of an h2c upgrade request that served only the upgrade (RFC 7540 §3.2).
_UPGRADE_ONLY: Final = frozenset(
    (b"connection", b"upgrade", b"http2-settings", b"keep-alive", b"proxy-connection", b"te")
)

_S_DONE: Final = ResponseState.DONE
_S_ABORTED: Final = ResponseState.ABORTED


def start_request(conn: H2Protocol, event: RequestReceived) -> None:
    shared = conn._shared
    stream_id = event.stream_id
    request = split_request(event.headers)
    method = request.method
    if request.protocol is not None:
        # RFC 8441 extended CONNECT (the connection allowed only this form):
        # a WebSocket over this stream; other protocols are refused with 501.
        from sluiceway.http2.websocket import start_websocket

        start_websocket(conn, stream_id, request, event.end_stream)
        return
    stream = H2Stream(conn, stream_id, method == "HEAD")
    raw_path, query = split_target(request.path)
    info = conn.info
    scope = http_scope(
        method,
        "2",
        # The transport's, as over HTTP/1.1 (a client's :scheme claiming
        # https over cleartext must not reach the app; --proxy-headers
        # handles a TLS-terminating proxy).
        info.scheme,
        raw_path,
        query,
        shared.root_path,
        request.headers,
        info.client,
        info.server,
        conn._state.lifespan_state,
        info.tls,
    )
    scope["extensions"]["http.response.push"] = {}
    cycle = HTTPCycle(scope, stream)
    stream.cycle = cycle
    stream.authority = request.authority or b""
    conn.streams[stream_id] = stream
    conn._progress()
    if conn._timed:
        stream.started = conn._loop.time()
        stream.target = request.path
    state = conn._state
    state.requests += 1
    if event.end_stream:
        cycle.feed_end()
    limit = shared.limit_concurrency
    if (state.shutting_down and conn._going_away and stream_id > conn._conn.last_stream_id) or (
        limit is not None and len(state.tasks) >= limit
    ):
        error_replies.finish_with_error(conn, stream, 503)
        return
    task = start_eagerly(conn._loop, run_app(conn, stream))
    if task is not None:
        cycle.task = task
        state.tasks.add(task)


def upgraded_request(conn: H2Protocol, h1: HTTPCycle) -> None:
    """Stream 1 of an h2c upgrade: the HTTP/1.1 request, now answered over HTTP/2.

    The scope is an HTTP/2 one (``http_version`` "2", the response is
    HTTP/2's), its headers without the fields that only served the
    upgrade; the body, already read, is fed at once.
    """
    scope = h1.scope
    query = scope["query_string"]
    fields = [
        (b":method", scope["method"].encode("ascii")),
        (b":scheme", scope["scheme"].encode("ascii")),
        (b":path", scope["raw_path"] + (b"?" + query if query else b"")),
    ]
    for name, value in scope["headers"]:
        if name == b"host":
            fields.insert(2, (b":authority", value))
        elif name not in _UPGRADE_ONLY:
            fields.append((name, value))
    body = h1.take_body()
    start_request(conn, RequestReceived(1, fields, not body))
    stream = conn.streams.get(1)
    if stream is not None and body:
        stream.receive_body(body, 0)  # nothing to give back: it never used a window
        stream.receive_end()


async def run_app(conn: H2Protocol, stream: H2Stream) -> None:
    cycle = stream.cycle
    try:
        await forward_throw(conn._app(cycle.scope, cycle.receive, cycle.send))
    except asyncio.CancelledError:
        if cycle.response_state < _S_DONE:
            stream.ended = True
            conn.reset(stream.stream_id)
        raise
    except BaseException as exc:
        error_replies.app_failed(conn, stream, exc)
        if not isinstance(exc, Exception):
            raise
    else:
        if cycle.response_state < _S_DONE and cycle.response_state is not _S_ABORTED:
            error_replies.app_returned_early(conn, stream)
    finally:
        if cycle.task is not None:
            conn._state.tasks.discard(cycle.task)
