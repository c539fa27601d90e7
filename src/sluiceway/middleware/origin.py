"""Origin checks for WebSocket handshakes: the defence against cross-site
WebSocket hijacking.

Browsers send ``Origin`` on every WebSocket handshake (RFC 6455 §4.1 item 8,
§10.2) but do not apply the same-origin policy to WebSockets, so a page on
another site can open a socket carrying the user's cookies. A server must
check the origin itself.

``OriginValidator(app, ["https://example.com", "*.example.org", ...])``
closes a handshake from any other origin before accepting it, which the
server turns into HTTP 403 (ASGI www spec, WebSocket Connect).
``AllowedHostsOriginValidator(app, allowed_hosts)`` does the same with
Django ``ALLOWED_HOSTS``-style host patterns.

Pattern forms (hosts compare case-insensitively):

* ``"*"``: any origin, and a handshake without ``Origin`` too;
* ``"https://example.com"`` / ``"https://example.com:8443"``: that scheme,
  host and port (default port of the scheme when none is written);
* ``"example.com"`` / ``"example.com:8080"``: that host, any scheme; the
  port too when written;
* ``".example.com"``: the domain and every subdomain (Django's form);
* ``"*.example.com"``: subdomains only.

A handshake without ``Origin`` (a non-browser client), with ``Origin: null``
or with an unparsable origin is rejected unless ``"*"`` is allowed, as in
Channels; pass ``allow_missing_origin=True`` to admit clients that send no
``Origin`` at all. HTTP and other scopes pass through unchecked.

Toolkit module: imports ``sluiceway.asgi`` and ``sluiceway._toolkit`` only,
never the server side.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sluiceway._toolkit import refuse_websocket
from sluiceway.asgi.compat import guarantee_single_callable
from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send

__all__ = ["AllowedHostsOriginValidator", "OriginValidator"]

logger = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
CLOSE_POLICY_VIOLATION = 1008  # RFC 6455 §7.4.1


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int | None


def _parse_origin(text: str) -> _Origin | None:
    """Parse a serialised origin (RFC 6454 §6.1); None if it is not one."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not scheme or not host:
        return None
    return _Origin(scheme, host.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme))


@dataclass(frozen=True, slots=True)
class _Pattern:
    scheme: str | None
    host: str  # without leading "." / "*."
    port: int | None
    subdomains: bool  # match subdomains of host
    itself: bool  # match host itself

    def matches(self, origin: _Origin, check_port: bool = True) -> bool:
        if self.scheme is not None and self.scheme != origin.scheme:
            return False
        if check_port and self.port is not None and self.port != origin.port:
            return False
        if origin.host == self.host:
            return self.itself
        return self.subdomains and origin.host.endswith("." + self.host)


def _parse_pattern(text: str) -> _Pattern:
    pattern = text.strip().lower()
    if not pattern:
        raise ValueError("an empty origin pattern matches nothing; remove it")
    scheme: str | None = None
    if "://" in pattern:
        origin = _parse_origin(pattern)
        if origin is None:
            raise ValueError(f"invalid origin pattern {text!r}")
        scheme, pattern = origin.scheme, pattern.split("://", 1)[1].rstrip("/")
        if ":" not in pattern.rsplit("]", 1)[-1]:
            pattern = f"{pattern}:{origin.port}" if origin.port is not None else pattern
    subdomains, itself = False, True
    if pattern.startswith("*."):
        pattern, subdomains, itself = pattern[2:], True, False
    elif pattern.startswith("."):
        pattern, subdomains = pattern[1:], True
    host, port = pattern, None
    head, sep, tail = pattern.rpartition(":")
    if sep and tail.isdigit() and not head.endswith(":"):  # not a bare IPv6 literal
        host, port = head, int(tail)
    host = host.strip("[]")
    if not host or "*" in host or "/" in host:
        raise ValueError(f"invalid origin pattern {text!r}")
    return _Pattern(scheme, host, port, subdomains, itself)


class OriginValidator:
    """Admit WebSocket handshakes only from allowed origins.

    Args:
        application: the app to protect.
        allowed_origins: patterns, see the module docstring.
        allow_missing_origin: admit handshakes that carry no ``Origin``.

    Raises:
        ValueError: an invalid pattern (at construction).
    """

    check_port = True

    def __init__(
        self,
        application: Any,
        allowed_origins: Iterable[str],
        *,
        allow_missing_origin: bool = False,
    ) -> None:
        self.application: ASGIApp = guarantee_single_callable(application)
        if isinstance(allowed_origins, str):
            raise TypeError("allowed_origins is a list of patterns, not one string")
        origins = list(allowed_origins)
        self.allow_any = "*" in origins
        self.allow_missing_origin = allow_missing_origin or self.allow_any
        self.patterns = [_parse_pattern(p) for p in origins if p != "*"]

    def valid_origin(self, origin_header: bytes | None) -> bool:
        """Tell whether a handshake with this ``Origin`` value is allowed."""
        if origin_header is None:
            return self.allow_missing_origin
        if self.allow_any:
            return True
        origin = _parse_origin(origin_header.decode("latin-1"))
        if origin is None:
            return False
        return any(p.matches(origin, self.check_port) for p in self.patterns)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            origins = [v for k, v in scope.get("headers", ()) if k.lower() == b"origin"]
            # RFC 6454 §7.3: one Origin header; several are not to be trusted.
            origin = origins[0] if len(origins) == 1 else None
            if len(origins) > 1 or not self.valid_origin(origin):
                logger.info("rejected WebSocket handshake from origin %r", origins)
                await refuse_websocket(receive, send, CLOSE_POLICY_VIOLATION)
                return
        await self.application(scope, receive, send)


class AllowedHostsOriginValidator(OriginValidator):
    """``OriginValidator`` with ``ALLOWED_HOSTS``-style patterns.

    ``"example.com"``, ``".example.com"`` (domain and subdomains) and ``"*"``;
    the scheme and port of the origin are ignored, as Django ignores the
    port when it validates hosts.
    """

    check_port = False

    def __init__(
        self,
        application: Any,
        allowed_hosts: Iterable[str],
        *,
        allow_missing_origin: bool = False,
    ) -> None:
        super().__init__(application, allowed_hosts, allow_missing_origin=allow_missing_origin)
