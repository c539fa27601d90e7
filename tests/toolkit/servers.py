"""Serve a toolkit app over a real socket: under uvicorn, or under sluiceway.

Running the same app under uvicorn proves the toolkit does not depend on our
server. Each context manager yields ``"127.0.0.1:<port>"``; the socket is
bound to port 0 and listening before the server starts, so clients queue in
the backlog instead of racing the start-up (no readiness polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn

TIMEOUT_S = 5.0


@contextlib.asynccontextmanager
async def under_uvicorn(app: Any, **config: Any) -> AsyncIterator[str]:
    """``config`` goes to ``uvicorn.Config`` (for example ``lifespan="on"``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    options: dict[str, Any] = {"lifespan": "off", "log_level": "warning", "access_log": False}
    server = uvicorn.Server(uvicorn.Config(app, **{**options, **config}))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT_S)
        sock.close()


@contextlib.asynccontextmanager
async def under_sluiceway(app: Any) -> AsyncIterator[str]:
    from tests.support import serve

    async with serve(app) as served:
        yield f"{served.host}:{served.port}"


Server = Callable[[Any], contextlib.AbstractAsyncContextManager[str]]
