"""Pure ASGI middleware for the toolkit: cookies, sessions, auth, origin checks.

Each middleware wraps an ASGI app and is one; none imports the server side.
Stack them outermost first: ``CookieMiddleware(SessionMiddleware(
AuthMiddleware(app)))``, or use ``AuthMiddlewareStack(app)``.
"""

from __future__ import annotations

from sluiceway.middleware.auth import (
    AnonymousUser,
    AuthMiddleware,
    AuthMiddlewareStack,
    SessionUser,
    login,
    logout,
)
from sluiceway.middleware.base import BaseMiddleware
from sluiceway.middleware.cookies import CookieMiddleware, delete_cookie, parse_cookie, set_cookie
from sluiceway.middleware.origin import AllowedHostsOriginValidator, OriginValidator
from sluiceway.middleware.sessions import (
    InMemorySessionStore,
    Session,
    SessionMiddleware,
    SessionMiddlewareStack,
    SessionStore,
    SignedCookieStore,
)

__all__ = [
    "AllowedHostsOriginValidator",
    "AnonymousUser",
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "BaseMiddleware",
    "CookieMiddleware",
    "InMemorySessionStore",
    "OriginValidator",
    "Session",
    "SessionMiddleware",
    "SessionMiddlewareStack",
    "SessionStore",
    "SessionUser",
    "SignedCookieStore",
    "delete_cookie",
    "login",
    "logout",
    "parse_cookie",
    "set_cookie",
]
