"""Base consumers: dispatch by type, as_asgi, threads, and the channel-layer seam."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from sluiceway.consumers import (
    AsyncConsumer,
    AsyncWebsocketConsumer,
    StopConsumer,
    SyncConsumer,
    get_handler_name,
)
from sluiceway.layers import InMemoryChannelLayer, channel_layers
from sluiceway.testing import ApplicationCommunicator, WebsocketCommunicator

NO_LAYER = "no-such-layer"  # an alias nothing configures: get_channel_layer -> None


@pytest.fixture
def memory_layer() -> Iterator[None]:
    channel_layers.configure({"default": {"BACKEND": "memory"}})
    yield
    channel_layers.reset()


def channel_scope() -> dict[str, Any]:
    return {"type": "channel", "channel": "work"}


class Recorder(AsyncConsumer):
    channel_layer_alias = NO_LAYER
    greeting = "hello"

    async def work_item(self, message: dict[str, Any]) -> None:
        await self.send(
            {
                "type": "work.done",
                "greeting": self.greeting,
                "value": message["value"],
                "thread": threading.get_ident(),
            }
        )

    async def work_stop(self, message: dict[str, Any]) -> None:
        raise StopConsumer()


def test_handler_names() -> None:
    assert get_handler_name({"type": "websocket.receive"}) == "websocket_receive"
    assert get_handler_name({"type": "chat_message"}) == "chat_message"
    for bad in ({}, {"type": 3}, {"type": ""}, {"type": "_private"}, {"type": "send"}):
        with pytest.raises(ValueError):
            get_handler_name(bad)


async def test_events_are_dispatched_on_the_loop_with_initkwargs() -> None:
    app = Recorder.as_asgi(greeting="hi")
    assert app.consumer_class is Recorder
    comm = ApplicationCommunicator(app, channel_scope())
    for value in (1, 2):
        await comm.send_input({"type": "work.item", "value": value})
    first, second = await comm.receive_output(), await comm.receive_output()
    assert [first["value"], second["value"]] == [1, 2]
    assert first["greeting"] == "hi"
    # No thread hop: the handler ran in the loop's own thread.
    assert first["thread"] == threading.get_ident()
    await comm.send_input({"type": "work.stop"})
    await comm.wait()


async def test_one_instance_per_scope() -> None:
    seen: list[int] = []

    class Counter(AsyncConsumer):
        channel_layer_alias = NO_LAYER

        async def ping(self, message: dict[str, Any]) -> None:
            seen.append(id(self))
            raise StopConsumer()

    app = Counter.as_asgi()
    for _ in range(2):
        comm = ApplicationCommunicator(app, channel_scope())
        await comm.send_input({"type": "ping"})
        await comm.wait()
    assert len(set(seen)) == 2


def test_unknown_initkwargs_are_refused_early() -> None:
    with pytest.raises(TypeError, match="nonsense"):
        Recorder.as_asgi(nonsense=1)
    with pytest.raises(TypeError):
        Recorder(_secret=1)


async def test_unknown_type_is_a_clear_value_error() -> None:
    comm = ApplicationCommunicator(Recorder.as_asgi(), channel_scope())
    await comm.send_input({"type": "work.unknown"})
    with pytest.raises(ValueError, match=r"work\.unknown.*Recorder has no method work_unknown\(\)"):
        await comm.wait()


async def test_type_naming_an_api_method_is_refused() -> None:
    comm = ApplicationCommunicator(Recorder.as_asgi(), channel_scope())
    await comm.send_input({"type": "send", "payload": "x"})
    with pytest.raises(ValueError, match="not allowed"):
        await comm.wait()


class SlowSync(SyncConsumer):
    channel_layer_alias = NO_LAYER
    gates: dict[str, threading.Event] = {}  # noqa: RUF012 - test registry

    def job_run(self, message: dict[str, Any]) -> None:
        gate = self.gates.get(message["name"])
        if gate is not None:
            gate.wait(10)
        self.send({"type": "job.done", "name": message["name"], "thread": threading.get_ident()})


async def test_sync_handlers_run_off_the_loop_in_order() -> None:
    comm = ApplicationCommunicator(SlowSync.as_asgi(), channel_scope())
    for name in ("a", "b", "c"):
        await comm.send_input({"type": "job.run", "name": name})
    results = [await comm.receive_output(5) for _ in range(3)]
    assert [r["name"] for r in results] == ["a", "b", "c"]
    assert all(r["thread"] != threading.get_ident() for r in results)
    await comm.stop()


async def test_a_slow_sync_connection_does_not_stall_another() -> None:
    gate = threading.Event()
    SlowSync.gates["blocked"] = gate
    try:
        slow = ApplicationCommunicator(SlowSync.as_asgi(), channel_scope())
        fast = ApplicationCommunicator(SlowSync.as_asgi(), channel_scope())
        await slow.send_input({"type": "job.run", "name": "blocked"})
        await fast.send_input({"type": "job.run", "name": "quick"})
        assert (await fast.receive_output(5))["name"] == "quick"
        assert await slow.receive_nothing(0.05)
        gate.set()
        assert (await slow.receive_output(5))["name"] == "blocked"
    finally:
        gate.set()
        SlowSync.gates.clear()
    await slow.stop()
    await fast.stop()


async def test_sync_unknown_type_fails_before_any_thread_hop() -> None:
    comm = ApplicationCommunicator(SlowSync.as_asgi(), channel_scope())
    await comm.send_input({"type": "job.missing"})
    with pytest.raises(ValueError, match=r"SlowSync has no method job_missing\(\)"):
        await comm.wait()


class LayerListener(AsyncConsumer):
    async def client_hello(self, message: dict[str, Any]) -> None:
        await self.send({"type": "out", "from": "client", "channel": self.channel_name})

    async def chat_message(self, message: dict[str, Any]) -> None:
        await self.send({"type": "out", "from": "layer", "text": message["text"]})


async def test_layer_messages_and_client_messages_are_both_dispatched(memory_layer: None) -> None:
    comm = ApplicationCommunicator(LayerListener.as_asgi(), channel_scope())
    await comm.send_input({"type": "client.hello"})
    hello = await comm.receive_output()
    assert hello["from"] == "client"
    layer = channel_layers["default"]
    await layer.send(hello["channel"], {"type": "chat.message", "text": "hi"})
    assert await comm.receive_output() == {"type": "out", "from": "layer", "text": "hi"}
    await comm.send_input({"type": "client.hello"})
    assert (await comm.receive_output())["from"] == "client"
    await comm.stop()


async def test_no_layer_configured_means_no_channel_name() -> None:
    class Plain(AsyncConsumer):
        channel_layer_alias = NO_LAYER

        async def check(self, message: dict[str, Any]) -> None:
            await self.send(
                {"type": "out", "layer": self.channel_layer, "named": hasattr(self, "channel_name")}
            )
            raise StopConsumer()

    comm = ApplicationCommunicator(Plain.as_asgi(), channel_scope())
    await comm.send_input({"type": "check"})
    assert await comm.receive_output() == {"type": "out", "layer": None, "named": False}
    await comm.wait()


async def test_layer_reader_failure_surfaces_in_the_consumer(memory_layer: None) -> None:
    class Broken:
        extensions: list[str] = []  # noqa: RUF012

        async def new_channel(self, prefix: str = "specific") -> str:
            return "specific.x!1"

        async def receive(self, channel: str) -> dict[str, Any]:
            await asyncio.sleep(0)
            raise ConnectionError("layer down")

    old = channel_layers.set("default", Broken())  # type: ignore[arg-type]
    try:
        comm = ApplicationCommunicator(LayerListener.as_asgi(), channel_scope())
        with pytest.raises(ConnectionError, match="layer down"):
            await comm.wait(2)
    finally:
        channel_layers.set("default", old)


class Forgetful(AsyncConsumer):
    """Handles the disconnect but forgets to raise StopConsumer."""

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        await self.send({"type": "websocket.accept"})

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.send({"type": "out", "code": message["code"]})


async def ignore(self: Any, message: dict[str, Any]) -> None:
    """A layer-message handler: gives a consumer class a reason to listen at once."""


# No layer; a layer it never needs (plain receive loop); a layer it listens on.
@pytest.mark.parametrize(
    ("alias", "extra"), [(NO_LAYER, {}), ("default", {}), ("default", {"chat_message": ignore})]
)
async def test_consumer_ends_after_a_disconnect_even_without_stop(
    memory_layer: None, alias: str, extra: dict[str, Any]
) -> None:
    app = type("F", (Forgetful,), {"channel_layer_alias": alias, **extra}).as_asgi()
    comm = ApplicationCommunicator(app, {"type": "websocket", "path": "/"})
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output())["type"] == "websocket.accept"
    await comm.send_input({"type": "websocket.disconnect", "code": 1001})
    assert await comm.receive_output() == {"type": "out", "code": 1001}
    await comm.wait(2)


# -- the lazy layer seam: listen on the layer only once something can send there --


class CountingLayer(InMemoryChannelLayer):
    """The memory layer, counting how often a consumer starts listening on it."""

    def __init__(self) -> None:
        super().__init__()
        self.receives = 0

    async def receive(self, channel: str) -> dict[str, Any]:
        self.receives += 1
        return await super().receive(channel)


@pytest.fixture
def counting_layer(memory_layer: None) -> CountingLayer:
    layer = CountingLayer()
    channel_layers.set("default", layer)
    return layer


class Echo(AsyncWebsocketConsumer):
    """Handles client events only; says its channel name when asked."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=self.channel_name if text_data == "name?" else text_data)


