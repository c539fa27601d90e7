"""The pub/sub layer on a real Redis Cluster: sharded pub/sub (SSUBSCRIBE/SPUBLISH).

The conformance suite runs on it (``make_layer``'s ``pubsub-cluster`` backend,
minus ``conftest.PUBSUB_NOT_APPLICABLE``), and so does the two-server chat
test (``test_chat_e2e.py``'s ``chat_layer``). Here: the configuration, topics
spread over every primary, a lost connection resubscribing topics of several
slots, a receive() cancelled as its topic is confirmed, and the faults (a
slot migrated while subscribed; a primary killed), each on a cluster of its
own, printing what it measured (docs/layers.md quotes the numbers).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from sluiceway.layers import channel_layers, get_channel_layer
from sluiceway.layers.redis_pubsub import RedisPubSubChannelLayer
from sluiceway.layers.redis_pubsub_cluster import ClusterSubscriber
from sluiceway.layers.redis_pubsub_sub import Subscriber
from tests.layers.cluster_support import ClusterNode, RedisCluster, running_cluster
from tests.layers.test_cluster import _failed_over, _hand_over, _start_migration

T = 10.0


@pytest.fixture
async def layers(redis_cluster: RedisCluster) -> AsyncIterator[list[RedisPubSubChannelLayer]]:
    """Layers made by a test (``layers.append``), each closed afterwards."""
    made: list[RedisPubSubChannelLayer] = []
    yield made
    for layer in made:
        await layer.close()


def _layer(
    cluster: RedisCluster, made: list[RedisPubSubChannelLayer], prefix: str
) -> RedisPubSubChannelLayer:
    # A prefix of its own: another test's subscriptions, closed but maybe
    # not yet gone from Redis, are not counted.
    layer = RedisPubSubChannelLayer(cluster.seeds[:2], cluster=True, capacity=10_000, prefix=prefix)
    made.append(layer)
    return layer


async def _until(check: Callable[[], bool], what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)  # polling Redis's or the layer's state: no event to await


def _router(layer: RedisPubSubChannelLayer) -> ClusterSubscriber:
    subscriber = layer._state().subscribers[0]
    assert isinstance(subscriber, ClusterSubscriber)
    return subscriber


def _shard_channels(node: ClusterNode, pattern: str = "*") -> set[bytes]:
    """What ``node`` has SSUBSCRIBE'd subscribers for (``PUBSUB SHARDCHANNELS``)."""
    reply = node.command("PUBSUB", "SHARDCHANNELS", pattern)
    return {part for part in reply.split(b"\r\n") if part and part[:1] not in (b"*", b"$")}


def _spread(
    cluster: RedisCluster, layer: RedisPubSubChannelLayer, names: Iterator[str], per_node: int
) -> dict[int, list[str]]:
    """``per_node`` channel names from ``names`` whose topic is on each primary, by port."""
    by_port: dict[int, list[str]] = {n.port: [] for n in cluster.primaries()}
    slots = set()
    while any(len(v) < per_node for v in by_port.values()):
        name = next(names)
        slot = key_slot(layer._topic(name))
        if slot in slots:
            continue  # one topic per slot: several slots per node
        bucket = by_port[cluster.owner(slot).port]
        if len(bucket) < per_node:
            bucket.append(name)
            slots.add(slot)
    return by_port


async def _receiving(layer: RedisPubSubChannelLayer, channel: str) -> asyncio.Future[Any]:
    """A receive() of ``channel`` that Redis has confirmed."""
    waiting = asyncio.ensure_future(layer.receive(channel))
    topic = layer._topic(channel)
    router = _router(layer)
    await _until(lambda: router.listening(topic), f"the subscription of {channel}")
    return waiting


# -- configuration and placement ------------------------------------------------------------


async def test_env_url_builds_a_sharded_pubsub_layer(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SLUICEWAY_CHANNEL_LAYER", redis_cluster.url.replace("redis+", "redis+pubsub+", 1)
    )
    channel_layers.reset()
    try:
        layer = get_channel_layer()
        assert isinstance(layer, RedisPubSubChannelLayer) and layer.cluster
        waiting = await _receiving(layer, "env.channel")
        await layer.send("env.channel", {"type": "hello"})
        assert await asyncio.wait_for(waiting, T) == {"type": "hello"}
        # Sharded: nothing went through plain (broadcast) pub/sub.
        for node in redis_cluster.primaries():
            assert node.command("PUBSUB", "CHANNELS") == b"*0\r\n"
    finally:
        await channel_layers.close_all()
        channel_layers.reset()


