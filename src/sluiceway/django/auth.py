"""Django's users for ASGI scopes: ``scope["user"]``, ``login()``, ``logout()``.

``AuthMiddleware`` (inside ``SessionMiddleware``) sets ``scope["user"]`` to a
``UserLazyObject``, as Channels does, resolved before the app runs through
Django's own ``django.contrib.auth.get_user``: the session's user id and
backend, ``AUTHENTICATION_BACKENDS``, and the session hash check (with
``SECRET_KEY_FALLBACKS``), so a user logged in through Django's login view or
the admin is the ``scope["user"]`` of that browser's WebSocket, and a changed
password logs the socket out as it logs out the views.

Invariants:

* A scope with no session cookie gets ``AnonymousUser`` with no thread hop
  and no query (nothing to look up); otherwise one ``database_sync_to_async``
  call loads session and user together.
* ``login()``/``logout()`` follow Django's ``login``/``logout`` (session key
  cycled or flushed, ``user_logged_in``/``user_logged_out`` sent with
  ``request=None``, as Channels sends them). On a WebSocket, save the session
  afterwards: ``await database_sync_to_async(scope["session"].save)()``; over
  HTTP the session middleware saves it with the response.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    _get_backends,
    user_logged_in,
    user_logged_out,
)
from django.contrib.auth import get_user as _django_get_user
from django.utils.crypto import constant_time_compare
from django.utils.functional import LazyObject

from sluiceway.asgi.types import Receive, Scope, Send
from sluiceway.django.db import database_sync_to_async
from sluiceway.django.sessions import CookieMiddleware, SessionMiddleware
from sluiceway.middleware.base import BaseMiddleware

__all__ = [
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "UserLazyObject",
    "get_user",
    "login",
    "logout",
]


class UserLazyObject(LazyObject):  # type: ignore[misc]  # Django ships no type stubs
    """``scope["user"]``: a lazy proxy, filled by ``AuthMiddleware`` before the app runs."""

    def _setup(self) -> None:
        raise ValueError("Accessing scope user before it is ready.")


def _anonymous() -> Any:
    # Imported here: django.contrib.auth.models needs the app registry ready,
    # and an asgi.py may import this module before django.setup().
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


class _SessionHolder:
    """What ``django.contrib.auth.get_user`` reads of a request: its session."""

    __slots__ = ("session",)

    def __init__(self, session: Any) -> None:
        self.session = session


def _session_of(scope: Scope) -> Any:
    session = scope.get("session")
    if session is None:
        raise ValueError(
            "no session in scope: AuthMiddleware must run inside SessionMiddleware "
            "(use AuthMiddlewareStack)"
        )
    return session


@database_sync_to_async
def _load_user(session: Any) -> Any:
    return _django_get_user(_SessionHolder(session))


async def get_user(scope: Scope) -> Any:
    """The user of the scope's session, or ``AnonymousUser``, as Django's ``get_user``.

    Raises:
        ValueError: the scope has no session.
    """
    session = _session_of(scope)
    if session.is_empty():  # no cookie and no data yet: nobody to look up
        return _anonymous()
    return await _load_user(session)


class AuthMiddleware(BaseMiddleware):
    """Set ``scope["user"]`` from Django's session and auth backends."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.inner(scope, receive, send)
            return
        _session_of(scope)
        scope = dict(scope)
        user = scope.get("user")
        if not isinstance(user, UserLazyObject):
            user = scope["user"] = UserLazyObject()
        user._wrapped = await get_user(scope)
        await self.inner(scope, receive, send)


@database_sync_to_async
def _login(scope: Scope, user: Any, backend: str | None) -> None:
    session = _session_of(scope)
    session_auth_hash = (
        user.get_session_auth_hash() if hasattr(user, "get_session_auth_hash") else ""
    )
    if SESSION_KEY in session:
        key = user._meta.pk.to_python(session[SESSION_KEY])
        if key != user.pk or (
            session_auth_hash
            and not constant_time_compare(session.get(HASH_SESSION_KEY, ""), session_auth_hash)
        ):
            # Another user's session (or a stale one): start an empty one
            # rather than hand this user the last one's data.
            session.flush()
    else:
        session.cycle_key()  # session fixation defence
    if backend is None:
        backend = getattr(user, "backend", None)
    if backend is None:
        backends = _get_backends(return_tuples=True)
        if len(backends) != 1:
            raise ValueError(
                "You have multiple authentication backends configured and therefore must "
                "provide the `backend` argument or set the `backend` attribute on the user."
            )
        backend = backends[0][1]
    session[SESSION_KEY] = user._meta.pk.value_to_string(user)
    session[BACKEND_SESSION_KEY] = backend
    session[HASH_SESSION_KEY] = session_auth_hash
    scope["user"] = user
    user_logged_in.send(sender=user.__class__, request=None, user=user)


async def login(scope: Scope, user: Any = None, backend: str | None = None) -> None:
    """Log ``user`` (default: ``scope["user"]``) into the scope's session.

    Raises:
        ValueError: no user, no session, or several backends and none named.
    """
    if user is None:
        user = scope.get("user")
    if user is None:
        raise ValueError("login() needs a user, or a user in the scope")
    await _login(scope, user, backend)


@database_sync_to_async
def _logout(scope: Scope) -> None:
    user = scope.get("user")
    if not getattr(user, "is_authenticated", True):
        user = None
    user_logged_out.send(sender=user.__class__, request=None, user=user)
    _session_of(scope).flush()
    if "user" in scope:
        scope["user"] = _anonymous()


async def logout(scope: Scope) -> None:
    """Flush the scope's session and make ``scope["user"]`` anonymous."""
    await _logout(scope)


def AuthMiddlewareStack(inner: Any) -> CookieMiddleware:
    """``CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))``, as in Channels."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))
