"""The Redis layer on a real Redis Cluster (three primaries, three replicas).

The conformance suite runs on the cluster too (``make_layer``'s ``cluster``
backend), and so does the two-server chat test (``test_chat_e2e.py``'s
``chat_layer``); here: the configuration, where keys land, what a group send costs,
and the faults (a slot migrated while consumers receive; a primary killed
while a group send is in flight). The fault tests run on a cluster of their
own, and print what they measured (docs/layers.md quotes the numbers).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.crc import key_slot

from sluiceway.layers import channel_layers, get_channel_layer
from sluiceway.layers.redis import RedisChannelLayer
from tests.layers.cluster_support import RedisCluster, running_cluster

T = 10.0


@pytest.fixture
async def layers(redis_cluster: RedisCluster) -> AsyncIterator[list[RedisChannelLayer]]:
    """Layers made by a test (``layers.append``), each closed afterwards."""
    redis_cluster.flushall()
    made: list[RedisChannelLayer] = []
    yield made
    for layer in made:
        await layer.close()


def _layer(
    cluster: RedisCluster, made: list[RedisChannelLayer], **options: Any
) -> RedisChannelLayer:
    layer = RedisChannelLayer(cluster.seeds[:2], cluster=True, **options)
    made.append(layer)
    return layer


def _owner_port(cluster: RedisCluster, layer: RedisChannelLayer, name: str) -> int:
    """The port of the primary that holds the keys of ``name`` (a non-local name)."""
    return cluster.owner(key_slot(layer._heads[layer._route(name)].encode())).port


def _spread(
    cluster: RedisCluster, layer: RedisChannelLayer, names: Iterator[str], per_node: int
) -> dict[int, list[str]]:
    """``per_node`` names from ``names`` on each primary, by primary port."""
    by_port: dict[int, list[str]] = {n.port: [] for n in cluster.primaries()}
    while any(len(v) < per_node for v in by_port.values()):
        name = next(names)
        bucket = by_port[_owner_port(cluster, layer, name)]
        if len(bucket) < per_node:
            bucket.append(name)
    return by_port


def _evalsha_calls(cluster: RedisCluster) -> dict[int, int]:
    calls = {}
    for node in cluster.primaries():
        stats = node.command("INFO", "commandstats").decode()
        line = next((x for x in stats.splitlines() if x.startswith("cmdstat_evalsha:")), "")
        calls[node.port] = int(line.split("calls=")[1].split(",")[0]) if line else 0
    return calls


# -- configuration --------------------------------------------------------------------------


async def test_env_url_builds_a_cluster_layer(
    redis_cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_cluster.flushall()
    monkeypatch.setenv("SLUICEWAY_CHANNEL_LAYER", redis_cluster.url)
    channel_layers.reset()
    try:
        layer = get_channel_layer()
        assert isinstance(layer, RedisChannelLayer)
        assert layer.cluster and layer._ring is None  # the hash ring is not used
        await layer.send("env.channel", {"type": "hello"})
        assert await asyncio.wait_for(layer.receive("env.channel"), T) == {"type": "hello"}
    finally:
        await channel_layers.close_all()
        channel_layers.reset()


async def test_channels_settings_dict_builds_a_cluster_layer(redis_cluster: RedisCluster) -> None:
    redis_cluster.flushall()
    host, port = "127.0.0.1", redis_cluster.nodes[3].port  # a replica is a seed as good as any
    channel_layers.configure(
        {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [(host, port)], "cluster": True, "expiry": 30},
            }
        }
    )
    try:
        layer = get_channel_layer()
        assert isinstance(layer, RedisChannelLayer) and layer.cluster
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "hello"})
        assert await asyncio.wait_for(layer.receive(channel), T) == {"type": "hello"}
    finally:
        await channel_layers.close_all()
        channel_layers.reset()


# -- key placement and cost -----------------------------------------------------------------


async def test_each_operation_keeps_its_keys_in_one_slot(
    redis_cluster: RedisCluster, layers: list[RedisChannelLayer]
) -> None:
    layer = _layer(redis_cluster, layers, prefix="slots")
    local = await layer.new_channel()
    await layer.send(local, {"type": "t"})  # the inbox and its capacity counts
    await layer.send("plain.channel", {"type": "t"})
    await layer.group_add("room", local)
    await layer.group_add("room", "plain.channel")
    keys = [
        key.decode()
        for node in redis_cluster.primaries()
        for key in node.command("KEYS", "slots:*").split(b"\r\n")
        if key.startswith(b"slots:")
    ]
    inbox = local[: local.index("!") + 1]
    slot_of = {key: key_slot(key.encode()) for key in keys}
    by_suffix = {key.split("}:", 1)[1]: slot for key, slot in slot_of.items()}
    # A process inbox and its capacity counts share a slot; so do each
    # member's queue and the membership entry that points at it.
    assert by_suffix["c:" + inbox] == by_suffix["n:" + inbox]
    group_slots = {slot for key, slot in slot_of.items() if key.endswith("}:g:room")}
    assert group_slots == {by_suffix["c:" + inbox], by_suffix["c:plain.channel"]}
    assert await asyncio.wait_for(layer.receive(local), T) == {"type": "t"}


async def test_group_send_costs_one_call_per_primary(
    redis_cluster: RedisCluster, layers: list[RedisChannelLayer]
) -> None:
    layer = _layer(redis_cluster, layers, prefix="cost")
    names = (f"member.{i}" for i in range(10_000))
    plain = _spread(redis_cluster, layer, names, per_node=3)
    # Process-local members whose inboxes are on every primary.
    prefixes = (f"p{i}" for i in range(10_000))
    inbox_prefixes = _spread(
        redis_cluster, layer, (f"{p}.{layer._state().client_id}!" for p in prefixes), 1
    )
    local = [
        await layer.new_channel(name.split(".")[0]) for v in inbox_prefixes.values() for name in v
    ]
    members = [m for v in plain.values() for m in v] + local
    for member in members:
        await layer.group_add("everyone", member)
    await layer.group_send("warm-up", {"type": "t"})  # loads the script on every node
    for node in redis_cluster.primaries():
        node.command("CONFIG", "RESETSTAT")
    await layer.group_send("everyone", {"type": "fan", "n": 1})
    # One EVALSHA on each primary, for 13 members on three of them.
    assert _evalsha_calls(redis_cluster) == {n.port: 1 for n in redis_cluster.primaries()}
    for member in members:
        assert await asyncio.wait_for(layer.receive(member), T) == {"type": "fan", "n": 1}


async def test_a_large_group_is_walked_per_bucket(
    redis_cluster: RedisCluster, layers: list[RedisChannelLayer]
) -> None:
    layer = _layer(redis_cluster, layers, prefix="large", capacity=5)
    # 1,100 members in one inbox: more than one call's budget on its node.
    local = [await layer.new_channel() for _ in range(1100)]
    members = [*local, "plain.a", "plain.b"]
    for member in members:
        await layer.group_add("big", member)
    await layer.group_send("big", {"type": "big"})
    for member in members:
        assert await asyncio.wait_for(layer.receive(member), T) == {"type": "big"}
    # Exactly once each: nothing more is waiting.
    await layer.send(local[0], {"type": "next"})
    assert (await asyncio.wait_for(layer.receive(local[0]), T))["type"] == "next"


# -- faults ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[RedisCluster]:
    """A cluster of its own: the fault tests kill its nodes and move its slots."""
    yield from running_cluster()


def _failed_over(cluster: RedisCluster) -> bool:
    """Three live primaries again, and every live node says cluster_state:ok."""
    try:
        live = [n for n in cluster.nodes if n.alive]
        return len(cluster.primaries()) == 3 and all(
            n.info().get("cluster_state") == "ok" for n in live
        )
    except OSError:
        return False


def _start_migration(cluster: RedisCluster, slot: int) -> tuple[Any, Any]:
    """Mark ``slot`` as moving from its owner to another primary; (source, target)."""
    source = cluster.owner(slot)
    target = next(n for n in cluster.primaries() if n is not source)
    target.command("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source.node_id())
    source.command("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target.node_id())
    return source, target


def _move_key(source: Any, target: Any, key: str) -> None:
    source.command("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", key)


def _move_keys(slot: int, source: Any, target: Any, pause: Any) -> None:
    """Move the rest of ``slot``'s keys from ``source`` to ``target``, one at a time."""
    while True:
        reply = source.command("CLUSTER", "GETKEYSINSLOT", str(slot), "1")
        keys = [k for k in reply.split(b"\r\n") if k and k[:1] not in (b"*", b"$")]
        if not keys:
            break
        _move_key(source, target, keys[0].decode())
        pause()  # let the layer's clients run into the half-moved slot


