"""An app whose process cannot import ``redis``, as where ``sluiceway[redis]`` was not installed.

``sys.modules["redis"] = None`` makes every later ``import redis...`` fail
with ``ModuleNotFoundError`` (name ``redis``), as a missing package does.
Served with ``SLUICEWAY_CHANNEL_LAYER=redis://...`` by tests/server/test_startup.py.
"""

from __future__ import annotations

import sys
from typing import Any

sys.modules["redis"] = None  # type: ignore[assignment]  # blocks the import, on purpose


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
