"""The app as the server calls it: ``--interface`` adapters and ``--reset-contextvars``.

``adapt`` turns what ``--interface`` names (ASGI 3, ASGI 2, WSGI, or auto)
into one ASGI 3 callable; ``FreshContext`` runs each request in an empty
context. ``Server._load_app`` applies them, then the trace and proxy-header
wrappers.

Imports ``sluiceway.asgi``; the toolkit's WSGI adapter only on demand.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, cast

from sluiceway.asgi.compat import double_to_single_callable, guarantee_single_callable
from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send


def adapt(source: Any, interface: str) -> ASGIApp:
    """The ASGI 3 callable that serves ``source`` under ``--interface``."""
    if interface == "asgi3":
        return cast(ASGIApp, source)
    if interface == "asgi2":
        return double_to_single_callable(source)
    if interface == "wsgi":
        # The toolkit's adapter, imported only when asked for: the server
        # itself never depends on the toolkit.
        from sluiceway.wsgi import WsgiToAsgi

        return WsgiToAsgi(source)
    return guarantee_single_callable(source)


class FreshContext:
    """``--reset-contextvars``: each request and WebSocket session in a new, empty context.

    uvicorn's option, for context that instrumentation set before the server
    started (or that asyncio leaked between tasks, python/cpython#140947).
    The app runs in a task of its own, made inside an empty ``Context`` (so
    it works on 3.10, before ``create_task(context=)``); cancelling the
    request's task cancels it. One more task per request, with the option only.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        await contextvars.Context().run(asyncio.ensure_future, self.app(scope, receive, send))