async def test_topics_are_spread_over_every_primary(
    redis_cluster: RedisCluster, layers: list[RedisPubSubChannelLayer]
) -> None:
    receiver = _layer(redis_cluster, layers, "spread")
    sender = _layer(redis_cluster, layers, "spread")
    channels = _spread(redis_cluster, receiver, (f"spread.{i}" for i in range(10_000)), 2)
    waiting = {c: await _receiving(receiver, c) for v in channels.values() for c in v}
    inbox = await receiver.new_channel()
    await receiver.group_add("room", inbox)
    for node in redis_cluster.primaries():
        # Each primary holds exactly the topics whose slot it owns.
        expected = {receiver._topic(c) for c in channels[node.port]}
        for topic in (receiver._topic(inbox), receiver._group_topic("room")):
            if redis_cluster.owner(key_slot(topic)) is node:
                expected.add(topic)
        assert _shard_channels(node, "spread:*") == expected
        assert node.command("PUBSUB", "CHANNELS") == b"*0\r\n"
    assert len(_router(receiver).nodes) == 3  # one subscriber connection per primary
    for channel, future in waiting.items():
        await sender.send(channel, {"type": "m", "to": channel})
        assert (await asyncio.wait_for(future, T))["to"] == channel
    await sender.group_send("room", {"type": "g"})
    assert await asyncio.wait_for(receiver.receive(inbox), T) == {"type": "g"}
    publishers = sender._state().publishers[0]
    assert len(publishers.publishers) == 3  # type: ignore[union-attr]  # one SPUBLISH connection per primary
    assert sender.unheard_sends == 0


async def test_a_lost_connection_resubscribes_topics_of_several_slots(
    redis_cluster: RedisCluster, layers: list[RedisPubSubChannelLayer]
) -> None:
    receiver = _layer(redis_cluster, layers, "lost")
    sender = _layer(redis_cluster, layers, "lost")
    port, names = next(
        iter(_spread(redis_cluster, receiver, (f"lost.{i}" for i in range(10_000)), 3).items())
    )
    node = next(n for n in redis_cluster.nodes if n.port == port)
    for name in names:
        first = await _receiving(receiver, name)
        first.cancel()
        # Ended, not left waiting to take a message meant for the receive below.
        await asyncio.wait({first}, timeout=T)
        assert first.cancelled()
    shard = next(s for s in _router(receiver).nodes.values() if s.url.endswith(f":{port}/0"))
    node.command("CLIENT", "KILL", "TYPE", "pubsub")
    # Reconnected, and every topic (three slots: one SSUBSCRIBE each) confirmed again.
    await _until(lambda: shard.reconnects == 1, "the reconnection")
    topics = {receiver._topic(n) for n in names}
    await _until(lambda: _shard_channels(node, "lost:*") == topics, "the resubscription")
    for name in names:
        waiting = await _receiving(receiver, name)
        await sender.send(name, {"type": "m"})
        assert await asyncio.wait_for(waiting, T) == {"type": "m"}