def _hand_over(cluster: RedisCluster, slot: int, target: Any) -> None:
    """Tell every primary that ``target`` serves ``slot`` now (ends the migration)."""
    target_id = target.node_id()
    for node in cluster.primaries():
        node.command("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)


def _migrate_slot(cluster: RedisCluster, slot: int, pause: Any) -> tuple[int, int]:
    """Move ``slot`` to another primary by hand, one key at a time; (from port, to port)."""
    source, target = _start_migration(cluster, slot)
    _move_keys(slot, source, target, pause)
    _hand_over(cluster, slot, target)
    return source.port, target.port


def _refusals(node: Any, error: str) -> int:
    """How many times ``node`` has answered ``error`` (TRYAGAIN, ASK) since it started."""
    stats = node.command("INFO", "errorstats").decode()
    line = next((x for x in stats.splitlines() if x.startswith(f"errorstat_{error}:")), "")
    return int(line.split("count=")[1].split(",")[0]) if line else 0


async def test_slot_migrated_while_consumers_receive(
    fault_cluster: RedisCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fault_cluster.flushall()
    sender = RedisChannelLayer(fault_cluster.seeds[:2], cluster=True, capacity=10_000)
    receiver = RedisChannelLayer(fault_cluster.seeds[:2], cluster=True, capacity=10_000)
    try:
        local = await receiver.new_channel()
        inbox = local[: local.index("!") + 1]
        bucket = receiver._route(inbox)
        # A normal channel in the same bucket: both move with the slot.
        plain = next(f"plain.{i}" for i in range(10_000) if receiver._route(f"plain.{i}") == bucket)
        slot = key_slot(receiver._heads[bucket].encode())
        await receiver.group_add("room", local)
        await receiver.group_add("room", plain)
        got: dict[str, list[int]] = {local: [], plain: []}
        sent = {"send": 0, "group": 0, "failed": 0}
        total = 300

        async def consume(channel: str) -> None:
            while True:
                got[channel].append((await receiver.receive(channel))["i"])

        async def produce() -> None:
            for i in range(total):
                try:
                    if i % 3 == 0:
                        await sender.group_send("room", {"type": "m", "i": i})
                        sent["group"] += 1
                    else:
                        await sender.send(local if i % 3 == 1 else plain, {"type": "m", "i": i})
                        sent["send"] += 1
                except Exception as exc:
                    sent["failed"] += 1
                    print(f"send {i} failed: {type(exc).__name__}: {exc}")
                await asyncio.sleep(0)

        consumers = [asyncio.ensure_future(consume(c)) for c in got]
        # Some traffic first, so the slot holds keys when the migration starts.
        await sender.send(plain, {"type": "m", "i": -1})
        await sender.send(local, {"type": "m", "i": -2})
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        migration = loop.run_in_executor(
            None, _migrate_slot, fault_cluster, slot, lambda: time.sleep(0.05)
        )
        await produce()
        moved = await asyncio.wait_for(migration, 30)
        # After the move: one more message each, through the new owner.
        await sender.send(plain, {"type": "m", "i": total})
        await sender.send(local, {"type": "m", "i": total + 1})

        def expected(channel: str) -> set[int]:
            want = {-1 if channel == plain else -2, total if channel == plain else total + 1}
            for i in range(total):
                if i % 3 == 0 or (i % 3 == 1) == (channel == local):
                    want.add(i)
            return want

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(
            len(set(got[c])) < len(expected(c)) - sent["failed"] for c in got
        ):
            await asyncio.sleep(0.05)
        for task in consumers:
            task.cancel()
        took = time.monotonic() - started
        duplicates = sum(len(v) - len(set(v)) for v in got.values())
        lost = {c: sorted(expected(c) - set(got[c])) for c in got}
        with capsys.disabled():
            print(
                f"\n[slot migration] slot {slot} {moved[0]}->{moved[1]} in {took:.1f}s:"
                f" sends {sent['send']}, group sends {sent['group']}, failed {sent['failed']},"
                f" lost {sum(map(len, lost.values()))} {lost}, duplicates {duplicates}"
            )
        assert duplicates == 0
        assert sent["failed"] == 0
        assert lost == {local: [], plain: []}
        assert _owner_port(fault_cluster, receiver, inbox) == moved[1]
    finally:
        await sender.close()
        await receiver.close()


async def test_calls_wait_while_their_slot_moves(fault_cluster: RedisCluster) -> None:
    """A refused call is retried until the slot has moved, past redis-py's own few tries.

    Each case holds the slot in a state that makes Redis refuse the call for
    longer than redis-py alone tries (16 redirections, about 0.4 s, then
    ``ClusterError: TTL exhausted``), then ends the migration:

    1. an inbox's counts moved to the target and its list left on the
       source: a send names both, so the source answers TRYAGAIN; a
       group_add names a key on neither node, so the source answers ASK,
       which redis-py does not follow in a transaction;
    2. every key moved and only the source told (``SETSLOT NODE``), as a
       reshard does node after node: the source answers MOVED to the target,
       which, not told yet, answers MOVED back.
    """
    fault_cluster.wait_ok()
    fault_cluster.flushall()
    layer = RedisChannelLayer(fault_cluster.seeds[:2], cluster=True)
    try:
        local = await layer.new_channel()
        await layer.send(local, {"type": "m", "i": 0})  # makes the inbox's list and counts
        inbox = local[: local.index("!") + 1]
        head = layer._heads[layer._route(inbox)]
        slot = key_slot(head.encode())

        # 1. Half moved.
        source, target = _start_migration(fault_cluster, slot)
        _move_key(source, target, head + "n:" + inbox)
        tryagain, ask = _refusals(source, "TRYAGAIN"), _refusals(source, "ASK")
        sending = asyncio.ensure_future(layer.send(local, {"type": "m", "i": 1}))
        joining = asyncio.ensure_future(layer.group_add("room", local))
        # Until redis-py has given up on each call at least once: more
        # TRYAGAINs than its 16 tries of one send, more ASKs than one
        # transaction's two (its ZADD and PEXPIRE, then EXECABORT).
        deadline = time.monotonic() + T
        while (
            _refusals(source, "TRYAGAIN") - tryagain <= 16 or _refusals(source, "ASK") - ask <= 2
        ) and not (sending.done() and joining.done()):
            assert time.monotonic() < deadline, "the calls were not refused as set up"
            await asyncio.sleep(0.01)  # polling Redis's counters: no event to await
        gave_up = [call.done() for call in (sending, joining)]
        _move_keys(slot, source, target, lambda: None)
        _hand_over(fault_cluster, slot, target)
        # Without the retry: [ClusterError('TTL exhausted.'), AskError(...)].
        results = await asyncio.gather(
            asyncio.wait_for(sending, T), asyncio.wait_for(joining, T), return_exceptions=True
        )
        assert results == [None, None]
        assert gave_up == [False, False]

        # 2. Moved, and only the source told (the only call in flight).
        source, target = _start_migration(fault_cluster, slot)
        _move_keys(slot, source, target, lambda: None)
        source.command("CLUSTER", "SETSLOT", str(slot), "NODE", target.node_id())
        bounced = _refusals(source, "MOVED") + _refusals(target, "MOVED")
        sending = asyncio.ensure_future(layer.send(local, {"type": "m", "i": 2}))
        deadline = time.monotonic() + T
        while (
            _refusals(source, "MOVED") + _refusals(target, "MOVED") - bounced <= 16
            and not sending.done()
        ):
            assert time.monotonic() < deadline, "the send was not refused as set up"
            await asyncio.sleep(0.01)  # polling Redis's counters: no event to await
        gave_up = [sending.done()]
        _hand_over(fault_cluster, slot, target)
        results = await asyncio.gather(asyncio.wait_for(sending, T), return_exceptions=True)
        assert results == [None]
        assert gave_up == [False]
        assert _owner_port(fault_cluster, layer, inbox) == target.port

        # Each message once, and the membership works, through the new owner.
        await layer.group_send("room", {"type": "m", "i": 3})
        for i in range(4):
            assert await asyncio.wait_for(layer.receive(local), T) == {"type": "m", "i": i}
        await layer.send(local, {"type": "m", "i": 4})
        assert await asyncio.wait_for(layer.receive(local), T) == {"type": "m", "i": 4}
    finally:
        await layer.close()


async def test_primary_killed_during_a_group_send(
    fault_cluster: RedisCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    fault_cluster.wait_ok()
    fault_cluster.flushall()
    sender = RedisChannelLayer(fault_cluster.seeds, cluster=True, capacity=10_000)
    receiver = RedisChannelLayer(fault_cluster.seeds, cluster=True, capacity=10_000)
    try:
        names = (f"member.{i}" for i in range(10_000))
        plain = _spread(fault_cluster, receiver, names, per_node=2)
        prefixes = (f"p{i}" for i in range(10_000))
        client_id = receiver._state().client_id
        inboxes = _spread(fault_cluster, receiver, (f"{p}.{client_id}!" for p in prefixes), 1)
        local: dict[int, list[str]] = {}
        for port, v in inboxes.items():  # Python 3.10 refuses await in a nested comprehension
            local[port] = [await receiver.new_channel(n.split(".")[0]) for n in v]
        members = {port: plain[port] + local[port] for port in plain}
        for channel in (m for v in members.values() for m in v):
            await receiver.group_add("all", channel)
        got: dict[str, list[int]] = collections.defaultdict(list)

        async def consume(channel: str) -> None:
            while True:
                got[channel].append((await receiver.receive(channel))["i"])

        consumers = [asyncio.ensure_future(consume(m)) for v in members.values() for m in v]
        victim = fault_cluster.primaries()[0]
        outcome: dict[int, bool] = {}  # group send number -> returned without error
        i = 0

        async def group_send() -> None:
            nonlocal i
            try:
                await asyncio.wait_for(sender.group_send("all", {"type": "m", "i": i}), T)
                outcome[i] = True
            except Exception:
                outcome[i] = False
                await asyncio.sleep(0.02)  # a failing node: do not spin
            i += 1

        while i < 50:
            await group_send()
        killed_at = time.monotonic()
        victim.kill()
        # Group sends go on while the cluster notices and fails over.
        while not _failed_over(fault_cluster):
            await group_send()
            assert time.monotonic() - killed_at < 30, "no replica took over"
        failover_s = time.monotonic() - killed_at
        # Then until 20 group sends in a row succeed: the layer has recovered.
        # (While the cluster is down, every node refuses: a group send
        # raises, having reached some members or none.)
        streak_from = i
        while i - streak_from < 20:
            await group_send()
            if not outcome[i - 1]:
                streak_from = i
            assert time.monotonic() - killed_at < 60, "the layer never recovered"
        recovered_s = time.monotonic() - killed_at
        after = set(range(streak_from, i))
        survivors = [m for port, v in members.items() if port != victim.port for m in v]
        on_victim = members[victim.port]
        before_kill = set(range(50))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
            after <= set(got[m]) for m in survivors + on_victim
        ):
            await asyncio.sleep(0.05)
        for task in consumers:
            task.cancel()
        duplicates = sum(len(v) - len(set(v)) for v in got.values())
        during = [n for n in range(50, streak_from)]
        with capsys.disabled():
            print(
                f"\n[primary killed] failover {failover_s:.1f}s,"
                f" layer recovered {recovered_s:.1f}s;"
                f" group sends meanwhile: {len(during)}, of which raised"
                f" {sum(not outcome[n] for n in during)};"
                f" survivors' members missed of those: "
                f"{[len(set(during) - set(got[m])) for m in survivors]};"
                f" the killed primary's members missed of the 50 before the kill:"
                f" {[len(before_kill - set(got[m])) for m in on_victim]},"
                f" of those during: {[len(set(during) - set(got[m])) for m in on_victim]};"
                f" duplicates {duplicates}"
            )
        assert duplicates == 0
        # A group send that returned reached every member: before the kill
        # (on the surviving primaries: the killed one may not have passed its
        # last writes to its replica), and once the layer recovered, on every
        # primary, the promoted replica included.
        acknowledged = {n for n, ok in outcome.items() if ok}
        for member in survivors:
            assert acknowledged <= set(got[member]), member
        for member in on_victim:
            assert after <= set(got[member]), member
    finally:
        # The cluster is this module's own: it is left with the node dead
        # (three primaries, one without a replica) and closed after the module.
        await sender.close()
        await receiver.close()
