"""BaseMiddleware: the copy-on-write base class for scope-changing middleware.

A middleware is an ASGI app wrapping another (``self.inner``). Subclasses add
keys to the scope for the inner app; the copy made here keeps those changes
from leaking to the caller or to sibling connections, as in Channels.

Toolkit module: imports ``sluiceway.asgi`` only, never the server side.
"""

from __future__ import annotations

from typing import Any

from sluiceway.asgi.compat import guarantee_single_callable
from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["BaseMiddleware"]


class BaseMiddleware:
    """Wrap ``inner``; ``__call__`` hands it a shallow copy of the scope.

    Subclasses override ``__call__``, change the copy made by
    ``super().__call__`` through ``populate_scope``, or both.
    """

    def __init__(self, inner: Any) -> None:
        self.inner: ASGIApp = guarantee_single_callable(inner)

    async def populate_scope(self, scope: Scope) -> None:
        """Add keys to ``scope`` (already a private copy). The default adds none."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        await self.populate_scope(scope)
        await self.inner(scope, receive, send)
