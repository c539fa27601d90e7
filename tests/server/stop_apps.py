"""Apps that will not stop, or that log what a client chose (``--app-dir tests/server``).

Each request app answers a first body chunk, ``started``, so the test knows
the app is in flight before it sends a signal.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from typing import Any
from urllib.parse import unquote_plus

from sluiceway.sync import sync_to_async

Scope = Any
Receive = Any
Send = Any

# Never set: a thread waiting on it is stuck for good, as a hung driver call would be.
NEVER = threading.Event()


async def _started(send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"started", "more_body": True})


async def _swallow_cancellation(who: str) -> None:
    while True:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            print(f"{who} swallowed a cancel", file=sys.stderr, flush=True)


async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
    """A request that catches every CancelledError and carries on."""
    if scope["type"] == "lifespan":
        return
    await _started(send)
    await _swallow_cancellation("request")


async def background(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers at once, leaving behind a task (no request's) that ignores cancellation."""
    if scope["type"] == "lifespan":
        return
    asyncio.get_running_loop().create_task(_swallow_cancellation("background"))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"left a task behind"})


async def in_thread(scope: Scope, receive: Receive, send: Send) -> None:
    """Waits on a blocking call in a thread: ``/executor`` the loop's, ``/pool`` sync_to_async's."""
    if scope["type"] == "lifespan":
        return
    await _started(send)
    if scope["path"] == "/pool":
        await sync_to_async(NEVER.wait, thread_sensitive=False)()
    else:
        await asyncio.get_running_loop().run_in_executor(None, NEVER.wait)


async def blocks_loop(scope: Scope, receive: Receive, send: Send) -> None:
    """Blocks its event loop for good: only a kill stops the process."""
    if scope["type"] == "lifespan":
        return
    await _started(send)
    # The server writes what was sent at the end of the loop pass (http1's
    # held writes): this step comes after that write, then blocks the loop.
    await asyncio.sleep(0)
    NEVER.wait()


async def stubborn_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
    """Starts up, then never answers lifespan.shutdown and ignores the cancel that follows."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await _swallow_cancellation("lifespan")
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def raises_request_data(scope: Scope, receive: Receive, send: Send) -> None:
    """Raises with a message holding what the client sent, as apps often do."""
    if scope["type"] == "lifespan":
        return
    raise ValueError(unquote_plus(scope["query_string"].decode()))
