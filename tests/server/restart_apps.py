"""Apps the restart, health-check and systemd tests serve (``--app-dir tests/server``).

``app`` answers ``GET /`` with the serving process's pid, ``/env/NAME`` with
that environment variable (``-`` when unset), and ``/block`` by blocking its
event loop (a synchronous sleep in ``async`` code, the bug a health check
catches).
"""

from __future__ import annotations

import os
import time
from typing import Any

from process_apps import pid  # --app-dir puts tests/server on sys.path


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await pid(scope, receive, send)  # accepts startup and shutdown
        return
    path = scope["path"]
    if path == "/block":
        time.sleep(60)  # blocks the worker's loop: no await
        body = b"unblocked"
    elif path.startswith("/env/"):
        body = os.environ.get(path[5:], "-").encode()
    else:
        body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
