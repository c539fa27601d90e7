"""WebSocket consumers (async, sync, JSON) through the WebsocketCommunicator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sluiceway.consumers import (
    AcceptConnection,
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    DenyConnection,
    JsonWebsocketConsumer,
    WebsocketConsumer,
)
from sluiceway.errors import LayerError
from sluiceway.layers import InMemoryChannelLayer, channel_layers
from sluiceway.testing import WebsocketCommunicator

NO_LAYER = "no-such-layer"


@pytest.fixture
def memory_layer() -> Iterator[None]:
    channel_layers.configure({"default": {"BACKEND": "memory"}})
    yield
    channel_layers.reset()


closed_with: list[int] = []


class AsyncEcho(AsyncWebsocketConsumer):
    channel_layer_alias = NO_LAYER

    async def connect(self) -> None:
        if self.scope["path"] == "/deny/":
            raise DenyConnection()
        if self.scope["path"] == "/accept-exc/":
            raise AcceptConnection()
        offered = self.scope["subprotocols"]
        await self.accept(offered[0] if offered else None)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "bye":
            await self.send(text_data="closing", close=4001)
        elif text_data == "nothing":
            await self.send()
        elif text_data is not None:
            await self.send(text_data=text_data.upper())
        else:
            assert bytes_data is not None
            await self.send(bytes_data=bytes_data[::-1])

    async def disconnect(self, code: int) -> None:
        closed_with.append(code)


class SyncEcho(WebsocketConsumer):
    channel_layer_alias = NO_LAYER

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data == "thread":
            self.send(text_data=str(threading.get_ident()))
        elif text_data == "bye":
            self.close(4002, "done")
        elif text_data is not None:
            self.send(text_data=text_data.upper())
        else:
            assert bytes_data is not None
            self.send(bytes_data=bytes_data[::-1])

    def disconnect(self, code: int) -> None:
        closed_with.append(code)


@pytest.mark.parametrize("consumer", [AsyncEcho, SyncEcho])
async def test_echo_text_and_bytes_then_disconnect(consumer: Any) -> None:
    closed_with.clear()
    comm = WebsocketCommunicator(consumer.as_asgi(), "/echo/")
    assert await comm.connect() == (True, None)
    await comm.send_to(text_data="hello")
    assert await comm.receive_from() == "HELLO"
    await comm.send_to(bytes_data=b"abc")
    assert await comm.receive_from() == b"cba"
    await comm.disconnect(code=1001)
    assert closed_with == [1001]


async def test_sync_consumer_handlers_run_in_a_worker_thread() -> None:
    comm = WebsocketCommunicator(SyncEcho.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="thread")
    assert int(await comm.receive_from()) != threading.get_ident()
    await comm.disconnect()


async def test_subprotocol_is_chosen_by_accept() -> None:
    comm = WebsocketCommunicator(AsyncEcho.as_asgi(), "/", subprotocols=["chat.v2", "chat.v1"])
    assert await comm.connect() == (True, "chat.v2")
    await comm.disconnect()


class AsyncHeaders(AsyncWebsocketConsumer):
    channel_layer_alias = NO_LAYER

    async def connect(self) -> None:
        await self.accept("v1", headers=[(b"x-shard", b"7")])


class SyncHeaders(WebsocketConsumer):
    channel_layer_alias = NO_LAYER

    def connect(self) -> None:
        self.accept("v1", headers=[(b"x-shard", b"7")])


@pytest.mark.parametrize("consumer", [AsyncHeaders, SyncHeaders])
async def test_accept_with_subprotocol_and_headers(consumer: Any) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/", subprotocols=["v1"])
    await comm.send_input({"type": "websocket.connect"})
    assert await comm.receive_output() == {
        "type": "websocket.accept",
        "subprotocol": "v1",
        "headers": [(b"x-shard", b"7")],
    }
    await comm.stop()


async def test_deny_connection_closes_before_accept() -> None:
    comm = WebsocketCommunicator(AsyncEcho.as_asgi(), "/deny/")
    connected, code = await comm.connect()
    assert not connected
    assert code == 1000
    await comm.stop()


async def test_accept_connection_exception_accepts() -> None:
    comm = WebsocketCommunicator(AsyncEcho.as_asgi(), "/accept-exc/")
    assert (await comm.connect())[0]
    await comm.disconnect()


async def test_send_with_close_code_and_close_with_reason() -> None:
    comm = WebsocketCommunicator(AsyncEcho.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="bye")
    assert await comm.receive_from() == "closing"
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4001}
    await comm.disconnect()

    comm = WebsocketCommunicator(SyncEcho.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="bye")
    assert await comm.receive_output() == {
        "type": "websocket.close",
        "code": 4002,
        "reason": "done",
    }
    await comm.disconnect()


async def test_send_without_data_is_a_value_error() -> None:
    comm = WebsocketCommunicator(AsyncEcho.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="nothing")
    with pytest.raises(ValueError, match="text_data or bytes_data"):
        await comm.wait()


class AsyncJson(AsyncJsonWebsocketConsumer):
    channel_layer_alias = NO_LAYER

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"echo": content})

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return "custom:" + await super().encode_json(content)


class SyncJson(JsonWebsocketConsumer):
    channel_layer_alias = NO_LAYER

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"echo": content})


async def test_custom_decode_json() -> None:
    class Strict(JsonWebsocketConsumer):
        channel_layer_alias = NO_LAYER

        @classmethod
        def decode_json(cls, text_data: str) -> Any:
            content = super().decode_json(text_data)
            if not isinstance(content, dict):
                raise ValueError("objects only")
            return content

        def receive_json(self, content: Any, **kwargs: Any) -> None:
            self.send_json(sorted(content))

    comm = WebsocketCommunicator(Strict.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({"b": 1, "a": 2})
    assert await comm.receive_json_from() == ["a", "b"]
    await comm.send_json_to([1])
    assert (await comm.receive_output())["code"] == 1007
    await comm.disconnect()


@pytest.mark.parametrize("consumer", [AsyncJson, SyncJson])
async def test_json_round_trip_and_bad_frames(consumer: Any) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    await comm.connect()
    await comm.send_json_to({"n": [1, 2]})
    reply = await comm.receive_from()
    assert isinstance(reply, str)
    expected = '{"echo": {"n": [1, 2]}}'
    assert reply == ("custom:" + expected if consumer is AsyncJson else expected)

    await comm.send_to(text_data="{not json")
    assert await comm.receive_output() == {
        "type": "websocket.close",
        "code": 1007,
        "reason": "invalid JSON",
    }
    await comm.disconnect()

    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(bytes_data=b"\x00")
    assert (await comm.receive_output())["code"] == 1003
    await comm.disconnect()


@pytest.mark.parametrize("consumer", [AsyncJson, SyncJson])
async def test_json_nested_too_deep_is_invalid_payload(consumer: Any) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="[" * 100_000)
    assert (await comm.receive_output(5))["code"] == 1007
    await comm.disconnect()


class AsyncRoom(AsyncWebsocketConsumer):
    groups = ["room"]  # noqa: RUF012 - Channels' API

    async def chat_message(self, message: dict[str, Any]) -> None:
        await self.send(text_data=message["text"])


class SyncRoom(WebsocketConsumer):
    groups = ["room"]  # noqa: RUF012 - Channels' API

    def chat_message(self, message: dict[str, Any]) -> None:
        self.send(text_data=message["text"])


@pytest.mark.parametrize("consumer", [AsyncRoom, SyncRoom])
async def test_groups_are_joined_on_connect_and_left_on_disconnect(
    memory_layer: None, consumer: Any
) -> None:
    layer = channel_layers["default"]
    first = WebsocketCommunicator(consumer.as_asgi(), "/")
    second = WebsocketCommunicator(consumer.as_asgi(), "/")
    await first.connect()
    await second.connect()
    await layer.group_send("room", {"type": "chat.message", "text": "to all"})
    assert await first.receive_from() == "to all"
    assert await second.receive_from() == "to all"

    await first.disconnect()
    groups = layer._groups  # type: ignore[attr-defined]  # memory layer internals
    assert len(groups["room"]) == 1
    await second.disconnect()
    assert "room" not in groups


async def test_groups_without_a_layer_is_a_clear_error() -> None:
    class Lonely(AsyncWebsocketConsumer):
        channel_layer_alias = NO_LAYER
        groups = ["room"]  # noqa: RUF012

    comm = WebsocketCommunicator(Lonely.as_asgi(), "/")
    await comm.send_input({"type": "websocket.connect"})
    with pytest.raises(LayerError, match="no channel layer"):
        await comm.wait()


async def test_groups_per_instance_from_initkwargs(memory_layer: None) -> None:
    layer = channel_layers["default"]
    comm = WebsocketCommunicator(AsyncRoom.as_asgi(groups=["other"]), "/")
    await comm.connect()
    await layer.group_send("other", {"type": "chat.message", "text": "x"})
    assert await comm.receive_from() == "x"
    assert AsyncRoom.groups == ["room"]
    await comm.disconnect()


class CrashingRoom(AsyncWebsocketConsumer):
    groups = ["crashy"]  # noqa: RUF012 - Channels' API

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise ZeroDivisionError("handler bug")


class SyncCrashingRoom(WebsocketConsumer):
    groups = ["crashy"]  # noqa: RUF012 - Channels' API

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise ZeroDivisionError("handler bug")


@pytest.mark.parametrize("consumer", [CrashingRoom, SyncCrashingRoom])
async def test_a_crashed_consumer_leaves_its_groups(memory_layer: None, consumer: Any) -> None:
    layer = channel_layers["default"]
    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    await comm.connect()
    groups = layer._groups  # type: ignore[attr-defined]  # memory layer internals
    assert len(groups["crashy"]) == 1
    await comm.send_to(text_data="boom")
    with pytest.raises(ZeroDivisionError):
        await comm.wait()
    assert "crashy" not in groups


async def test_groups_joined_before_a_failed_join_are_left(memory_layer: None) -> None:
    class Flaky(InMemoryChannelLayer):
        async def group_add(self, group: str, channel: str) -> None:
            if group == "second":
                raise ConnectionError("layer went away")
            await super().group_add(group, channel)

    layer = Flaky()
    channel_layers.set("default", layer)
    comm = WebsocketCommunicator(AsyncRoom.as_asgi(groups=["first", "second"]), "/")
    await comm.send_input({"type": "websocket.connect"})
    with pytest.raises(ConnectionError):
        await comm.wait()
    assert "first" not in layer._groups  # type: ignore[attr-defined]  # memory layer internals
