"""ASGI 2 -> 3 adaptation: ``guarantee_single_callable``.

An ASGI 2 app is a class (or callable) taking only ``scope`` and returning an
instance that takes ``(receive, send)``. We detect it the way asgiref does: a
class is ASGI 2 unless it marks itself otherwise; a callable is ASGI 3 when it
is a coroutine function (or its ``__call__`` is) taking three arguments.
"""

from __future__ import annotations

import inspect
from typing import Any, cast

from sluiceway.asgi.types import ASGI2App, ASGIApp, Receive, Scope, Send


def is_double_callable(application: Any) -> bool:
    """Tell whether ``application`` follows the ASGI 2 (double-callable) style."""
    if getattr(application, "_asgi_single_callable", False):
        return False
    if getattr(application, "_asgi_double_callable", False):
        return True
    if inspect.isclass(application):
        return True
    if inspect.iscoroutinefunction(application):
        return False
    call = getattr(application, "__call__", None)  # noqa: B004 - want the method itself
    if call is not None and inspect.iscoroutinefunction(call):
        return False
    try:
        params = inspect.signature(application).parameters
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in params.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1 and not any(p.kind == p.VAR_POSITIONAL for p in params.values())


def double_to_single_callable(application: ASGI2App) -> ASGIApp:
    """Wrap an ASGI 2 app so it can be called as ASGI 3."""

    async def new_application(scope: Scope, receive: Receive, send: Send) -> None:
        instance = application(scope)
        await instance(receive, send)

    return new_application


def guarantee_single_callable(application: Any) -> ASGIApp:
    """Return an ASGI 3 callable for ``application``, adapting ASGI 2 apps."""
    if is_double_callable(application):
        return double_to_single_callable(cast(ASGI2App, application))
    return cast(ASGIApp, application)
