"""database_sync_to_async, CHANNEL_LAYERS from settings, origin checks from ALLOWED_HOSTS."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
from django.test import override_settings

import sluiceway.django.db
from sluiceway.django.consumers import AsyncWebsocketConsumer, WebsocketConsumer
from sluiceway.django.db import (
    aclose_old_connections,
    close_old_connections,
    database_sync_to_async,
)
from sluiceway.django.layers import get_channel_layer
from sluiceway.django.security import AllowedHostsOriginValidator, WebsocketDenier
from sluiceway.layers import InMemoryChannelLayer
from sluiceway.sync import async_to_sync
from sluiceway.testing import WebsocketCommunicator


class FakeConnection:
    def __init__(self, in_atomic_block: bool) -> None:
        self.in_atomic_block = in_atomic_block
        self.checked = 0

    def close_if_unusable_or_obsolete(self) -> None:
        self.checked += 1


def test_close_old_connections_leaves_a_connection_in_a_transaction_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    idle, in_transaction = FakeConnection(False), FakeConnection(True)
    monkeypatch.setattr(
        sluiceway.django.db.connections,
        "all",
        lambda initialized_only=False: [idle, in_transaction],
    )
    close_old_connections()
    assert (idle.checked, in_transaction.checked) == (1, 0)


async def test_aclose_old_connections_runs_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    idle = FakeConnection(False)
    where: list[threading.Thread] = []

    def all_connections(initialized_only: bool = False) -> list[FakeConnection]:
        where.append(threading.current_thread())
        return [idle]

    monkeypatch.setattr(sluiceway.django.db.connections, "all", all_connections)
    await aclose_old_connections()
    assert idle.checked == 1 and where[0] is not threading.current_thread()


async def test_database_sync_to_async_closes_old_connections_around_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    monkeypatch.setattr(
        sluiceway.django.db, "close_old_connections", lambda: events.append("close")
    )

    @database_sync_to_async
    def query(x: int) -> int:
        events.append("call")
        return x * 2

    assert inspect.iscoroutinefunction(query)
    assert await query(21) == 42
    assert events == ["close", "call", "close"]
    assert await database_sync_to_async(thread_sensitive=False)(lambda: 1)() == 1


async def test_sync_consumer_handlers_get_fresh_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    monkeypatch.setattr(
        "sluiceway.django.consumers.close_old_connections", lambda: events.append("close")
    )

    class Echo(WebsocketConsumer):
        def connect(self) -> None:
            events.append("connect")
            self.accept()

    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert (await comm.connect())[0]
    await comm.disconnect()
    assert events[:3] == ["close", "connect", "close"]


# -- channel layers from settings ----------------------------------------------------------


class Room(AsyncWebsocketConsumer):
    groups = ["room"]  # noqa: RUF012  # Channels' spelling

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("room", {"type": "chat.message", "text": text_data})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 7}}}
OTHER = {
    "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    "extra": {"BACKEND": "memory"},
}


async def test_channel_layers_follow_the_setting_and_its_changes() -> None:
    with override_settings(CHANNEL_LAYERS=MEMORY):
        layer = get_channel_layer()
        assert isinstance(layer, InMemoryChannelLayer) and layer.capacity == 7
        assert get_channel_layer() is layer
        assert get_channel_layer("extra") is None
        with override_settings(CHANNEL_LAYERS=OTHER):
            rebuilt = get_channel_layer()
            assert rebuilt is not layer and rebuilt is not None and rebuilt.capacity != 7
            assert get_channel_layer("extra") is not None
        assert get_channel_layer() is not rebuilt  # rebuilt again on the way out


@override_settings(CHANNEL_LAYERS=MEMORY)
async def test_consumers_chat_through_the_configured_layer() -> None:
    first, second = (
        WebsocketCommunicator(Room.as_asgi(), "/"),
        WebsocketCommunicator(Room.as_asgi(), "/"),
    )
    assert (await first.connect())[0] and (await second.connect())[0]
    await first.send_to(text_data="hello")
    assert await second.receive_from() == "hello"
    assert await first.receive_from() == "hello"
    await first.disconnect()
    await second.disconnect()


def test_async_to_sync_group_send_from_sync_code() -> None:
    # The tutorial's sync consumer does exactly this.
    with override_settings(CHANNEL_LAYERS=MEMORY):
        layer = get_channel_layer()
        assert layer is not None
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)("g", channel)
        async_to_sync(layer.group_send)("g", {"type": "x"})
        assert async_to_sync(layer.receive)(channel) == {"type": "x"}


# -- origin checks ---------------------------------------------------------------------------


async def handshake(app: Any, origin: str | None) -> bool:
    async def accept(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    headers = [(b"origin", origin.encode())] if origin else []
    connected, _ = await WebsocketCommunicator(app(accept), "/", headers).connect()
    return bool(connected)


async def test_allowed_hosts_origin_validator_reads_allowed_hosts_per_handshake() -> None:
    app = AllowedHostsOriginValidator
    assert await handshake(app, "http://localhost:8000")  # settings: 127.0.0.1, localhost
    assert not await handshake(app, "https://evil.example")
    assert not await handshake(app, None)
    with override_settings(ALLOWED_HOSTS=[".example.com"]):
        assert await handshake(app, "https://chat.example.com")
        assert not await handshake(app, "http://localhost:8000")
    with override_settings(ALLOWED_HOSTS=[], DEBUG=True):  # Django's DEBUG default hosts
        assert await handshake(app, "http://localhost:8000")
        assert await handshake(app, "http://[::1]:8000")
        assert not await handshake(app, "http://example.com")
    with override_settings(ALLOWED_HOSTS=["*"]):
        assert await handshake(app, None)


async def test_a_list_given_fixes_the_hosts() -> None:
    def fixed(inner: Any) -> AllowedHostsOriginValidator:
        return AllowedHostsOriginValidator(inner, ["example.com"])

    with override_settings(ALLOWED_HOSTS=["*"]):
        assert not await handshake(fixed, "http://localhost")
        assert await handshake(fixed, "http://example.com:9000")


async def test_websocket_denier_refuses() -> None:
    connected, _ = await WebsocketCommunicator(WebsocketDenier.as_asgi(), "/").connect()
    assert not connected