async def test_a_receive_cancelled_as_redis_confirms_its_topic_ends_cancelled(
    redis_cluster: RedisCluster,
    layers: list[RedisPubSubChannelLayer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cancelled in the instant its subscription is confirmed, a receive() ends, and steals nothing.

    The test above cancels its first receives as soon as Redis confirms their
    topics. ``asyncio.wait_for`` (before Python 3.12), cancelled after what it
    awaits has completed but before it resumed, returns instead of raising: a
    subscribe() waiting that way swallowed the cancellation, the receive()
    went on waiting, and took the next message of its channel from the
    receive() meant to get it.
    """
    receiver = _layer(redis_cluster, layers, "confirmed")
    sender = _layer(redis_cluster, layers, "confirmed")
    channel = "confirmed.channel"
    topic = receiver._topic(channel)
    on_reply = Subscriber._on_reply
    first: asyncio.Future[Any] | None = None

    def cancel_on_confirmation(self: Subscriber, reply: Any) -> None:
        on_reply(self, reply)  # resolves the confirmation's futures: their callbacks are queued
        if first is not None and type(reply) is list and reply[:2] == [self.CONFIRMED, topic]:
            # Queued after them: the cancel lands once the subscribe's wait
            # is complete and before the receive() has resumed.
            asyncio.get_running_loop().call_soon(first.cancel)

    monkeypatch.setattr(Subscriber, "_on_reply", cancel_on_confirmation)
    first = asyncio.ensure_future(receiver.receive(channel))
    await asyncio.wait({first}, timeout=T)
    assert first.cancelled(), "the cancelled receive() is still waiting"
    waiting = await _receiving(receiver, channel)
    await sender.send(channel, {"type": "m"})
    assert await asyncio.wait_for(waiting, T) == {"type": "m"}


# -- faults, on a cluster of their own ------------------------------------------------------


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[RedisCluster]:
    """A cluster of its own: the fault tests move its slots and kill its nodes."""
    yield from running_cluster()


async def test_slot_migrated_while_subscribed(
    fault_cluster: RedisCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    sender = RedisPubSubChannelLayer(fault_cluster.seeds[:2], cluster=True, capacity=10_000)
    receiver = RedisPubSubChannelLayer(fault_cluster.seeds[:2], cluster=True, capacity=10_000)
    try:
        channel = "moving.channel"
        topic = receiver._topic(channel)
        slot = key_slot(topic)
        got: list[int] = []
        first = await _receiving(receiver, channel)

        async def consume() -> None:
            got.append((await first)["i"])
            while True:
                got.append((await receiver.receive(channel))["i"])

        consumer = asyncio.ensure_future(consume())
        sent = 0

        async def send() -> None:
            nonlocal sent
            await asyncio.wait_for(sender.send(channel, {"type": "m", "i": sent}), T)
            sent += 1

        while sent < 20:
            await send()
        await _until(lambda: len(got) == 20, "the messages before the move")
        source, target = _start_migration(fault_cluster, slot)
        # Pub/sub channels are not keys: nothing to MIGRATE; the source
        # serves the slot until it is handed over.
        while sent < 40:
            await send()
        moved_at = time.monotonic()
        moved_from = sent
        _hand_over(fault_cluster, slot, target)
        # The source dropped its subscribers of the slot (an sunsubscribe
        # push); the layer follows to the target. Sends go on meanwhile.
        while topic not in _shard_channels(target):
            await send()
            assert time.monotonic() - moved_at < T, "the subscription did not follow the slot"
        followed_s = time.monotonic() - moved_at
        after_from = sent
        while sent < after_from + 20:
            await send()
        await _until(lambda: set(range(after_from, sent)) <= set(got), "the messages after")
        consumer.cancel()
        lost = sorted(set(range(sent)) - set(got))
        with capsys.disabled():
            print(
                f"\n[pub/sub slot migration] slot {slot} {source.port}->{target.port}:"
                f" followed in {followed_s * 1000:.0f} ms; sent during the hand-over"
                f" {after_from - moved_from}, lost {len(lost)} {lost}"
            )
        assert topic not in _shard_channels(source)
        assert set(range(moved_from)) <= set(got)  # nothing lost before the hand-over
        assert len(got) == len(set(got))  # none twice
        assert all(moved_from <= i < after_from for i in lost)
    finally:
        await sender.close()
        await receiver.close()


async def test_a_stale_slot_map_is_answered_with_moved(
    fault_cluster: RedisCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The slot moved after the layers read the map: SSUBSCRIBE and SPUBLISH answer MOVED."""
    sender = RedisPubSubChannelLayer(fault_cluster.seeds[:2], cluster=True)
    receiver = RedisPubSubChannelLayer(fault_cluster.seeds[:2], cluster=True)
    try:
        # Both read the slot map (a channel of another slot each).
        (await _receiving(receiver, "stale.other")).cancel()
        await sender.send("stale.other", {"type": "m"})
        channel = "stale.channel"
        slot = key_slot(receiver._topic(channel))
        assert slot != key_slot(receiver._topic("stale.other"))
        source, target = _start_migration(fault_cluster, slot)
        _hand_over(fault_cluster, slot, target)
        # The receiver subscribes at the source, by its map; MOVED sends it
        # on, with no reconnection (which would lose the node's other topics
        # for a while).
        caplog.set_level(logging.WARNING, "sluiceway.layers.redis_pubsub")
        waiting = await _receiving(receiver, channel)
        assert not [r for r in caplog.records if "reconnecting" in r.getMessage()]
        assert receiver._topic(channel) in _shard_channels(target)
        assert receiver._topic(channel) not in _shard_channels(source)
        await sender.send(channel, {"type": "m", "moved": True})
        assert await asyncio.wait_for(waiting, T) == {"type": "m", "moved": True}
        assert sender.unheard_sends == 0  # "stale.other" stays subscribed until expiry_s
    finally:
        await sender.close()
        await receiver.close()


async def test_primary_killed_while_subscribed(
    fault_cluster: RedisCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fault_cluster.wait_ok()
    sender = RedisPubSubChannelLayer(fault_cluster.seeds, cluster=True, capacity=10_000)
    receiver = RedisPubSubChannelLayer(fault_cluster.seeds, cluster=True, capacity=10_000)
    try:
        by_port = _spread(fault_cluster, receiver, (f"kill.{i}" for i in range(10_000)), 1)
        channels = {v[0]: port for port, v in by_port.items()}
        got: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)

        async def consume(channel: str, first: asyncio.Future[Any]) -> None:
            got[channel].append(((await first)["i"], time.monotonic()))
            while True:
                got[channel].append(((await receiver.receive(channel))["i"], time.monotonic()))

        consumers = [
            asyncio.ensure_future(consume(c, await _receiving(receiver, c))) for c in channels
        ]
        outcome: dict[tuple[str, int], bool] = {}  # (channel, i) -> send returned
        i = 0

        async def send_round() -> None:
            nonlocal i

            async def one(channel: str) -> None:
                try:
                    await asyncio.wait_for(sender.send(channel, {"type": "m", "i": i}), T)
                    outcome[channel, i] = True
                except Exception:
                    outcome[channel, i] = False

            await asyncio.gather(*(one(c) for c in channels))
            i += 1
            await asyncio.sleep(0.01)  # a steady rate of sends, not a wait for an event

        while i < 20:
            await send_round()
        victim = fault_cluster.owner(key_slot(receiver._topic(next(iter(channels)))))
        on_victim = next(c for c, port in channels.items() if port == victim.port)
        survivors = [c for c in channels if c != on_victim]
        killed_at = time.monotonic()
        killed_from = i
        victim.kill()
        while not _failed_over(fault_cluster):
            await send_round()
            assert time.monotonic() - killed_at < 30, "no replica took over"
        failover_s = time.monotonic() - killed_at
        # Until the killed primary's channel hears a message sent after the kill.
        while not any(n >= killed_from for n, _ in got[on_victim]):
            await send_round()
            assert time.monotonic() - killed_at < 30, "the subscriber never followed"
        first_s = min(at for n, at in got[on_victim] if n >= killed_from) - killed_at
        recovered_from = i
        for _ in range(20):
            await send_round()
        await _until(
            lambda: all(set(range(recovered_from, i)) <= {n for n, _ in got[c]} for c in channels),
            "every channel hearing the sends after the recovery",
        )
        for task in consumers:
            task.cancel()
        during = range(killed_from, recovered_from)

        def missed(channel: str) -> int:
            return len(set(during) - {n for n, _ in got[channel]})

        with capsys.disabled():
            print(
                f"\n[pub/sub primary killed] failover {failover_s:.1f}s; first delivery"
                f" on the killed primary's channel {first_s:.1f}s after the kill;"
                f" rounds meanwhile {len(during)}: there missed {missed(on_victim)}"
                f" (sends raised {sum(not outcome[on_victim, n] for n in during)}),"
                f" on the survivors missed {[missed(c) for c in survivors]}"
                f" (raised {[sum(not outcome[c, n] for n in during) for c in survivors]})"
            )
        for channel in channels:
            heard = [n for n, _ in got[channel]]
            assert len(heard) == len(set(heard)), channel  # none twice
            assert set(range(killed_from)) <= set(heard), channel  # all before the kill
        # The promoted replica serves the killed primary's topic now.
        promoted = fault_cluster.owner(key_slot(receiver._topic(on_victim)))
        assert promoted is not victim
        assert receiver._topic(on_victim) in _shard_channels(promoted)
    finally:
        # The cluster is this module's own: left with the node dead, closed after the module.
        await sender.close()
        await receiver.close()
