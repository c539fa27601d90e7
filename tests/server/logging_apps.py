"""Apps for the access-log, trace and start-up tests (``logging_apps:...``, tests/server)."""

from __future__ import annotations

from typing import Any

from sluiceway.errors import ConfigError

Scope = Any
Receive = Any
Send = Any


async def _lifespan(receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP: echo the body, or fail; WebSocket: one path per way a handshake can end."""
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    path = scope["path"]
    if kind == "http":
        if path == "/crash":
            raise RuntimeError("the app failed before its response")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"x-answer", b"yes")]}
        )
        await send({"type": "http.response.body", "body": b"echo:" + body})
        return
    assert kind == "websocket"
    await receive()  # websocket.connect
    if path == "/ws":
        await send({"type": "websocket.accept"})
        message = await receive()
        if message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": "echo:" + (message.get("text") or "")})
            # The app ends the session, with a code of its own.
            await send({"type": "websocket.close", "code": 4000})
    elif path == "/forbidden":
        await send({"type": "websocket.close"})
    elif path == "/denial":
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"log in first"})
    elif path == "/crash":
        raise RuntimeError("the app failed before accepting")


async def config_error_in_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises a configuration error on the lifespan scope (and serves nothing)."""
    if scope["type"] == "lifespan":
        raise ConfigError("DATABASE_URL is not set")


async def import_error_in_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """Imports a package that is not installed when lifespan starts."""
    if scope["type"] == "lifespan":
        import sluiceway_no_such_package  # type: ignore[import-not-found]  # that is the point

        del sluiceway_no_such_package


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """The usual app without lifespan support: it raises on the scope it does not know."""
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope {scope['type']!r}")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
