"""One suite, every backend: the behaviour an app may rely on, whatever the layer.

Parametrised over ``memory`` and ``redis`` by the ``make_layer`` fixture.
"""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from sluiceway.errors import ChannelFull, InvalidChannelName, InvalidMessage
from tests.layers.conftest import LayerFactory

T = 5.0  # seconds any single wait may take before the test fails


async def test_send_receive_roundtrip(make_layer: LayerFactory) -> None:
    layer = make_layer()
    message = {
        "type": "test.message",
        "text": "hé",
        "blob": b"\x00\xff",
        "n": 3,
        "f": 1.5,
        "nested": {"list": [1, 2, None, True]},
    }
    await layer.send("test-channel.1", message)
    received = await asyncio.wait_for(layer.receive("test-channel.1"), T)
    assert received == message
    assert received is not message


async def test_sender_edits_after_send_are_not_seen(make_layer: LayerFactory) -> None:
    layer = make_layer()
    message = {"type": "m", "items": [1]}
    await layer.send("c", message)
    message["items"].append(2)
    assert (await asyncio.wait_for(layer.receive("c"), T))["items"] == [1]


async def test_order_is_kept_per_channel(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=500)
    for i in range(200):
        await layer.send("ordered", {"type": "n", "i": i})
    got = [(await asyncio.wait_for(layer.receive("ordered"), T))["i"] for _ in range(200)]
    assert got == list(range(200))


async def test_receive_waits_for_a_later_send(make_layer: LayerFactory) -> None:
    layer = make_layer()
    waiting = asyncio.ensure_future(layer.receive("later"))
    await asyncio.sleep(0.05)  # let the receiver block first
    assert not waiting.done()
    await layer.send("later", {"type": "late"})
    assert (await asyncio.wait_for(waiting, T))["type"] == "late"


