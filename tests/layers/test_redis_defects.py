"""Regressions of the Redis layer's defects 6-10 (issue 16), against real redis-servers.

6. backpressure after Redis lost its capacity counts (SIGKILL + restart, or a lost key);
7. thousands of receivers on one process: bounded connections, senders never starved;
8. ``receive()`` of another process's ``!`` channel is refused;
9. ``close()`` keeps the messages already fetched;
10. ``group_send`` to a large group runs in chunks, small groups in one call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from sluiceway.errors import ChannelFull, InvalidChannelName
from sluiceway.layers.redis import GROUP_BUDGET, RedisChannelLayer
from sluiceway.layers.redis_scripts import LUA_GROUP_SEND
from tests.layers.conftest import RedisServer

T = 10.0


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = T) -> None:
    """Poll ``check`` (bounded): for state that changes without an event to await."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


def _inbox_key(channel: str) -> str:
    return "sluiceway:c:" + channel.split("!")[0] + "!"


async def _fill_after_loss(sender: RedisChannelLayer, channel: str, first: int, cap: int) -> int:
    """Send until ChannelFull (retrying while Redis comes back); the next ``i`` to send."""
    i = first
    deadline = time.monotonic() + T
    while i <= first + 2 * cap and time.monotonic() < deadline:
        try:
            await sender.send(channel, {"type": "t", "i": i})
        except ChannelFull:
            return i
        except (RedisConnectionError, OSError):
            await asyncio.sleep(0.01)  # Redis is still starting
            continue
        i += 1
    return i


# -- 6: backpressure after Redis lost its counts --------------------------------------------


async def _check_backpressure_after_loss(
    url: str, lose_counts: Callable[[str], Awaitable[None]]
) -> None:
    cap = 10
    receiver = RedisChannelLayer([url], capacity=cap, receive_timeout_s=0.5)
    sender = RedisChannelLayer([url], capacity=cap)
    raw = aioredis.Redis.from_url(url)
    try:
        slow = await receiver.new_channel()
        other = await receiver.new_channel()
        # The inbox loop runs, but nobody receives `slow`: a consumer that stopped reading.
        waiting = asyncio.ensure_future(receiver.receive(other))
        for i in range(cap):
            await sender.send(slow, {"type": "t", "i": i})
        with pytest.raises(ChannelFull):
            await sender.send(slow, {"type": "t", "i": cap})

        async def all_in_local_buffer() -> bool:
            return await raw.llen(_inbox_key(slow)) == 0

        await _until(all_in_local_buffer, "the inbox loop took every message")
        await lose_counts(slow)

        # Senders may fill the room Redis believed free until the counts are
        # rebuilt, but no more: ChannelFull comes back.
        sent = await _fill_after_loss(sender, slow, cap, cap)
        assert sent <= 2 * cap, f"{sent - cap} sends admitted after the loss: no backpressure"

        async def all_popped() -> bool:
            try:
                return await raw.llen(_inbox_key(slow)) == 0
            except (RedisConnectionError, OSError):
                return False

        await _until(all_popped, "the inbox loop took the messages sent after the loss")
        assert receiver.receive_buffer_overflows == 0  # nothing dropped by the local buffer
        got = [(await asyncio.wait_for(receiver.receive(slow), T))["i"] for _ in range(sent)]
        assert got == list(range(sent))

        # Drained: once the releases have landed, the counts are exact again
        # (not over-counted, not under-counted): room for `cap` more, no more.
        counts_key = "sluiceway:n:" + slow.split("!")[0] + "!"

        async def released() -> bool:
            return await raw.hget(counts_key, slow) is None

        await _until(released, "the capacity of the received messages was released")
        for i in range(sent, sent + cap):
            await sender.send(slow, {"type": "t", "i": i})
        with pytest.raises(ChannelFull):
            await sender.send(slow, {"type": "t", "i": sent + cap})
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
    finally:
        await raw.aclose()
        await sender.close()
        await receiver.close()


