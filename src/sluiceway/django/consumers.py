"""The consumers, under the names ``channels.generic.*`` gives them.

They are the toolkit's (``sluiceway.consumers``), which already reach
``self.channel_layer`` through ``get_channel_layer()`` and so Django's
``CHANNEL_LAYERS``. The sync consumers close stale database connections
around each handler (``sluiceway.django.db.close_old_connections``), as
Channels' do, so a handler may use the ORM.
"""

from __future__ import annotations

from typing import Any

from sluiceway import consumers
from sluiceway.asgi.types import Message
from sluiceway.consumers import (
    AsyncConsumer,
    AsyncHttpConsumer,
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    StopConsumer,
)
from sluiceway.django.db import close_old_connections

__all__ = [
    "AsyncConsumer",
    "AsyncHttpConsumer",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "StopConsumer",
    "SyncConsumer",
    "WebsocketConsumer",
]


class _FreshConnectionsMixin:
    """Wraps each sync handler in ``close_old_connections`` calls, in its thread."""

    def _handler(self, message: Message) -> Any:
        handler = super()._handler(message)  # type: ignore[misc]  # the consumer's lookup

        def run(msg: Message) -> Any:
            close_old_connections()
            try:
                return handler(msg)
            finally:
                close_old_connections()

        return run


class SyncConsumer(_FreshConnectionsMixin, consumers.SyncConsumer):
    """``channels.consumer.SyncConsumer``."""


class WebsocketConsumer(_FreshConnectionsMixin, consumers.WebsocketConsumer):
    """``channels.generic.websocket.WebsocketConsumer``."""


class JsonWebsocketConsumer(_FreshConnectionsMixin, consumers.JsonWebsocketConsumer):
    """``channels.generic.websocket.JsonWebsocketConsumer``."""