async def test_new_channel_names_are_unique_and_process_local(make_layer: LayerFactory) -> None:
    layer = make_layer()
    names = {await layer.new_channel() for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.startswith("specific.") and "!" in name
    custom = await layer.new_channel("worker")
    assert custom.startswith("worker.") and "!" in custom


async def test_process_local_channels_are_independent(make_layer: LayerFactory) -> None:
    layer = make_layer()
    a, b = await layer.new_channel(), await layer.new_channel()
    await layer.send(a, {"type": "to.a"})
    await layer.send(b, {"type": "to.b"})
    await layer.send(a, {"type": "to.a2"})
    assert (await asyncio.wait_for(layer.receive(b), T))["type"] == "to.b"
    assert (await asyncio.wait_for(layer.receive(a), T))["type"] == "to.a"
    assert (await asyncio.wait_for(layer.receive(a), T))["type"] == "to.a2"


async def test_groups(make_layer: LayerFactory) -> None:
    layer = make_layer()
    c1, c2, c3 = [await layer.new_channel() for _ in range(3)]
    await layer.group_add("room", c1)
    await layer.group_add("room", c2)
    await layer.group_add("room", "plain.member")
    await layer.group_add("other", c3)
    await layer.group_send("room", {"type": "chat.message", "text": "hi"})
    for channel in (c1, c2, "plain.member"):
        msg = await asyncio.wait_for(layer.receive(channel), T)
        assert msg == {"type": "chat.message", "text": "hi"}
    await layer.group_discard("room", c2)
    await layer.group_send("room", {"type": "second"})
    assert (await asyncio.wait_for(layer.receive(c1), T))["type"] == "second"
    waiting = asyncio.ensure_future(layer.receive(c2))
    await layer.send(c2, {"type": "direct"})
    assert (await asyncio.wait_for(waiting, T))["type"] == "direct"  # "second" never reached c2
    waiting3 = asyncio.ensure_future(layer.receive(c3))
    await layer.send(c3, {"type": "direct"})
    assert (await asyncio.wait_for(waiting3, T))["type"] == "direct"


async def test_group_members_get_their_own_copy(make_layer: LayerFactory) -> None:
    layer = make_layer()
    await layer.group_add("g", "a")
    await layer.group_add("g", "b")
    await layer.group_send("g", {"type": "t", "k": 1})
    first = await asyncio.wait_for(layer.receive("a"), T)
    first["k"] = 99
    assert (await asyncio.wait_for(layer.receive("b"), T))["k"] == 1


async def test_group_send_and_discard_on_unknown_group_are_no_ops(make_layer: LayerFactory) -> None:
    layer = make_layer()
    await layer.group_send("nobody", {"type": "t"})
    await layer.group_discard("nobody", "x")


async def test_channel_full(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=3)
    for i in range(3):
        await layer.send("small", {"type": "t", "i": i})
    with pytest.raises(ChannelFull):
        await layer.send("small", {"type": "t", "i": 3})
    assert (await asyncio.wait_for(layer.receive("small"), T))["i"] == 0
    await layer.send("small", {"type": "t", "i": 4})  # room again after a receive


async def test_capacity_overrides_by_glob_and_regex(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=5, channel_capacity={"tiny.*": 1, re.compile(r"^big\d$"): 8})
    await layer.send("tiny.a", {"type": "t"})
    with pytest.raises(ChannelFull):
        await layer.send("tiny.a", {"type": "t"})
    for _ in range(8):
        await layer.send("big1", {"type": "t"})
    with pytest.raises(ChannelFull):
        await layer.send("big1", {"type": "t"})
    for _ in range(5):
        await layer.send("normal", {"type": "t"})
    with pytest.raises(ChannelFull):
        await layer.send("normal", {"type": "t"})


async def test_group_send_skips_full_member_and_counts_it(
    make_layer: LayerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    layer = make_layer(capacity=1)
    full, ok = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", full)
    await layer.group_add("g", ok)
    await layer.send(full, {"type": "filler"})
    with caplog.at_level(logging.WARNING, logger="sluiceway"):
        await layer.group_send("g", {"type": "fanout"})
    assert layer.group_send_full_skips == 1
    assert any("full" in r.getMessage() for r in caplog.records)
    assert (await asyncio.wait_for(layer.receive(ok), T))["type"] == "fanout"
    assert (await asyncio.wait_for(layer.receive(full), T))["type"] == "filler"


async def test_message_expires_in_the_queue(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry_s=0.2, capacity=2)
    local = await layer.new_channel()
    for channel in ("exp", local):
        await layer.send(channel, {"type": "old"})
        await layer.send(channel, {"type": "old"})
    await asyncio.sleep(0.3)  # expiry is about time passing: nothing to await instead
    # The new messages must outlive any stall of a busy machine.
    layer.expiry_s = 60.0
    # Expired messages no longer count against capacity...
    await layer.send("exp", {"type": "new"})
    await layer.send(local, {"type": "new"})
    # ...and are never delivered.
    assert (await asyncio.wait_for(layer.receive("exp"), T))["type"] == "new"
    assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "new"


async def test_group_membership_expires(make_layer: LayerFactory) -> None:
    layer = make_layer(group_expiry_s=0.2)
    await layer.group_add("g", "stale")
    await asyncio.sleep(0.3)
    layer.group_expiry_s = 60.0  # "fresh" must outlive any stall of a busy machine
    await layer.group_add("g", "fresh")
    await layer.group_send("g", {"type": "t"})
    assert (await asyncio.wait_for(layer.receive("fresh"), T))["type"] == "t"
    waiting = asyncio.ensure_future(layer.receive("stale"))
    await layer.send("stale", {"type": "direct"})
    assert (await asyncio.wait_for(waiting, T))["type"] == "direct"


async def test_flush(make_layer: LayerFactory) -> None:
    layer = make_layer()
    local = await layer.new_channel()
    await layer.send("f", {"type": "t"})
    await layer.send(local, {"type": "t"})
    await layer.group_add("g", "f")
    await layer.flush()
    await layer.group_send("g", {"type": "after.flush.group"})
    await layer.send("f", {"type": "after"})
    await layer.send(local, {"type": "after"})
    assert (await asyncio.wait_for(layer.receive("f"), T))["type"] == "after"
    assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "after"


async def test_many_concurrent_receivers_each_message_once(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=100)
    receivers = [asyncio.ensure_future(layer.receive("busy")) for _ in range(40)]
    await asyncio.sleep(0.05)
    for i in range(40):
        await layer.send("busy", {"type": "t", "i": i})
    done = await asyncio.wait_for(asyncio.gather(*receivers), T)
    assert sorted(m["i"] for m in done) == list(range(40))


async def test_cancelled_receiver_loses_nothing(make_layer: LayerFactory) -> None:
    layer = make_layer()
    local = await layer.new_channel()
    for channel in ("cancel.me", local):
        doomed = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.05)
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        await layer.send(channel, {"type": "kept"})
        assert (await asyncio.wait_for(layer.receive(channel), T))["type"] == "kept"


async def test_extensions(make_layer: LayerFactory) -> None:
    layer = make_layer()
    assert "groups" in layer.extensions and "flush" in layer.extensions


@pytest.mark.parametrize(
    "name", ["", "has space", "ü", "a" * 100, "two!bangs!", "slash/x", 5, None, b"bytes"]
)
async def test_bad_channel_names(make_layer: LayerFactory, name: object) -> None:
    layer = make_layer()
    with pytest.raises(InvalidChannelName):
        await layer.send(name, {"type": "t"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # what Channels raises: apps catching it still work
        await layer.receive(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a!b", "a" * 100, "sp ace"])
async def test_bad_group_names(make_layer: LayerFactory, name: str) -> None:
    layer = make_layer()
    with pytest.raises(InvalidChannelName):
        await layer.group_add(name, "ok")
    with pytest.raises(InvalidChannelName):
        await layer.group_send(name, {"type": "t"})


async def test_good_names_at_the_limit(make_layer: LayerFactory) -> None:
    layer = make_layer()
    name = "a" * 99
    await layer.send(name, {"type": "t"})
    assert (await asyncio.wait_for(layer.receive(name), T))["type"] == "t"
    await layer.group_add(name, name)


@pytest.mark.parametrize(
    "message",
    [
        ["not", "a", "dict"],
        {"no": "type"},
        {"type": 5},
        {"type": "t", "__asgi_channel__": "x"},
        {"type": "t", "value": object()},
        {"type": "t", "big": b"x" * 2_000_000},
        # Over the limit through the number of keys, not the size of any value.
        {"type": "t", **{f"k{i}": i for i in range(150_000)}},
        {"type": "t", **{"é" * 40 + str(i): None for i in range(14_000)}},
    ],
    ids=[
        "list",
        "no-type",
        "int-type",
        "reserved",
        "object",
        "big-bytes",
        "many-keys",
        "wide-keys",
    ],
)
async def test_bad_messages(make_layer: LayerFactory, message: object) -> None:
    layer = make_layer()
    with pytest.raises(InvalidMessage):
        await layer.send("c", message)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage):
        await layer.group_send("g", message)  # type: ignore[arg-type]


async def test_group_send_honours_capacity_overrides(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=5, channel_capacity={"tiny.*": 1})
    await layer.group_add("mixed", "tiny.a")
    await layer.group_add("mixed", "roomy.b")
    await layer.group_send("mixed", {"type": "t", "i": 1})
    await layer.group_send("mixed", {"type": "t", "i": 2})
    assert layer.group_send_full_skips == 1  # only tiny.a's second message
    assert (await asyncio.wait_for(layer.receive("tiny.a"), T))["i"] == 1
    assert [(await asyncio.wait_for(layer.receive("roomy.b"), T))["i"] for _ in range(2)] == [1, 2]
