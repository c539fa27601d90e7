"""Apps the CLI tests serve in a subprocess (``--app-dir tests/server``, ``cli_apps:...``)."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from typing import Any

# Read at import time: proves --env-file is loaded before the app is imported.
GREETING = os.environ.get("GREETING_FROM_ENV_FILE", "none")

Scope = Any
Receive = Any
Send = Any


async def text(send: Send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        scope["state"]["pool"] = "pool-ready"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        print("lifespan shutdown ran", file=sys.stderr, flush=True)
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    if path == "/":
        await text(send, scope["state"]["pool"].encode())
    elif path == "/state":
        # Each request gets its own shallow copy: a key added here is gone next time.
        before = "mark" in scope["state"]
        scope["state"]["mark"] = True
        await text(send, b"seen" if before else b"fresh")
    elif path == "/gc-frozen":
        await text(send, str(gc.get_freeze_count()).encode())
    elif path == "/env":
        await text(send, f"{GREETING}|{os.environ.get('FROM_SHELL', '')}".encode())
    elif path == "/slow":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part1,", "more_body": True})
        await asyncio.sleep(1.0)
        await send({"type": "http.response.body", "body": b"part2"})
    elif path == "/forever":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started", "more_body": True})
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print("forever was cancelled", file=sys.stderr, flush=True)
            raise
    else:
        await text(send, b"not found", 404)


async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "database is down"})


async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError("only HTTP here")
    await text(send, b"served anyway")


class ASGI2App:
    """The ASGI 2 double-callable style."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    async def __call__(self, receive: Receive, send: Send) -> None:
        if self.scope["type"] == "http":
            await text(send, b"asgi2 " + self.scope["path"].encode())


def make_app() -> Any:
    async def made(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await text(send, b"from factory")

    return made


async def slow_startup(scope: Scope, receive: Receive, send: Send) -> None:
    """A startup that never completes on its own; says when it began and when it was cancelled."""
    if scope["type"] != "lifespan":
        return
    await receive()
    print("startup began", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        print("startup was cancelled", file=sys.stderr, flush=True)
        raise
    await send({"type": "lifespan.startup.complete"})
