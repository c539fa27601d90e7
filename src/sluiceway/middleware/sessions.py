"""Sessions: ``scope["session"]``, a lazy dict-like saved when changed.

``SessionMiddleware`` finds the session cookie, gives the app a ``Session``
and, for HTTP, saves it and sets the cookie on ``http.response.start`` when it
changed. WebSocket connections have no response to piggy-back on, so saving
there is explicit: ``await scope["session"].save()``.

Stores implement ``SessionStore``. Two are built in:

* ``SignedCookieStore``: the data lives in the cookie, JSON, timestamped and
  signed with HMAC-SHA256; verification is constant-time, expired or forged
  cookies read as an empty session. Several secrets may be given: the first
  signs, all verify, so secrets can be rotated.
* ``InMemorySessionStore``: data in this process, under random keys, bounded
  in count. For development and tests (every worker has its own).

Invariants:

* Client input never raises: a bad, forged or expired cookie is a new,
  empty session.
* A client cannot choose its session key: an unknown key is replaced by a
  fresh random one on save (no session fixation).
* Nothing is loaded until the session is used, for stores that can load
  synchronously (both built-in ones); others are loaded before the app runs,
  and only when a session cookie came with the request.

Toolkit module: imports ``sluiceway.asgi`` and the sibling middleware only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, MutableMapping, Sequence
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

from sluiceway.asgi.types import Message, Receive, Scope, Send
from sluiceway.middleware.base import BaseMiddleware
from sluiceway.middleware.cookies import (
    CookieMiddleware,
    SameSite,
    build_set_cookie,
    cookies_from_scope,
    is_cookie_value,
)

__all__ = [
    "InMemorySessionStore",
    "Session",
    "SessionMiddleware",
    "SessionMiddlewareStack",
    "SessionStore",
    "SignedCookieStore",
]

logger = logging.getLogger(__name__)

TWO_WEEKS_S = 14 * 24 * 3600  # Django's SESSION_COOKIE_AGE default
# Browsers keep at most 4096 bytes per cookie, name and attributes included
# (RFC 6265 §6.1 minimum); leave room for the attributes.
MAX_COOKIE_VALUE_BYTES = 3800


class SessionStore(ABC):
    """Where session data lives. ``key`` is what the session cookie carries."""

    #: True if ``load_now`` works without awaiting, so loading can wait until
    #: the app first touches the session.
    loads_synchronously: bool = False

    @abstractmethod
    async def load(self, key: str, max_age_s: int) -> dict[str, Any] | None:
        """Return the data for ``key``, or None if unknown, expired or invalid."""

    @abstractmethod
    async def save(self, key: str | None, data: dict[str, Any], max_age_s: int) -> str:
        """Store ``data`` and return the key for the cookie.

        ``key`` is the current key or None for a new session; a store must not
        adopt a key it did not issue.
        """

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Forget ``key``; unknown keys are ignored."""

    def load_now(self, key: str, max_age_s: int) -> dict[str, Any] | None:
        """Synchronous ``load`` for stores with ``loads_synchronously``."""
        raise TypeError(
            f"{type(self).__name__} sets loads_synchronously but does not define load_now()"
        )