async def test_backpressure_survives_a_redis_restart(fresh_redis: RedisServer) -> None:
    """Issue 16 item 6: SIGKILL + restart under a slow consumer. Before the fix the
    local buffer then dropped messages for good and senders never saw ChannelFull."""

    async def restart(_: str) -> None:
        await asyncio.to_thread(fresh_redis.kill)
        await asyncio.to_thread(fresh_redis.start)

    await _check_backpressure_after_loss(fresh_redis.url, restart)


async def test_backpressure_survives_lost_counts(redis_server: RedisServer) -> None:
    """The counts key lost while Redis stays up (expiry, FLUSHALL, eviction):
    the next release finds no counts of its epoch and the inbox rebuilds them."""
    redis_server.flushall()

    async def drop_counts(channel: str) -> None:
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            await raw.delete("sluiceway:n:" + channel.split("!")[0] + "!")
        finally:
            await raw.aclose()

    await _check_backpressure_after_loss(redis_server.url, drop_counts)


# -- 7: many receivers ----------------------------------------------------------------------


async def _connections_received(raw: aioredis.Redis) -> int:
    return int((await raw.info("stats"))["total_connections_received"])


async def test_150_receivers_leave_senders_their_connections(fresh_redis: RedisServer) -> None:
    """Issue 16 item 7: each waiting receive() held a pooled connection, so past
    redis-py's 100 every send failed with MaxConnectionsError."""
    layer = RedisChannelLayer([fresh_redis.url])
    raw = aioredis.Redis.from_url(fresh_redis.url)
    try:
        names = [f"worker.{i}" for i in range(150)]
        receivers = [asyncio.ensure_future(layer.receive(n)) for n in names]

        async def receivers_blocked() -> bool:
            return int((await raw.info("clients"))["blocked_clients"]) >= 1

        await _until(receivers_blocked, "the receivers wait in Redis")
        await layer.send("unrelated", {"type": "t"})
        await layer.group_add("all", names[0])
        await layer.group_send("all", {"type": "group"})
        for name in names[1:]:
            await layer.send(name, {"type": "direct", "name": name})
        got = await asyncio.wait_for(asyncio.gather(*receivers), T)
        assert got[0]["type"] == "group"
        assert [m["name"] for m in got[1:]] == names[1:]
        # The pool of commands, and one connection for every blocking pop.
        assert await _connections_received(raw) <= layer.max_connections + 1 + 1  # +raw
    finally:
        await raw.aclose()
        await layer.close()


async def test_5000_consumers_on_a_bounded_number_of_connections(fresh_redis: RedisServer) -> None:
    """5,000 consumers in one process, as WebSocket consumers are (a process-local
    channel each, joining a group as they connect, all at once), beside 500
    workers' receives on normal channels: every message arrives, no send fails,
    and the process holds a handful of connections whatever the number of
    receivers. Before the fix the group_adds alone failed with MaxConnectionsError."""
    layer = RedisChannelLayer([fresh_redis.url], capacity=10)
    sender = RedisChannelLayer([fresh_redis.url], capacity=10)
    raw = aioredis.Redis.from_url(fresh_redis.url)
    try:
        before = await _connections_received(raw)
        consumers = [await layer.new_channel() for _ in range(5000)]
        workers = [f"job.{i}" for i in range(500)]
        waiting = [asyncio.ensure_future(layer.receive(c)) for c in [*consumers, *workers]]
        await asyncio.gather(*(layer.group_add("lobby", c) for c in consumers))
        # Senders in the same process as the 5,500 waiting receivers.
        await asyncio.gather(
            layer.group_send("lobby", {"type": "hello"}),
            *(layer.send(w, {"type": "job", "name": w}) for w in workers),
        )
        got = await asyncio.wait_for(asyncio.gather(*waiting), 60)
        assert all(m["type"] == "hello" for m in got[:5000])
        assert [m["name"] for m in got[5000:]] == workers
        # The receiving layer: its pool, the multiplexed pops, the inbox.
        budget = layer.max_connections + 1 + 1
        assert await _connections_received(raw) - before <= budget
        # Another process's sends are served all along.
        await sender.send(workers[0], {"type": "job", "name": "again"})
        await sender.send(consumers[0], {"type": "direct"})
        assert (await asyncio.wait_for(layer.receive(workers[0]), T))["name"] == "again"
        assert (await asyncio.wait_for(layer.receive(consumers[0]), T))["type"] == "direct"
    finally:
        await raw.aclose()
        await sender.close()
        await layer.close()


