"""Apps the worker and proxy-header tests serve (``--app-dir tests/server``)."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any


async def pid(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the serving process's pid; lifespan is accepted."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/hold":  # in flight until the server cancels it
        await send({"type": "http.response.body", "body": b"held", "more_body": True})
        await asyncio.Event().wait()
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


async def echo_scope(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the scope's client and scheme as JSON; a WebSocket gets them as text."""
    if scope["type"] == "lifespan":
        return
    facts = json.dumps({"client": scope["client"], "scheme": scope["scheme"]}).encode()
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": facts.decode()})
        await send({"type": "websocket.close"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": facts})


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app, for ``--interface wsgi``: answers with the method and path."""
    body = f"wsgi {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
