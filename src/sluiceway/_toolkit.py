"""The few ASGI exchanges several toolkit modules answer the same way.

A router with no route, a middleware refusing a handshake and the WSGI
adapter each refuse a WebSocket, answer a lifespan scope they have no use
for, or send a short plain-text response; consumers and communicators both
turn user headers into an ASGI header list. One copy each lives here, so a
spec reading is fixed in one place.

Invariants: every function follows the ASGI www and lifespan specs to the
letter (cited at each); none raises on what the peer sends.

Toolkit module: imports ``sluiceway.asgi`` only, never the server side.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sluiceway.asgi.types import HeaderList, Receive, Send

__all__ = [
    "HTTP_TOKEN",
    "answer_lifespan",
    "header_list",
    "refuse_websocket",
    "send_text_response",
]

HeaderInput = Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None

# RFC 9110 §5.6.2 token (the same grammar as RFC 2616's, which RFC 6265 uses
# for cookie names): what a field name may be. Match with ``fullmatch``.
HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


async def refuse_websocket(receive: Receive, send: Send, code: int) -> None:
    """Refuse a WebSocket handshake: a close before accept, which a server answers with 403.

    ASGI www spec, WebSocket "Connect": the reply to ``websocket.connect`` is an
    accept or a close. The connect event is awaited first; a client gone
    before it (``websocket.disconnect``) gets nothing.
    """
    message = await receive()
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": code})


async def answer_lifespan(receive: Receive, send: Send) -> None:
    """Say "complete" to startup and shutdown (ASGI lifespan spec), for an app with nothing to do.

    Servers with lifespan "on" then run the app; other event types are ignored.
    """
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif kind == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def send_text_response(send: Send, status: int, text: str) -> None:
    """Send a whole ``text/plain`` response with its ``Content-Length``, in two messages."""
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def header_list(headers: HeaderInput) -> HeaderList:
    """Turn a mapping or (name, value) pairs, bytes or latin-1 str, into an ASGI header list.

    Names are lowercased: ASGI www spec, the scope's and ``http.response.start``'s
    ``headers`` ("Header names must be lowercased").

    Raises:
        TypeError: a pair that is not two bytes/str items.
    """
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    result: HeaderList = []
    for pair in pairs:
        name, value = pair
        if isinstance(name, str):
            name = name.encode("latin-1")
        if isinstance(value, str):
            value = value.encode("latin-1")
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            raise TypeError(f"headers are (bytes, bytes) or (str, str) pairs, got {pair!r}")
        result.append((name.lower(), value))
    return result
