"""Consumers: Channels-style classes that handle one connection each.

See ``consumers.base`` for the dispatch rules and the channel-layer seam,
``consumers.websocket`` and ``consumers.http`` for the protocol classes.
Like all toolkit code, this package never imports the server side, and it
imports ``sluiceway.layers`` only lazily, when a consumer first runs.
"""

from __future__ import annotations

from sluiceway.consumers.base import (
    AcceptConnection,
    AsyncConsumer,
    ConsumerApp,
    DenyConnection,
    StopConsumer,
    SyncConsumer,
    get_handler_name,
)
from sluiceway.consumers.http import AsyncHttpConsumer
from sluiceway.consumers.websocket import (
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)

__all__ = [
    "AcceptConnection",
    "AsyncConsumer",
    "AsyncHttpConsumer",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "ConsumerApp",
    "DenyConnection",
    "JsonWebsocketConsumer",
    "StopConsumer",
    "SyncConsumer",
    "WebsocketConsumer",
    "get_handler_name",
]
