"""Cookies: parse the request's ``Cookie`` header, build ``Set-Cookie`` headers.

``CookieMiddleware`` puts ``scope["cookies"]`` (a dict of name -> value) in
http and websocket scopes. ``set_cookie`` / ``delete_cookie`` append a
``Set-Cookie`` header to an ``http.response.start`` message.

Invariants:

* Parsing never raises on client input: a malformed pair (no ``=``, an empty
  or invalid name) is skipped, the rest still parse (RFC 6265 §5.2 asks user
  agents to ignore such pairs; we apply the same tolerance on the server).
* The first occurrence of a name wins: RFC 6265 §5.4 orders the more specific
  cookie first.
* Building rejects names and values that would break the header (RFC 6265
  §4.1.1 grammar), so a ``Set-Cookie`` line can never be split or injected.

Toolkit module: imports ``sluiceway.asgi`` and ``sluiceway._toolkit`` only,
never the server side.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any, Literal

from sluiceway._toolkit import HTTP_TOKEN
from sluiceway.asgi.types import Message, Receive, Scope, Send
from sluiceway.middleware.base import BaseMiddleware

__all__ = ["CookieMiddleware", "delete_cookie", "parse_cookie", "set_cookie"]

SameSite = Literal["strict", "lax", "none", "Strict", "Lax", "None"]

# RFC 6265 §4.1.1: cookie-name is a token (HTTP_TOKEN); cookie-octet excludes
# CTLs, whitespace, DQUOTE, comma, semicolon and backslash.
_OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_COOKIE_VALUE = re.compile(rf'(?:{_OCTETS}|"{_OCTETS}")\Z')
# Attribute values (Path, Domain) may not contain ";" or CTLs (RFC 6265 §4.1.1).
_ATTRIBUTE_VALUE = re.compile(r"[\x20-\x3a\x3c-\x7e]*\Z")


def parse_cookie(header: str) -> dict[str, str]:
    """Parse a ``Cookie`` header value into a dict; malformed pairs are skipped.

    Surrounding double quotes are removed from values (RFC 6265 §4.1.1 allows
    a quoted cookie-value); nothing else is decoded.
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, sep, value = chunk.partition("=")
        if not sep:
            continue
        name = name.strip()
        if not HTTP_TOKEN.fullmatch(name) or name in cookies:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        cookies[name] = value
    return cookies


def cookies_from_scope(scope: Scope) -> dict[str, str]:
    """Parse every ``Cookie`` header of a scope (HTTP/2 may split it, RFC 9113 §8.2.3)."""
    values = [v for k, v in scope.get("headers", ()) if k.lower() == b"cookie"]
    if not values:
        return {}
    # latin-1 maps every byte to one character, so odd bytes cannot fail decoding.
    return parse_cookie("; ".join(v.decode("latin-1") for v in values))


class CookieMiddleware(BaseMiddleware):
    """Add ``scope["cookies"]`` to http and websocket scopes."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.inner(scope, receive, send)
            return
        scope = dict(scope)
        scope["cookies"] = cookies_from_scope(scope)
        await self.inner(scope, receive, send)

    # Channels spells these as static methods of the middleware.
    @staticmethod
    def set_cookie(message: Message, key: str, value: str = "", **attributes: Any) -> None:
        set_cookie(message, key, value, **attributes)

    @staticmethod
    def delete_cookie(message: Message, key: str, **attributes: Any) -> None:
        delete_cookie(message, key, **attributes)


def build_set_cookie(
    key: str,
    value: str = "",
    *,
    max_age: int | timedelta | None = None,
    expires: datetime | str | None = None,
    path: str | None = "/",
    domain: str | None = None,
    secure: bool = False,
    httponly: bool = False,
    samesite: SameSite | None = "lax",
) -> bytes:
    """Return a ``Set-Cookie`` header value (RFC 6265 §4.1).

    Raises:
        ValueError: a name, value or attribute that the grammar does not allow,
            or ``SameSite=None`` without ``Secure`` (browsers drop that cookie).
    """
    if not HTTP_TOKEN.fullmatch(key):
        raise ValueError(f"invalid cookie name {key!r}")
    if not _COOKIE_VALUE.match(value):
        raise ValueError(
            f"invalid characters in the value of cookie {key!r}; encode it first "
            "(for example base64url)"
        )
    parts = [f"{key}={value}"]
    if max_age is not None:
        seconds = int(max_age.total_seconds()) if isinstance(max_age, timedelta) else int(max_age)
        parts.append(f"Max-Age={seconds}")
        if expires is None:
            # Max-Age wins where understood; Expires is for older agents.
            expires = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    if expires is not None:
        if isinstance(expires, datetime):
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=timezone.utc)
            # RFC 6265 §4.1.1 sane-cookie-date is RFC 1123 (IMF-fixdate) in GMT.
            expires = format_datetime(expires.astimezone(timezone.utc), usegmt=True)
        _check_attribute("Expires", expires)
        parts.append(f"Expires={expires}")
    if domain is not None:
        _check_attribute("Domain", domain)
        parts.append(f"Domain={domain}")
    if path is not None:
        _check_attribute("Path", path)
        parts.append(f"Path={path}")
    if secure:
        parts.append("Secure")
    if httponly:
        parts.append("HttpOnly")
    if samesite is not None:
        same = samesite.lower()
        if same not in ("strict", "lax", "none"):
            raise ValueError(f"SameSite must be 'strict', 'lax' or 'none', got {samesite!r}")
        if same == "none" and not secure:
            raise ValueError("SameSite=None needs secure=True, or browsers drop the cookie")
        parts.append(f"SameSite={same.capitalize()}")
    return "; ".join(parts).encode("latin-1")


def is_cookie_value(value: str) -> bool:
    """Tell whether ``value`` fits RFC 6265 §4.1.1 cookie-value as is."""
    return _COOKIE_VALUE.match(value) is not None


def _check_attribute(name: str, value: str) -> None:
    if not _ATTRIBUTE_VALUE.match(value):
        raise ValueError(f"invalid characters in cookie attribute {name}: {value!r}")


def set_cookie(message: Message, key: str, value: str = "", **attributes: Any) -> None:
    """Append a ``Set-Cookie`` header to an ``http.response.start`` message.

    Takes the keyword arguments of ``build_set_cookie`` (``max_age``,
    ``expires``, ``path``, ``domain``, ``secure``, ``httponly``, ``samesite``).
    """
    if message.get("type") != "http.response.start":
        raise ValueError("cookies can only be set on an http.response.start message")
    header = build_set_cookie(key, value, **attributes)
    message["headers"] = [*message.get("headers", ()), (b"set-cookie", header)]


def delete_cookie(
    message: Message, key: str, *, path: str | None = "/", domain: str | None = None
) -> None:
    """Tell the browser to drop ``key``: empty value, expired in the past."""
    set_cookie(
        message,
        key,
        "",
        max_age=0,
        expires="Thu, 01 Jan 1970 00:00:00 GMT",
        path=path,
        domain=domain,
        samesite=None,
    )
