"""The ASGI app every server runs in the HTTP benchmark (bench/http_load.py).

One app, four routes, one per scenario, so each server is started once per round:

    GET  /          plaintext "Hello, world!" (scenarios a and e)
    GET  /json?...  a small JSON document echoing the query string (b)
    GET  /download  1 MiB streamed as 16 chunks of 64 KiB, Content-Length set (c)
    POST /upload    reads the request body in full and answers with its length (d)

Invariants: plain ASGI 3 with no framework and nothing from sluiceway, so every server runs
the same bytes of app code; every response carries Content-Length, so no server pays for
chunked framing the others skip; the download chunks are allocated once at import.
Must not import: sluiceway (the peers load this module too).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DOWNLOAD_BYTES = 1024 * 1024
CHUNK_BYTES = 64 * 1024
_CHUNK = b"x" * CHUNK_BYTES
_CHUNKS_PER_DOWNLOAD = DOWNLOAD_BYTES // CHUNK_BYTES

_PLAIN_BODY = b"Hello, world!"
_PLAIN_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(_PLAIN_BODY)).encode()),
    ],
}
_PLAIN_BODY_MSG: Message = {"type": "http.response.body", "body": _PLAIN_BODY}

_DOWNLOAD_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(DOWNLOAD_BYTES).encode()),
    ],
}


async def _plaintext(scope: Scope, receive: Receive, send: Send) -> None:
    await send(_PLAIN_START)
    await send(_PLAIN_BODY_MSG)


async def _json(scope: Scope, receive: Receive, send: Send) -> None:
    params = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    body = json.dumps(
        {
            "message": "Hello, world!",
            "name": params.get("name", ""),
            "page": int(params.get("page", "1")),
        },
        separators=(",", ":"),
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _download(scope: Scope, receive: Receive, send: Send) -> None:
    await send(_DOWNLOAD_START)
    last = _CHUNKS_PER_DOWNLOAD - 1
    for i in range(_CHUNKS_PER_DOWNLOAD):
        await send({"type": "http.response.body", "body": _CHUNK, "more_body": i != last})


async def _upload(scope: Scope, receive: Receive, send: Send) -> None:
    # "Read in full": every chunk is received; only the length is kept, so the app does not add
    # a 1 MiB join of its own to what the server costs.
    received = 0
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        received += len(message.get("body", b""))
        more_body = message.get("more_body", False)
    body = str(received).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 404,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"9")],
        }
    )
    await send({"type": "http.response.body", "body": b"not found"})


_ROUTES: dict[str, Callable[[Scope, Receive, Send], Awaitable[None]]] = {
    "/": _plaintext,
    "/json": _json,
    "/download": _download,
    "/upload": _upload,
}


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        await _ROUTES.get(scope["path"], _not_found)(scope, receive, send)
    elif scope["type"] == "lifespan":
        await _lifespan(receive, send)