async def test_a_consumer_whose_name_nobody_has_does_not_listen(
    counting_layer: CountingLayer,
) -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    assert await comm.connect() == (True, None)
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "hi"
    await comm.disconnect()
    assert counting_layer.receives == 0


async def test_reading_channel_name_starts_listening(counting_layer: CountingLayer) -> None:
    comm = WebsocketCommunicator(Echo.as_asgi(), "/")
    await comm.connect()
    await comm.send_to(text_data="name?")
    name = await comm.receive_from()
    assert isinstance(name, str) and name.startswith("specific.")
    # Delivered and dispatched: Echo has no handler for it, as in Channels.
    await counting_layer.send(name, {"type": "nudge"})
    with pytest.raises(ValueError, match=r"no method nudge\(\)"):
        await comm.wait(2)
    assert counting_layer.receives >= 1


class Registered(AsyncConsumer):
    """A consumer that outside code addresses by its name (a registry, say)."""

    async def client_ready(self, message: dict[str, Any]) -> None:
        await self.send({"type": "ready"})

    async def chat_message(self, message: dict[str, Any]) -> None:
        await self.send({"type": "out", "text": message["text"]})


async def test_layer_handlers_mean_listening_from_the_start(memory_layer: None) -> None:
    consumer = Registered()
    comm = ApplicationCommunicator(consumer, channel_scope())
    await comm.send_input({"type": "client.ready"})
    assert await comm.receive_output() == {"type": "ready"}
    # Read outside any handler: no handler return can start the listening.
    await channel_layers["default"].send(
        consumer.channel_name, {"type": "chat.message", "text": "x"}
    )
    assert await comm.receive_output() == {"type": "out", "text": "x"}
    await comm.stop()