class InMemorySessionStore(SessionStore):
    """Sessions in a dict of this process; at most ``max_sessions``, oldest evicted."""

    loads_synchronously = True

    def __init__(self, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        # key -> (expiry on the monotonic clock, JSON text). JSON keeps stored
        # data apart from the live dict and matches what real stores accept.
        self._data: dict[str, tuple[float, str]] = {}

    def load_now(self, key: str, max_age_s: int) -> dict[str, Any] | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            del self._data[key]
            return None
        data: dict[str, Any] = json.loads(entry[1])
        return data

    async def load(self, key: str, max_age_s: int) -> dict[str, Any] | None:
        return self.load_now(key, max_age_s)

    async def save(self, key: str | None, data: dict[str, Any], max_age_s: int) -> str:
        text = json.dumps(data, separators=(",", ":"))
        if key is None or key not in self._data:
            key = secrets.token_urlsafe(32)
            self._make_room()
        self._data[key] = (time.monotonic() + max_age_s, text)
        return key

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)

    def _make_room(self) -> None:
        if len(self._data) < self.max_sessions:
            return
        now = time.monotonic()
        for key in [k for k, (expiry, _) in self._data.items() if expiry <= now]:
            del self._data[key]
        while len(self._data) >= self.max_sessions:
            del self._data[next(iter(self._data))]  # insertion order: the oldest


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SignedCookieStore(SessionStore):
    """Session data in the cookie itself: ``payload.stamp.signature``.

    Args:
        secret_keys: one secret, or a list whose first item signs and whose
            every item verifies (rotate by prepending a new secret).

    The data is signed, not encrypted: the client can read it. A cookie
    cannot be revoked before it expires, so logout clears the data but an old
    copy of the cookie stays valid until its age runs out.
    """

    loads_synchronously = True

    def __init__(self, secret_keys: str | bytes | Sequence[str | bytes]) -> None:
        if isinstance(secret_keys, (str, bytes)):
            secret_keys = [secret_keys]
        secrets_list = [s.encode() if isinstance(s, str) else bytes(s) for s in secret_keys]
        if not secrets_list or any(len(s) < 16 for s in secrets_list):
            raise ValueError("signed cookie sessions need secret keys of at least 16 bytes")
        # Derive a key for this one purpose, so a secret shared with other
        # signers never yields a signature valid here.
        self._keys = [
            hashlib.sha256(b"sluiceway.sessions.signed-cookie:" + s).digest() for s in secrets_list
        ]

    def _sign(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()

    def load_now(self, key: str, max_age_s: int) -> dict[str, Any] | None:
        if len(key) > MAX_COOKIE_VALUE_BYTES * 2:
            return None
        signed, dot, signature_text = key.rpartition(".")
        payload_text, dot2, stamp_text = signed.partition(".")
        if not dot or not dot2:
            return None
        try:
            signature = _b64decode(signature_text)
        except (binascii.Error, ValueError):
            return None
        message = signed.encode("ascii", "replace")
        # Compare against every key, constant time each, no early exit.
        valid = False
        for k in self._keys:
            valid |= hmac.compare_digest(self._sign(k, message), signature)
        if not valid:
            return None
        try:
            stamp = int.from_bytes(_b64decode(stamp_text)[:5], "big")
            data = json.loads(_b64decode(payload_text))
        except (binascii.Error, ValueError):
            return None
        if time.time() - stamp > max_age_s or not isinstance(data, dict):
            return None
        return data

    async def load(self, key: str, max_age_s: int) -> dict[str, Any] | None:
        return self.load_now(key, max_age_s)

    async def save(self, key: str | None, data: dict[str, Any], max_age_s: int) -> str:
        payload = _b64encode(json.dumps(data, separators=(",", ":")).encode())
        # Time plus a random salt: every save (login's new key included) gives
        # a cookie never issued before, even within the same second.
        stamp = _b64encode(int(time.time()).to_bytes(5, "big") + secrets.token_bytes(6))
        signed = f"{payload}.{stamp}"
        value = f"{signed}.{_b64encode(self._sign(self._keys[0], signed.encode('ascii')))}"
        if len(value) > MAX_COOKIE_VALUE_BYTES:
            raise ValueError(
                f"session data is {len(value)} bytes signed, over the "
                f"{MAX_COOKIE_VALUE_BYTES} a cookie can carry; use a server-side store"
            )
        return value

    async def delete(self, key: str) -> None:
        return None  # nothing is kept server-side


class Session(MutableMapping[str, Any]):
    """The session of one connection: a dict loaded on first use.

    Setting or deleting a key marks it ``modified``; changing a value in place
    (``session["cart"].append(x)``) does not, so set ``modified = True`` then.
    """

    def __init__(self, store: SessionStore, key: str | None, max_age_s: int) -> None:
        self.store = store
        self.session_key = key
        self.max_age_s = max_age_s
        self.modified = False
        self._data: dict[str, Any] | None = None if key else {}
        self._old_key: str | None = None  # to delete on the next save
        self._cookie_changed = False

    # -- loading ----------------------------------------------------------------

    async def load(self) -> None:
        """Load the data now (a no-op once loaded). Stores that cannot load
        synchronously need this before the first access; the middleware does it."""
        if self._data is None:
            self._adopt(await self.store.load(self.session_key or "", self.max_age_s))

    @property
    def _loaded(self) -> dict[str, Any]:
        if self._data is None:
            self._adopt(self.store.load_now(self.session_key or "", self.max_age_s))
        assert self._data is not None  # set by _adopt
        return self._data

    def _adopt(self, data: dict[str, Any] | None) -> None:
        if data is None:
            # Forged, expired or unknown: start over, and do not keep the key.
            self._old_key = self.session_key
            self.session_key = None
            data = {}
        self._data = data

    # -- the mapping -------------------------------------------------------------

    def __getitem__(self, name: str) -> Any:
        return self._loaded[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self._loaded[name] = value
        self.modified = True

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def __repr__(self) -> str:
        state = "unloaded" if self._data is None else f"{len(self._data)} keys"
        return f"<Session {state}{' modified' if self.modified else ''}>"

    @property
    def is_empty(self) -> bool:
        return not self._loaded

    # -- lifecycle ---------------------------------------------------------------

    def cycle_key(self) -> None:
        """Keep the data under a new key at the next save (call on login)."""
        data = self._loaded
        if self.session_key is not None:
            self._old_key = self.session_key
            self.session_key = None
        self._data = data
        self.modified = True

    def flush(self) -> None:
        """Drop all data and the key (call on logout)."""
        self._loaded.clear()
        self.cycle_key()

    async def save(self) -> None:
        """Write the session to the store now (explicit for WebSocket scopes)."""
        data = self._loaded
        if self._old_key is not None:
            await self.store.delete(self._old_key)
            self._old_key = None
            self._cookie_changed = True
        if data:
            self.session_key = await self.store.save(self.session_key, data, self.max_age_s)
            self._cookie_changed = True  # refresh the cookie's age along with the store's
        elif self.session_key is not None:
            await self.store.delete(self.session_key)
            self.session_key = None
            self._cookie_changed = True
        self.modified = False

    @property
    def needs_save(self) -> bool:
        return self.modified or self._old_key is not None

    def take_cookie_change(self) -> bool:
        """True once after a save changed what the cookie should hold."""
        changed, self._cookie_changed = self._cookie_changed, False
        return changed


class SessionMiddleware(BaseMiddleware):
    """Put a ``Session`` in ``scope["session"]`` for http and websocket scopes.

    Args:
        inner: the app.
        store: a ``SessionStore``; default ``SignedCookieStore(secret_key)``
            when ``secret_key`` is given, else a process-local
            ``InMemorySessionStore``.
        cookie_name, max_age_s, cookie_path, cookie_domain, secure, httponly,
        samesite: the session cookie (defaults as Django's).
    """

    def __init__(
        self,
        inner: Any,
        store: SessionStore | None = None,
        *,
        secret_key: str | bytes | Sequence[str | bytes] | None = None,
        cookie_name: str = "sessionid",
        max_age_s: int = TWO_WEEKS_S,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        secure: bool = False,
        httponly: bool = True,
        samesite: SameSite | None = "lax",
    ) -> None:
        super().__init__(inner)
        if store is None:
            store = SignedCookieStore(secret_key) if secret_key else InMemorySessionStore()
        self.store = store
        self.cookie_name = cookie_name
        self.max_age_s = max_age_s
        self._cookie_attributes: dict[str, Any] = {
            "path": cookie_path,
            "domain": cookie_domain,
            "secure": secure,
            "httponly": httponly,
            "samesite": samesite,
        }
        # Validate the attributes once and keep the fixed parts of the header.
        sample = build_set_cookie(cookie_name, "x", **self._cookie_attributes)
        self._cookie_head = f"{cookie_name}=".encode("latin-1")
        self._cookie_age = f"; Max-Age={max_age_s}; Expires=".encode("ascii")
        self._cookie_tail = sample[len(self._cookie_head) + 1 :]
        self._expires_at = -1
        self._expires = b""
        self._delete_cookie = build_set_cookie(
            cookie_name,
            "",
            max_age=0,
            expires="Thu, 01 Jan 1970 00:00:00 GMT",
            path=cookie_path,
            domain=cookie_domain,
            samesite=None,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.inner(scope, receive, send)
            return
        cookies = scope.get("cookies")
        if cookies is None:
            cookies = cookies_from_scope(scope)
        session = Session(self.store, cookies.get(self.cookie_name) or None, self.max_age_s)
        if session.session_key and not self.store.loads_synchronously:
            await session.load()
        scope = dict(scope)
        scope["session"] = session
        if kind == "websocket":
            await self.inner(scope, receive, send)
            return

        async def send_with_session(message: Message) -> None:
            if message["type"] == "http.response.start" and session.needs_save:
                await session.save()
            if message["type"] == "http.response.start" and session.take_cookie_change():
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), self._session_cookie(session)]
            await send(message)

        await self.inner(scope, receive, send_with_session)

    def _session_cookie(self, session: Session) -> tuple[bytes, bytes]:
        key = session.session_key
        if key is None:
            return (b"set-cookie", self._delete_cookie)
        if not is_cookie_value(key):
            raise ValueError(f"{type(self.store).__name__} issued a key unfit for a cookie")
        now = int(time.time())
        if now != self._expires_at:
            # Formatting a date costs more than the rest of the header: once a second.
            self._expires_at = now
            self._expires = format_datetime(
                datetime.fromtimestamp(now + self.max_age_s, timezone.utc), usegmt=True
            ).encode("ascii")
        return (
            b"set-cookie",
            b"".join(
                (
                    self._cookie_head,
                    key.encode("ascii"),
                    self._cookie_age,
                    self._expires,
                    self._cookie_tail,
                )
            ),
        )


def SessionMiddlewareStack(inner: Any, **session_options: Any) -> CookieMiddleware:
    """``CookieMiddleware(SessionMiddleware(inner, **session_options))``."""
    return CookieMiddleware(SessionMiddleware(inner, **session_options))
