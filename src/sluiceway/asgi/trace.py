"""``--log-level trace``: every ASGI message in and out, one line each, on ``sluiceway.asgi``.

``MessageTrace`` wraps the application, and the server wraps it only when
``sluiceway.asgi`` is enabled for ``TRACE`` (5, uvicorn's number) at start:
at any other level the app is served unwrapped, so the hot path pays
nothing, not even a level check per message.

One ASGI call is one id, ``[N]``, after the client's address (an HTTP/1.1
keep-alive connection's requests share the address, one id each; the
lifespan call has no client)::

    127.0.0.1:50123 - ASGI [3] Started http POST /items?page=2
    127.0.0.1:50123 - ASGI [3] Receive {'type': 'http.request', 'body': b'x=1', 'more_body': False}
    127.0.0.1:50123 - ASGI [3] Send {'type': 'http.response.start', 'status': 201, 'headers': [...]}
    127.0.0.1:50123 - ASGI [3] Send {'type': 'http.response.body', 'body': b'...'... (1200 bytes)}
    127.0.0.1:50123 - ASGI [3] Completed

Invariants (docs/security.md, logs): bodies, WebSocket messages and header
values are cut to ``CUT`` bytes or characters with their full length
given; the values of credential headers (``authorization``, ``cookie``,
...) are never written; everything is rendered with ``repr``, so a control
character in client data is an escape, never a line break or a terminal
sequence, before ``logconfig.SafeFormatter`` escapes the line again.

Imports only the standard library and ``asgi.types``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final

from sluiceway.asgi.types import ASGIApp, Message, Receive, Scope, Send

TRACE: Final = 5

logger = logging.getLogger("sluiceway.asgi")

# Bytes (or characters) of a body, a message or a header value written out.
CUT: Final = 32
# Header values that are credentials: written as <redacted>.
_SECRET_HEADERS: Final = frozenset(
    {b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"}
)
_CONTENT_KEYS: Final = ("body", "bytes", "text")


def tracing() -> bool:
    """True when ``--log-level trace`` (or a log config) enables the message trace."""
    return logger.isEnabledFor(TRACE)


def _cut(value: str | bytes) -> str:
    if len(value) <= CUT:
        return repr(value)
    unit = "chars" if isinstance(value, str) else "bytes"
    return f"{value[:CUT]!r}... ({len(value)} {unit})"


def _headers(headers: Iterable[Any]) -> str:
    parts = []
    for pair in headers:
        try:
            name, value = pair
        except (TypeError, ValueError):
            parts.append(repr(pair)[:CUT])
            continue
        lower = name.lower() if isinstance(name, bytes) else b""
        shown = "<redacted>" if lower in _SECRET_HEADERS else _cut(value)
        parts.append(f"({_cut(name)}, {shown})")
    return "[" + ", ".join(parts) + "]"


def describe(message: Mapping[str, Any]) -> str:
    """``message`` as one trace line's text: contents cut short, credentials left out."""
    parts = []
    for key, value in message.items():
        if key in _CONTENT_KEYS and isinstance(value, (str, bytes)):
            text = _cut(value)
        elif key == "headers" and value is not None:
            text = _headers(value)
        elif isinstance(value, (str, bytes)):
            text = _cut(value)
        else:
            text = repr(value)
        parts.append(f"{key!r}: {text}")
    return "{" + ", ".join(parts) + "}"


def _started(scope: Mapping[str, Any]) -> str:
    kind = scope.get("type", "?")
    if kind == "lifespan":
        return "lifespan"
    target = scope.get("raw_path") or str(scope.get("path", "")).encode("utf-8", "replace")
    query = scope.get("query_string")
    if query:
        target = bytes(target) + b"?" + bytes(query)
    method = scope.get("method", "")
    head = f"{kind} {method} " if method else f"{kind} "
    # repr without its quotes: control characters become escapes.
    return head + repr(bytes(target).decode("latin-1"))[1:-1]


class MessageTrace:
    """An ASGI app that logs every message of ``app`` at TRACE; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        number = next(self._ids)
        client = scope.get("client")
        prefix = f"{client[0]}:{client[1]} - ASGI" if client else "ASGI"

        async def traced_receive() -> Message:
            message = await receive()
            logger.log(TRACE, "%s [%d] Receive %s", prefix, number, describe(message))
            return message

        async def traced_send(message: Message) -> None:
            logger.log(TRACE, "%s [%d] Send %s", prefix, number, describe(message))
            await send(message)

        logger.log(TRACE, "%s [%d] Started %s", prefix, number, _started(scope))
        try:
            await self.app(scope, traced_receive, traced_send)
        except BaseException as exc:
            logger.log(TRACE, "%s [%d] Raised %s", prefix, number, type(exc).__name__)
            raise
        logger.log(TRACE, "%s [%d] Completed", prefix, number)
