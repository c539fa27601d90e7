"""Pieces of the layers that need no server: ring, serializer, configuration, store."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

from sluiceway import layers
from sluiceway.errors import ConfigError, InvalidMessage
from sluiceway.layers import (
    ChannelLayerManager,
    InMemoryChannelLayer,
    get_channel_layer,
    layer_config_from_url,
)
from sluiceway.layers.base import non_local_name
from sluiceway.layers.memory import ChannelStore
from sluiceway.layers.serializers import MessageSerializer
from sluiceway.layers.sharding import HashRing

# -- hash ring -----------------------------------------------------------------------------


def test_ring_spreads_names_evenly() -> None:
    ring = HashRing(["redis://a:6379/0", "redis://b:6379/0", "redis://c:6379/0"])
    counts = Counter(ring.index_for(f"chat.room.{i}") for i in range(30000))
    assert set(counts) == {0, 1, 2}
    assert max(counts.values()) / min(counts.values()) < 1.3


def test_ring_moves_few_names_when_a_host_is_added() -> None:
    hosts = ["redis://a:6379/0", "redis://b:6379/0", "redis://c:6379/0"]
    before = HashRing(hosts)
    after = HashRing([*hosts, "redis://d:6379/0"])
    names = [f"group.{i}" for i in range(20000)]
    moved = sum(hosts[before.index_for(n)] != [*hosts, "d"][after.index_for(n)] for n in names)
    assert moved / len(names) < 0.35  # about 1/4 should move, never most of them


def test_ring_ignores_host_order() -> None:
    a = HashRing(["redis://a:1/0", "redis://b:1/0"])
    b = HashRing(["redis://b:1/0", "redis://a:1/0"])
    names = [f"n{i}" for i in range(1000)]
    assert [("ab"[a.index_for(n)]) for n in names] == [("ba"[b.index_for(n)]) for n in names]


def test_process_local_names_hash_by_their_non_local_part() -> None:
    assert non_local_name("specific.abc!xyz") == "specific.abc!"
    assert non_local_name("plain") == "plain"
    ring = HashRing([f"redis://h{i}:6379/0" for i in range(5)])
    assert len({ring.index_for(non_local_name(f"specific.abc!{i}")) for i in range(100)}) == 1


def test_ring_rejects_duplicates_and_empty() -> None:
    with pytest.raises(ValueError):
        HashRing([])
    with pytest.raises(ValueError):
        HashRing(["redis://a", "redis://a"])


# -- serializer ----------------------------------------------------------------------------


def test_serializer_roundtrip_and_limits() -> None:
    ser = MessageSerializer(max_message_bytes=100)
    assert ser.loads(ser.dumps({"type": "t", "b": b"\x00"})) == {"type": "t", "b": b"\x00"}
    with pytest.raises(InvalidMessage, match="limit is 100"):
        ser.dumps({"type": "t", "x": "y" * 200})
    with pytest.raises(InvalidMessage, match="serialised"):
        ser.dumps({"type": "t", "x": {1, 2}})
    with pytest.raises(InvalidMessage):
        ser.loads(b"\xc1garbage")


def test_serializer_encryption_rotation() -> None:
    old = MessageSerializer(["k1"])
    new = MessageSerializer(["k2", "k1"])
    sealed = old.dumps({"type": "t", "v": 1})
    assert b"type" not in sealed
    assert new.loads(sealed) == {"type": "t", "v": 1}
    with pytest.raises(InvalidMessage, match="decrypt"):
        MessageSerializer(["k3"]).loads(sealed)
    with pytest.raises(ConfigError):
        MessageSerializer("one-key-not-a-list")  # type: ignore[arg-type]


# -- configuration -------------------------------------------------------------------------


def test_urls() -> None:
    assert layer_config_from_url("none") is None
    assert layer_config_from_url("memory://")["BACKEND"].endswith("InMemoryChannelLayer")  # type: ignore[index]
    cfg = layer_config_from_url("redis://h1:6379/0,h2:6380/0")
    assert cfg is not None and cfg["CONFIG"]["hosts"] == ["redis://h1:6379/0", "redis://h2:6380/0"]
    tls = layer_config_from_url("rediss://:pw@h1:6379/0")
    assert tls is not None and tls["CONFIG"]["hosts"] == ["rediss://:pw@h1:6379/0"]
    with pytest.raises(ConfigError, match="SLUICEWAY_CHANNEL_LAYER"):
        layer_config_from_url("amqp://x")


def test_default_is_in_memory_and_env_can_disable(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = ChannelLayerManager()
    monkeypatch.delenv("SLUICEWAY_CHANNEL_LAYER", raising=False)
    assert isinstance(manager["default"], InMemoryChannelLayer)
    assert "other" not in manager
    monkeypatch.setenv("SLUICEWAY_CHANNEL_LAYER", "none")
    manager.reset()
    assert "default" not in manager
    with pytest.raises(KeyError):
        manager["default"]
    monkeypatch.setenv("SLUICEWAY_CHANNEL_LAYER", "redis://127.0.0.1:1/0")
    manager.reset()
    layer: Any = manager["default"]
    assert type(layer).__name__ == "RedisChannelLayer" and layer.prefix == "sluiceway"


def test_get_channel_layer_returns_none_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICEWAY_CHANNEL_LAYER", "none")
    layers.channel_layers.reset()
    try:
        assert get_channel_layer() is None
        assert get_channel_layer("nope") is None
    finally:
        layers.channel_layers.reset()


def test_channels_style_settings_move_over_unchanged() -> None:
    class Settings:
        CHANNEL_LAYERS = {  # noqa: RUF012 - a settings module's shape
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [("127.0.0.1", 6379)], "capacity": 7, "expiry": 5},
            },
            "local": {
                "BACKEND": "channels.layers.InMemoryChannelLayer",
                "CONFIG": {"group_expiry": 9},
            },
            "url": "memory://",
            "off": None,
        }

    manager = ChannelLayerManager()
    manager.configure(Settings())
    default: Any = manager["default"]
    assert default.capacity == 7 and default.expiry_s == 5.0
    local: Any = manager["local"]
    assert isinstance(local, InMemoryChannelLayer) and local.group_expiry_s == 9.0
    assert isinstance(manager["url"], InMemoryChannelLayer)
    assert "off" not in manager
    replacement = InMemoryChannelLayer()
    manager.set("default", replacement)
    assert manager["default"] is replacement


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"CONFIG": {}}, "no BACKEND"),
        ({"BACKEND": "nowhere.Layer"}, "cannot import"),
        ({"BACKEND": "memory", "CONFIG": {"capacity": 0}}, "capacity"),
        ({"BACKEND": "memory", "CONFIG": {"bogus": 1}}, "bogus"),
        ({"BACKEND": "redis", "CONFIG": {"prefix": "bad prefix"}}, "prefix"),
    ],
)
def test_bad_configuration_is_a_config_error(entry: dict[str, Any], needle: str) -> None:
    manager = ChannelLayerManager()
    manager.configure({"default": entry})
    with pytest.raises(ConfigError, match=needle):
        manager["default"]


# -- the in-memory store -------------------------------------------------------------------


async def test_store_expiry_touches_only_due_channels() -> None:
    """Expiry is heap driven: idle channels are not scanned, expired ones are freed."""
    store = ChannelStore(lambda _: 10)
    now = time.monotonic()
    for i in range(1000):
        assert store.put(f"c{i}", {"type": "t"}, now + 60)
    store.put("soon", {"type": "t"}, now + 0.05)
    assert len(store._heap) == 1001
    await asyncio.sleep(0.1)
    assert store.purge_expired() == 1
    assert len(store) == 1000 and store.depth("soon") == 0
    # One heap entry per channel, however many messages it holds...
    for _ in range(5):
        store.put("c0", {"type": "t"}, now + 60)
    assert len(store._heap) == 1000
    # ...and however often a quiet channel's queue is emptied and made again.
    for _ in range(100):
        store.put("quiet", {"type": "t"}, time.monotonic() + 60)
        await store.get("quiet")
    assert len(store._heap) == 1001


async def test_store_refuses_when_full_and_keeps_the_oldest() -> None:
    store = ChannelStore(lambda _: 2)
    deadline = time.monotonic() + 60
    assert store.put("c", {"type": "t", "i": 0}, deadline)
    assert store.put("c", {"type": "t", "i": 1}, deadline)
    assert not store.put("c", {"type": "t", "i": 2}, deadline)
    assert (await store.get("c"))["i"] == 0


async def test_store_forgets_idle_channels() -> None:
    store = ChannelStore(lambda _: 2)
    store.put("c", {"type": "t"}, time.monotonic() + 60)
    await store.get("c")
    # An emptied queue stays until its heap entry comes due (a channel used in
    # turns keeps its queue), then it is forgotten: bounded by the expiry window.
    assert len(store) == 1
    store.purge_expired(time.monotonic() + 61)
    assert len(store) == 0
    waiter = asyncio.ensure_future(store.get("w"))
    await asyncio.sleep(0)
    assert len(store) == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert len(store) == 0


async def test_store_woken_receiver_cancelled_passes_the_message_on() -> None:
    store = ChannelStore(lambda _: 5)
    first = asyncio.ensure_future(store.get("c"))
    second = asyncio.ensure_future(store.get("c"))
    await asyncio.sleep(0)
    store.put("c", {"type": "t"}, time.monotonic() + 60)  # wakes `first`...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    assert (await asyncio.wait_for(second, 5))["type"] == "t"


async def test_memory_group_never_sent_to_sheds_expired_members() -> None:
    layer = InMemoryChannelLayer(group_expiry_s=0.2)
    for i in range(63):
        await layer.group_add("quiet", f"gone.{i}")
    await asyncio.sleep(0.3)  # expiry is time passing
    layer.group_expiry_s = 60.0
    await layer.group_add("quiet", "here")  # the 64th: the group doubled
    assert list(layer._groups["quiet"]) == ["here"]
