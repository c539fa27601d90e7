"""Authentication: ``scope["user"]`` from the session, ``login()`` / ``logout()``.

``AuthMiddleware`` runs inside ``SessionMiddleware``. The session stores only
the user's id (under ``"_auth_user_id"``); the user object comes from the
application's loader, ``async def load_user(user_id) -> user | None``. Without
a loader, a logged-in user is a ``SessionUser`` that knows only its id.

Invariants:

* The work is done only when needed: no session cookie means no session load
  and no loader call; the loader runs at most once per connection scope.
* ``login`` gives the session a new key (``cycle_key``) so a key planted
  before login is worthless after it (session fixation, OWASP).
* ``logout`` drops the session data and key.
* The user is ready by the time the app runs, so code written for Channels
  (``scope["user"].is_authenticated``) keeps working synchronously.

Toolkit module: imports ``sluiceway.asgi`` and the sibling middleware only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sluiceway.asgi.types import Receive, Scope, Send
from sluiceway.middleware.base import BaseMiddleware
from sluiceway.middleware.cookies import CookieMiddleware
from sluiceway.middleware.sessions import Session, SessionMiddleware

__all__ = [
    "USER_ID_KEY",
    "AnonymousUser",
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "SessionUser",
    "login",
    "logout",
]

USER_ID_KEY = "_auth_user_id"

UserLoader = Callable[[Any], Awaitable[Any]]


class AnonymousUser:
    """The user of a connection nobody has logged in to."""

    id = None
    pk = None
    username = ""
    is_authenticated = False
    is_anonymous = True
    is_active = False
    is_staff = False
    is_superuser = False

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnonymousUser)

    def __hash__(self) -> int:
        return 1

    def __repr__(self) -> str:
        return "AnonymousUser()"


class SessionUser:
    """A logged-in user known only by the id in the session (no loader given)."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, user_id: Any) -> None:
        self.id = self.pk = user_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionUser) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"SessionUser({self.id!r})"


def _session_of(scope: Scope) -> Session:
    session = scope.get("session")
    if not isinstance(session, Session):
        raise ValueError(
            "no session in the scope: wrap the app in SessionMiddleware "
            "(or use AuthMiddlewareStack)"
        )
    return session


def _user_id(user: Any) -> Any:
    user_id = getattr(user, "pk", None)
    if user_id is None:
        user_id = getattr(user, "id", None)
    if user_id is None:
        raise ValueError(f"cannot log in {user!r}: it has no 'pk' or 'id'")
    return user_id


class AuthMiddleware(BaseMiddleware):
    """Put the connection's user in ``scope["user"]``.

    Args:
        inner: the app.
        user_loader: ``async def load_user(user_id)`` returning the user, or
            None when the id no longer names one (then the user is anonymous).
    """

    def __init__(self, inner: Any, user_loader: UserLoader | None = None) -> None:
        super().__init__(inner)
        self.user_loader = user_loader

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" and scope["type"] != "websocket":
            await self.inner(scope, receive, send)
            return
        session = _session_of(scope)
        scope = dict(scope)
        scope["user"] = await self.resolve_user(session)
        await self.inner(scope, receive, send)

    async def resolve_user(self, session: Session) -> Any:
        if session.session_key is None:
            return AnonymousUser()  # no cookie: nothing to load
        user_id = session.get(USER_ID_KEY)
        if user_id is None:
            return AnonymousUser()
        if self.user_loader is None:
            return SessionUser(user_id)
        user = await self.user_loader(user_id)
        return AnonymousUser() if user is None else user


async def login(scope: Scope, user: Any) -> None:
    """Log ``user`` in for this connection and its session.

    The session gets a new key. For HTTP it is saved with the response; on a
    WebSocket call ``await scope["session"].save()`` afterwards.

    Raises:
        ValueError: no session in the scope, or a user with no ``pk``/``id``.
    """
    session = _session_of(scope)
    user_id = _user_id(user)
    if session.get(USER_ID_KEY, user_id) != user_id:
        session.flush()  # another user's data must not carry over
    session.cycle_key()
    session[USER_ID_KEY] = user_id
    scope["user"] = user


async def logout(scope: Scope) -> None:
    """Log the connection out: flush the session, make the user anonymous."""
    _session_of(scope).flush()
    scope["user"] = AnonymousUser()


def AuthMiddlewareStack(
    inner: Any, user_loader: UserLoader | None = None, **session_options: Any
) -> CookieMiddleware:
    """Cookies, sessions and auth around ``inner``, in the right order."""
    return CookieMiddleware(
        SessionMiddleware(AuthMiddleware(inner, user_loader), **session_options)
    )
