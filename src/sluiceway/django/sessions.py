"""Django's sessions for ASGI scopes: ``scope["session"]`` is a ``SessionStore``.

``SessionMiddleware`` reads the ``SESSION_COOKIE_NAME`` cookie (from
``CookieMiddleware``'s ``scope["cookies"]``) and puts the configured engine's
``SessionStore`` for it in ``scope["session"]``: the same session a Django
view sees, whatever the engine (database, cache, signed cookies, file).

* Loading is lazy: the store reads its data on first access, so a scope whose
  session is never read costs no I/O. That first access may block (a database
  engine): make it inside ``database_sync_to_async``, as ``AuthMiddleware``
  does, or after it (the data is then cached in the store).
* HTTP: on ``http.response.start`` the session is saved and its cookie set
  when it was modified (or ``SESSION_SAVE_EVERY_REQUEST``), unless the status
  is 5xx; an emptied session deletes its cookie; an accessed one adds
  ``Vary: Cookie``. These are the rules of Django's own ``SessionMiddleware``,
  cookie attributes from the ``SESSION_COOKIE_*`` settings, read per request
  (so ``override_settings`` applies).
* WebSocket: no response carries a cookie; save explicitly with
  ``await database_sync_to_async(scope["session"].save)()`` (as in Channels).
* Only the outermost ``SessionMiddleware`` acts; an inner one passes through.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted

from sluiceway.asgi.compat import guarantee_single_callable
from sluiceway.asgi.types import ASGIApp, Message, Receive, Scope, Send
from sluiceway.django.db import database_sync_to_async
from sluiceway.middleware.cookies import CookieMiddleware, delete_cookie, set_cookie

__all__ = ["CookieMiddleware", "SessionMiddleware", "SessionMiddlewareStack"]


class SessionMiddleware:
    """Put Django's session in ``scope["session"]``; runs inside ``CookieMiddleware``."""

    def __init__(self, inner: Any) -> None:
        self.inner: ASGIApp = guarantee_single_callable(inner)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket") or "session" in scope:
            await self.inner(scope, receive, send)
            return
        cookies = scope.get("cookies")
        if cookies is None:
            raise ValueError(
                "no cookies in scope: SessionMiddleware must run inside CookieMiddleware "
                "(use SessionMiddlewareStack)"
            )
        engine = import_module(settings.SESSION_ENGINE)
        session = engine.SessionStore(cookies.get(settings.SESSION_COOKIE_NAME))
        scope = dict(scope)
        scope["session"] = session
        if kind == "http":
            send = _SessionSaver(scope, session, send)
        await self.inner(scope, receive, send)


class _SessionSaver:
    """The ``send`` of one HTTP request: saves the session on the response start."""

    __slots__ = ("_cookies", "_send", "_session")

    def __init__(self, scope: Scope, session: Any, send: Send) -> None:
        self._cookies: dict[str, str] = scope["cookies"]
        self._session = session
        self._send = send

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self._finish(message)
        await self._send(message)

    async def _finish(self, message: Message) -> None:
        # Django's SessionMiddleware.process_response, rule for rule.
        session = self._session
        name = settings.SESSION_COOKIE_NAME
        if name in self._cookies and session.is_empty():
            delete_cookie(
                message,
                name,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
            )
            _vary_cookie(message)
            return
        if session.accessed:
            _vary_cookie(message)
        if not (session.modified or settings.SESSION_SAVE_EVERY_REQUEST) or session.is_empty():
            return
        if message.get("status", 200) >= 500:
            return  # Django saves no session on a server error
        try:
            await database_sync_to_async(session.save)()
        except UpdateError:
            # Deleted meanwhile (a logout in another tab); Django answers 400.
            raise SessionInterrupted(
                "The request's session was deleted before the request completed."
            ) from None
        max_age = None if session.get_expire_at_browser_close() else session.get_expiry_age()
        samesite = settings.SESSION_COOKIE_SAMESITE
        set_cookie(
            message,
            name,
            session.session_key,
            max_age=max_age,
            domain=settings.SESSION_COOKIE_DOMAIN,
            path=settings.SESSION_COOKIE_PATH,
            secure=bool(settings.SESSION_COOKIE_SECURE),
            httponly=bool(settings.SESSION_COOKIE_HTTPONLY),
            samesite=samesite or None,
        )


def _vary_cookie(message: Message) -> None:
    headers = list(message.get("headers", ()))
    for key, value in headers:
        if key.lower() == b"vary" and b"cookie" in value.lower():
            return
    headers.append((b"vary", b"Cookie"))
    message["headers"] = headers


def SessionMiddlewareStack(inner: Any) -> CookieMiddleware:
    """``CookieMiddleware(SessionMiddleware(inner))``, as Channels spells it."""
    return CookieMiddleware(SessionMiddleware(inner))