async def test_a_refused_key_fails_only_its_own_receivers(redis_server: RedisServer) -> None:
    """Receivers share one blocking pop: a foreign key of the wrong type under the
    prefix must fail its own receive(), not every other channel's."""
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url], receive_timeout_s=0.5)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await raw.set("sluiceway:c:not.a.list", "x")
        good = asyncio.ensure_future(layer.receive("fine"))
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await asyncio.wait_for(layer.receive("not.a.list"), T)
        await layer.send("fine", {"type": "ok"})
        assert (await asyncio.wait_for(good, T))["type"] == "ok"
    finally:
        await raw.aclose()
        await layer.close()


# -- 8: another process's channel -----------------------------------------------------------


async def test_receive_of_another_layers_local_channel_is_refused(
    redis_server: RedisServer,
) -> None:
    """Issue 16 item 8: B receiving A's `!` channel read A's inbox: B got A's
    messages and A's own receives waited for ever."""
    redis_server.flushall()
    a, b = RedisChannelLayer([redis_server.url]), RedisChannelLayer([redis_server.url])
    try:
        mine, other = await a.new_channel(), await a.new_channel()
        await a.send(mine, {"type": "for.a"})
        await a.send(other, {"type": "for.a.too"})
        with pytest.raises(InvalidChannelName, match="new_channel"):
            await asyncio.wait_for(b.receive(mine), 3)
        with pytest.raises(InvalidChannelName):
            await asyncio.wait_for(b.receive("handmade!x"), 3)  # not made by new_channel()
        assert (await asyncio.wait_for(a.receive(other), T))["type"] == "for.a.too"
        assert (await asyncio.wait_for(a.receive(mine), T))["type"] == "for.a"
    finally:
        await a.close()
        await b.close()


# -- 9: close() -----------------------------------------------------------------------------


async def test_close_keeps_messages_already_fetched(redis_server: RedisServer) -> None:
    """Issue 16 item 9: the inbox loop fetched both messages; close() threw the
    local buffer away, and the first channel's receive then waited for ever."""
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url])
    try:
        first, second = await layer.new_channel(), await layer.new_channel()
        await layer.send(first, {"type": "t", "n": 1})
        await layer.send(second, {"type": "t", "n": 2})
        assert (await asyncio.wait_for(layer.receive(second), T))["n"] == 2
        await layer.close()
        assert (await asyncio.wait_for(layer.receive(first), T))["n"] == 1
    finally:
        await layer.close()


async def test_close_during_a_pop_loses_nothing(redis_server: RedisServer) -> None:
    """close() right after a message reached the blocked pop: the pop's reply is
    read and kept rather than cancelled with it."""
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url])
    sender = RedisChannelLayer([redis_server.url])
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        waiter, target = await layer.new_channel(), await layer.new_channel()
        blocked = asyncio.ensure_future(layer.receive(waiter))

        async def pop_blocked() -> bool:
            return int((await raw.info("clients"))["blocked_clients"]) >= 1

        await _until(pop_blocked, "the inbox pop is blocked in Redis")
        await sender.send(target, {"type": "in.flight"})
        await layer.close()  # no await in between: the pop's reply is still unread
        blocked.cancel()
        await asyncio.gather(blocked, return_exceptions=True)
        assert (await asyncio.wait_for(layer.receive(target), T))["type"] == "in.flight"
    finally:
        await raw.aclose()
        await sender.close()
        await layer.close()


# -- 10: large groups -----------------------------------------------------------------------


async def _script_calls(raw: aioredis.Redis) -> int:
    stats: dict[str, Any] = await raw.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("eval", "evalsha"))


