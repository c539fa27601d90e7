"""WebSocket origin checks that default to Django's ``ALLOWED_HOSTS``.

``AllowedHostsOriginValidator(app)`` with no list reads ``settings.ALLOWED_HOSTS``
on each handshake (so ``override_settings`` applies), with Django's rule for
an empty list under ``DEBUG``: ``.localhost``, ``127.0.0.1`` and ``[::1]``.
The patterns are parsed again only when the setting's value changed. Pass a
list to fix it at construction, as the toolkit's validator takes it.
``OriginValidator`` is the toolkit's, unchanged; ``WebsocketDenier`` refuses
every handshake.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings

from sluiceway.asgi.types import Message, Receive, Scope, Send
from sluiceway.consumers import AsyncWebsocketConsumer
from sluiceway.middleware.origin import AllowedHostsOriginValidator as _HostsValidator
from sluiceway.middleware.origin import OriginValidator

__all__ = ["AllowedHostsOriginValidator", "OriginValidator", "WebsocketDenier"]

# django.http.request.validate_host's hosts when DEBUG and ALLOWED_HOSTS is empty.
_DEBUG_HOSTS = (".localhost", "127.0.0.1", "[::1]")


class AllowedHostsOriginValidator:
    """Admit WebSocket handshakes whose ``Origin`` host is allowed.

    Args:
        application: the app to protect.
        allowed_hosts: host patterns; default ``settings.ALLOWED_HOSTS``, read
            per handshake.
        allow_missing_origin: admit handshakes that carry no ``Origin``.
    """

    def __init__(
        self,
        application: Any,
        allowed_hosts: Iterable[str] | None = None,
        *,
        allow_missing_origin: bool = False,
    ) -> None:
        self.application = application
        self._allow_missing = allow_missing_origin
        self._fixed = allowed_hosts is not None
        self._hosts: tuple[str, ...] | None = None
        self._validator: _HostsValidator | None = None
        if allowed_hosts is not None:
            self._validator = _HostsValidator(
                application, allowed_hosts, allow_missing_origin=allow_missing_origin
            )

    def _current(self) -> _HostsValidator:
        if self._fixed and self._validator is not None:
            return self._validator
        hosts = tuple(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = _DEBUG_HOSTS
        if self._validator is None or hosts != self._hosts:
            self._validator = _HostsValidator(
                self.application, hosts, allow_missing_origin=self._allow_missing
            )
            self._hosts = hosts
        return self._validator

    def valid_origin(self, origin_header: bytes | None) -> bool:
        """Tell whether a handshake with this ``Origin`` value is allowed now."""
        return self._current().valid_origin(origin_header)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._current()(scope, receive, send)


class WebsocketDenier(AsyncWebsocketConsumer):
    """Refuse every WebSocket handshake (close before accept: HTTP 403), as Channels' does."""

    async def websocket_connect(self, message: Message) -> None:
        await self.close()