def test_which_classes_count_as_handling_layer_messages() -> None:
    assert not Echo._listens_from_start
    assert not Forgetful._listens_from_start  # ASGI event handlers only
    assert Registered._listens_from_start
    assert LayerListener._listens_from_start

    class OwnDispatch(AsyncConsumer):
        async def dispatch(self, message: dict[str, Any]) -> None:
            return None

    assert OwnDispatch._listens_from_start


async def test_cancelling_a_consumer_that_waits_for_a_stubborn_layer_cancels_it(
    memory_layer: None,
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    class Stubborn(InMemoryChannelLayer):
        async def receive(self, channel: str) -> dict[str, Any]:
            entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()  # ignores the cancellation for a while
                raise
            raise AssertionError("unreachable")

    channel_layers.set("default", Stubborn())
    app = type("F", (Forgetful,), {"chat_message": ignore}).as_asgi()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(app({"type": "websocket", "path": "/"}, inbox.get, sent.put))
    try:
        await inbox.put({"type": "websocket.connect"})
        await asyncio.wait_for(entered.wait(), 2)
        await inbox.put({"type": "websocket.disconnect", "code": 1000})
        assert (await asyncio.wait_for(sent.get(), 2))["type"] == "websocket.accept"
        assert (await asyncio.wait_for(sent.get(), 2))["type"] == "out"
        # The consumer now waits (bounded) for its layer reader to end; a
        # server shutting down cancels it there, and the cancel must hold.
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)
    finally:
        release.set()
        task.cancel()
