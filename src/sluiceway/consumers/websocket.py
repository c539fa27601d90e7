"""WebSocket consumers: connect / receive / disconnect, plus JSON variants.

``AsyncWebsocketConsumer`` and ``WebsocketConsumer`` (sync) turn the ASGI
WebSocket events into three overridable methods, as in Django Channels:

* ``connect()``: default accepts. Raise ``AcceptConnection`` or
  ``DenyConnection`` to decide from deep inside; a close before accept is
  answered by the server with HTTP 403 (ASGI www spec, "Close - send event").
* ``receive(text_data=None, bytes_data=None)``: one per frame.
* ``disconnect(code)``: the peer or the server closed; the consumer then stops.

``send(text_data=..., bytes_data=..., close=...)``, ``close(code, reason)``
and ``accept(subprotocol, headers)`` build the ASGI messages. With a channel
layer, ``groups`` are joined before ``connect()`` and left on disconnect, or
when the consumer ends any other way (a handler raised), so a dead consumer's
channel does not keep collecting group messages until the group expiry.

The JSON consumers decode each text frame and call ``receive_json``. A frame
that is not JSON, or a binary frame, closes the socket with 1007 / 1003
(RFC 6455 §7.4.1) rather than crashing the consumer (Channels raises, which
the server turns into 1011 and an error log for what is the client's fault).

Imports ``consumers.base``, ``sluiceway.sync`` (the sync consumer's group
calls), ``sluiceway.asgi`` and ``sluiceway.errors``; never the server side.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sluiceway.asgi.types import Message
from sluiceway.consumers.base import (
    AcceptConnection,
    AsyncConsumer,
    DenyConnection,
    StopConsumer,
    SyncConsumer,
)
from sluiceway.errors import LayerError
from sluiceway.sync import async_to_sync

if TYPE_CHECKING:
    from sluiceway.layers.base import ChannelLayer

__all__ = [
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "JsonWebsocketConsumer",
    "WebsocketConsumer",
]

logger = logging.getLogger(__name__)

# RFC 6455 §7.4.1
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_NO_STATUS = 1005
CLOSE_INVALID_PAYLOAD = 1007

HeaderPairs = Iterable[tuple[bytes, bytes]]

# What json.loads raises on a bad frame: ValueError, or RecursionError for
# nesting deeper than the interpreter's stack ("[" * 100_000 fits in 1 MiB).
_NOT_JSON = (ValueError, RecursionError)


def _accept_message(subprotocol: str | None, headers: HeaderPairs | None) -> Message:
    message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
    if headers:
        message["headers"] = list(headers)
    return message


def _frame_message(text_data: str | None, bytes_data: bytes | None) -> Message:
    if text_data is not None:
        return {"type": "websocket.send", "text": text_data}
    if bytes_data is not None:
        return {"type": "websocket.send", "bytes": bytes_data}
    raise ValueError("send() needs text_data or bytes_data")


def _close_message(code: int | bool | None, reason: str | None) -> Message:
    message: Message = {"type": "websocket.close"}
    # close=True on send() means "close with the default code".
    if code is not None and code is not True and code is not False:
        message["code"] = code
    if reason:
        message["reason"] = reason
    return message


def _no_layer(consumer: object) -> LayerError:
    return LayerError(
        f"{type(consumer).__name__}.groups is set but no channel layer is configured "
        "(check channel_layer_alias and the layer settings)"
    )


async def _join(consumer: AsyncWebsocketConsumer | WebsocketConsumer) -> None:
    """Join ``consumer.groups`` before ``connect()``, remembering each for ``_leave``.

    Raises:
        LayerError: groups are set but no layer is configured.
    """
    layer = consumer.channel_layer
    if layer is None:
        raise _no_layer(consumer)
    for group in consumer.groups:
        await layer.group_add(group, consumer.channel_name)
        # One at a time: if a later add fails, the earlier ones are still left.
        consumer._joined = (*consumer._joined, group)


async def _leave(consumer: AsyncWebsocketConsumer | WebsocketConsumer, layer: ChannelLayer) -> None:
    """Leave the groups joined on connect, once (disconnect, or the consumer died)."""
    joined, consumer._joined = consumer._joined, ()
    for group in joined:
        await layer.group_discard(group, consumer.channel_name)


class AsyncWebsocketConsumer(AsyncConsumer):
    """An async WebSocket consumer; override ``connect``, ``receive``, ``disconnect``."""

    _joined: tuple[str, ...] = ()

    async def websocket_connect(self, message: Message) -> None:
        if self.groups:
            await _join(self)
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        await self.accept()

    async def accept(
        self, subprotocol: str | None = None, headers: HeaderPairs | None = None
    ) -> None:
        """Accept the handshake, optionally choosing a subprotocol and adding headers."""
        await super().send(_accept_message(subprotocol, headers))

    async def websocket_receive(self, message: Message) -> None:
        text = message.get("text")
        if text is not None:
            await self.receive(text_data=text)
        else:
            await self.receive(bytes_data=message.get("bytes"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame; override."""

    # Channels' API: a WebSocket consumer's send() takes frame data, not an
    # ASGI message (still reachable through super().send / base_send).
    async def send(  # type: ignore[override]
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send one frame, then close if ``close`` is True or a close code.

        Raises:
            ValueError: neither ``text_data`` nor ``bytes_data`` was given.
        """
        await super().send(_frame_message(text_data, bytes_data))
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (before accept: refuse it, HTTP 403)."""
        await super().send(_close_message(code, reason))

    async def websocket_disconnect(self, message: Message) -> None:
        if self.channel_layer is not None:
            await _leave(self, self.channel_layer)
        await self.disconnect(message.get("code", CLOSE_NO_STATUS))
        raise StopConsumer()

    async def _release_layer(self, layer: ChannelLayer) -> None:
        await _leave(self, layer)

    async def disconnect(self, code: int) -> None:
        """Called when the socket closed; override."""


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """Async WebSocket consumer that speaks JSON in text frames."""

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            await self.close(CLOSE_UNSUPPORTED_DATA, "expected a JSON text frame")
            return
        try:
            content = await self.decode_json(text_data)
        except _NOT_JSON:
            logger.debug("closing %s: frame is not JSON", type(self).__name__)
            await self.close(CLOSE_INVALID_PAYLOAD, "invalid JSON")
            return
        await self.receive_json(content, **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded frame; override."""

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` and send it as a text frame."""
        await super().send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class WebsocketConsumer(SyncConsumer):
    """A sync WebSocket consumer: handlers run in a thread pool, in order."""

    _joined: tuple[str, ...] = ()

    def websocket_connect(self, message: Message) -> None:
        if self.groups:
            async_to_sync(_join)(self)
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def connect(self) -> None:
        self.accept()

    def accept(self, subprotocol: str | None = None, headers: HeaderPairs | None = None) -> None:
        """Accept the handshake, optionally choosing a subprotocol and adding headers."""
        super().send(_accept_message(subprotocol, headers))

    def websocket_receive(self, message: Message) -> None:
        text = message.get("text")
        if text is not None:
            self.receive(text_data=text)
        else:
            self.receive(bytes_data=message.get("bytes"))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Called with each frame; override."""

    def send(  # type: ignore[override]  # Channels' API, see AsyncWebsocketConsumer.send
        self,
        text_data: str | None = None,
        bytes_data: bytes | None = None,
        close: bool | int = False,
    ) -> None:
        """Send one frame, then close if ``close`` is True or a close code.

        Raises:
            ValueError: neither ``text_data`` nor ``bytes_data`` was given.
        """
        super().send(_frame_message(text_data, bytes_data))
        if close:
            self.close(close)

    def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close the connection (before accept: refuse it, HTTP 403)."""
        super().send(_close_message(code, reason))

    def websocket_disconnect(self, message: Message) -> None:
        if self.channel_layer is not None:
            async_to_sync(_leave)(self, self.channel_layer)
        self.disconnect(message.get("code", CLOSE_NO_STATUS))
        raise StopConsumer()

    async def _release_layer(self, layer: ChannelLayer) -> None:
        await _leave(self, layer)

    def disconnect(self, code: int) -> None:
        """Called when the socket closed; override."""


class JsonWebsocketConsumer(WebsocketConsumer):
    """Sync WebSocket consumer that speaks JSON in text frames."""

    def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any
    ) -> None:
        if text_data is None:
            self.close(CLOSE_UNSUPPORTED_DATA, "expected a JSON text frame")
            return
        try:
            content = self.decode_json(text_data)
        except _NOT_JSON:
            logger.debug("closing %s: frame is not JSON", type(self).__name__)
            self.close(CLOSE_INVALID_PAYLOAD, "invalid JSON")
            return
        self.receive_json(content, **kwargs)

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        """Called with each decoded frame; override."""

    def send_json(self, content: Any, close: bool | int = False) -> None:
        """Encode ``content`` and send it as a text frame."""
        super().send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