async def test_group_send_to_a_large_group_runs_in_chunks(redis_server: RedisServer) -> None:
    """Issue 16 item 10: 10,000 members were served by one script call that held
    Redis for up to 162 ms. Now: calls of bounded work (GROUP_BUDGET), every
    member exactly once; a small group still costs one call."""
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url])
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        plain = [f"big.{i}" for i in range(6000)]
        local = [f"specific.proc{p}!{i}" for p in range(4) for i in range(1000)]
        deadline = int(time.time() * 1000) + 3_600_000
        await raw.zadd("sluiceway:g:big", dict.fromkeys([*plain, *local], deadline))
        await raw.zadd("sluiceway:g:small", dict.fromkeys(plain[:50], deadline))

        await layer.group_send("nobody", {"type": "t"})  # the script is loaded
        await raw.config_resetstat()
        await layer.group_send("small", {"type": "few"})
        assert await _script_calls(raw) == 1  # one round trip, one script

        await raw.config_resetstat()
        await layer.group_send("big", {"type": "many"})
        calls = await _script_calls(raw)
        work = 3 * len(plain) + len(local)  # a normal channel costs 3, an inbox member 1
        assert calls >= work // GROUP_BUDGET, f"{calls} script call(s) served 10,000 members"

        async with raw.pipeline(transaction=False) as pipe:
            for name in plain:
                pipe.llen("sluiceway:c:" + name)
            lengths = await pipe.execute()
        assert lengths[:50] == [2] * 50 and lengths[50:] == [1] * (len(plain) - 50)
        served: list[str] = []
        for p in range(4):
            entries: list[Any] = await raw.lrange(f"sluiceway:c:specific.proc{p}!", 0, -1)
            for entry in entries:
                served += entry[13 : entry.index(b"\n")].decode().split(",")
        assert sorted(served) == sorted(local)  # each exactly once
        assert await raw.keys("sluiceway:gs:*") == []  # the served set is gone
    finally:
        await raw.aclose()
        await layer.close()


async def test_a_chunked_walk_serves_each_member_once_while_the_group_changes(
    redis_server: RedisServer,
) -> None:
    """The chunks of a large group_send run in separate calls, so the group can
    change between them: members renewing (moved to the end), leaving, and
    leaving from a run of equal scores (the cursor's), must not make anyone
    miss the message or get it twice. Driven call by call, changing the group
    between calls."""
    redis_server.flushall()
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        script = raw.register_script(LUA_GROUP_SEND)
        now = int(time.time() * 1000)
        base = now + 3_600_000
        members = {f"m.{i:02d}": base + i for i in range(20)}  # joined one by one
        members |= {f"tie.{i:02d}": base + 100 for i in range(12)}  # a burst in one ms
        members |= {f"z.{i:02d}": base + 200 + i for i in range(8)}
        await raw.zadd("sluiceway:g:g", members)
        keys = ["sluiceway:g:g", "sluiceway:gc:g", "sluiceway:gs:walk"]
        # A budget of 15: five normal channels per call.
        args: list[Any] = [
            now,
            b"%013d" % (now + 60_000),
            b"payload",
            61_000,
            100,
            "sluiceway:",
            15,
        ]

        served: set[str] = set()
        reply = await script(keys=keys, args=[*args, "", 0, ""])
        assert reply[0] == 0  # more than one call's work: walked
        left: set[str] = set()
        step = 0
        while not reply[0]:
            so_far: set[Any] = await raw.smembers(keys[2])
            served |= {k.decode() for k in so_far}
            step += 1
            if step == 1:
                # A served member renews (to the end), and so does one not served yet.
                await raw.zadd(keys[0], {"m.00": base + 1000, "m.19": base + 1001})
            if "tie.03" in served and "tie.00" not in left:
                # Members of the cursor's score leave: the run shifts under the cursor.
                gone = sorted(t for t in served if t.startswith("tie."))[:3]
                await raw.zrem(keys[0], *gone)
                left |= set(gone)
            if step == 2:
                await raw.zrem(keys[0], "z.07")  # leaves before its turn
                left.add("z.07")
            reply = await script(keys=keys, args=[*args, *reply[1:4]])
        assert left & {"tie.00"}, "the walk never stopped inside the run of equal scores"
        async with raw.pipeline(transaction=False) as pipe:
            for name in members:
                pipe.llen("sluiceway:c:" + name)
            lengths = dict(zip(members, await pipe.execute(), strict=True))
        assert lengths["z.07"] == 0
        assert {n: c for n, c in lengths.items() if n != "z.07" and c != 1} == {}
        assert await raw.exists(keys[2]) == 0  # the progress is gone
    finally:
        await raw.aclose()
