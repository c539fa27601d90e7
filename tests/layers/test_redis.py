"""Redis-only behaviour: several processes' view, several hosts, faults, security."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sluiceway.errors import ChannelFull
from sluiceway.layers.redis import RedisChannelLayer
from tests.layers.conftest import RedisServer

T = 10.0


async def _keys(url: str) -> list[bytes]:
    client = aioredis.Redis.from_url(url)
    try:
        return [k async for k in client.scan_iter(match="*")]
    finally:
        await client.aclose()


async def _wait_for_blocked_clients(client: aioredis.Redis, count: int) -> None:
    for _ in range(500):
        if (await client.info("clients"))["blocked_clients"] >= count:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"never saw {count} client(s) blocked in Redis")


async def test_a_cancelled_receive_keeps_a_lone_receivers_order(redis_server: RedisServer) -> None:
    """A receive cancelled while its BLPOP waits, then a new receive: first message first."""
    redis_server.flushall()
    layer, sender = RedisChannelLayer([redis_server.url]), RedisChannelLayer([redis_server.url])
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        before = (await raw.info("clients"))["blocked_clients"]
        doomed = asyncio.ensure_future(layer.receive("ordered.plain"))
        await _wait_for_blocked_clients(raw, before + 1)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        again = asyncio.ensure_future(layer.receive("ordered.plain"))
        await asyncio.sleep(0.1)  # room for a second BLPOP to reach Redis, if one is sent
        await sender.send("ordered.plain", {"type": "t", "i": 0})
        await sender.send("ordered.plain", {"type": "t", "i": 1})
        assert (await asyncio.wait_for(again, T))["i"] == 0
        assert (await asyncio.wait_for(layer.receive("ordered.plain"), T))["i"] == 1
    finally:
        await raw.aclose()
        await sender.close()
        await layer.close()


async def test_a_message_taken_by_a_cancelled_receive_goes_back_with_a_ttl(
    redis_server: RedisServer,
) -> None:
    redis_server.flushall()
    layer, other = RedisChannelLayer([redis_server.url]), RedisChannelLayer([redis_server.url])
    raw = aioredis.Redis.from_url(redis_server.url)
    key = "sluiceway:c:given.back"
    try:
        before = (await raw.info("clients"))["blocked_clients"]
        doomed = asyncio.ensure_future(layer.receive("given.back"))
        await _wait_for_blocked_clients(raw, before + 1)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        # The orphaned BLPOP takes this one; nobody here adopts it, so it goes back.
        await other.send("given.back", {"type": "t"})
        for _ in range(500):
            if await raw.llen(key) == 1:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the message never went back to the list")
        assert await raw.pttl(key) > 0  # the list was recreated: it needs its TTL again
        assert (await asyncio.wait_for(other.receive("given.back"), T))["type"] == "t"
    finally:
        await raw.aclose()
        await other.close()
        await layer.close()


async def test_two_layer_instances_talk(redis_server: RedisServer) -> None:
    redis_server.flushall()
    sender, receiver = RedisChannelLayer([redis_server.url]), RedisChannelLayer([redis_server.url])
    try:
        channel = await receiver.new_channel()
        await sender.send(channel, {"type": "hello"})
        await sender.send("shared.plain", {"type": "plain"})
        await sender.group_add("room", channel)
        await receiver.group_send("room", {"type": "room.msg"})
        assert (await asyncio.wait_for(receiver.receive(channel), T))["type"] == "hello"
        assert (await asyncio.wait_for(receiver.receive(channel), T))["type"] == "room.msg"
        assert (await asyncio.wait_for(sender.receive("shared.plain"), T))["type"] == "plain"
    finally:
        await sender.close()
        await receiver.close()


async def test_send_in_another_process_reaches_a_waiting_receiver(
    redis_server: RedisServer,
) -> None:
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url])
    try:
        channel = await layer.new_channel()
        waiting = asyncio.ensure_future(layer.receive(channel))
        script = (
            "import asyncio, sys\n"
            "from sluiceway.layers.redis import RedisChannelLayer\n"
            "async def main():\n"
            "    layer = RedisChannelLayer([sys.argv[1]])\n"
            "    await layer.send(sys.argv[2], {'type': 'from.child', 'pid': 1})\n"
            "    await layer.close()\n"
            "asyncio.run(main())\n"
        )
        proc = await asyncio.create_subprocess_exec(
            "python", "-c", script, redis_server.url, channel
        )
        assert await asyncio.wait_for(proc.wait(), T) == 0
        assert (await asyncio.wait_for(waiting, T))["type"] == "from.child"
    finally:
        await layer.close()


async def test_process_local_backpressure_reaches_the_sender(redis_server: RedisServer) -> None:
    """A slow consumer makes senders see ChannelFull; receiving frees the room again."""
    redis_server.flushall()
    receiver = RedisChannelLayer([redis_server.url], capacity=3)
    sender = RedisChannelLayer([redis_server.url], capacity=3)
    try:
        channel = await receiver.new_channel()
        other = await receiver.new_channel()
        first = asyncio.ensure_future(receiver.receive(other))  # the inbox loop is running
        for i in range(3):
            await sender.send(channel, {"type": "t", "i": i})
        with pytest.raises(ChannelFull):
            await sender.send(channel, {"type": "t", "i": 3})
        await sender.send(other, {"type": "other"})  # the process's other channels are not blocked
        assert (await asyncio.wait_for(first, T))["type"] == "other"
        assert (await asyncio.wait_for(receiver.receive(channel), T))["i"] == 0
        for _ in range(100):  # the release is batched and asynchronous
            try:
                await sender.send(channel, {"type": "t", "i": 3})
                break
            except ChannelFull:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("capacity was never released after a receive")
        assert [(await asyncio.wait_for(receiver.receive(channel), T))["i"] for _ in range(3)] == [
            1,
            2,
            3,
        ]
        assert receiver.receive_buffer_overflows == 0
    finally:
        await sender.close()
        await receiver.close()


async def test_multi_host_sharding(redis_server: RedisServer, redis_server2: RedisServer) -> None:
    redis_server.flushall()
    redis_server2.flushall()
    # Host order differs between the two layers: the ring places by host identity.
    a = RedisChannelLayer([redis_server.url, redis_server2.url], capacity=1000)
    b = RedisChannelLayer([redis_server2.url, redis_server.url], capacity=1000)
    try:
        plain = [f"plain.{i}" for i in range(40)]
        for name in plain:
            await a.send(name, {"type": "t", "name": name})
        keys1, keys2 = await _keys(redis_server.url), await _keys(redis_server2.url)
        assert keys1 and keys2  # both hosts hold some channels
        assert len(keys1) + len(keys2) == 40
        for name in plain:
            assert (await asyncio.wait_for(b.receive(name), T))["name"] == name

        # Process-local channels: every channel of one process on one host (its inbox).
        locals_b = [await b.new_channel() for _ in range(20)]
        for name in locals_b:
            await a.send(name, {"type": "t", "name": name})
        for name in locals_b:
            assert (await asyncio.wait_for(b.receive(name), T))["name"] == name

        # A group whose members live on both hosts: one script per host.
        members = [*plain[:10], *locals_b[:5]]
        for name in members:
            await b.group_add("everyone", name)
        await a.group_send("everyone", {"type": "all"})
        for name in members:
            assert (await asyncio.wait_for(b.receive(name), T))["type"] == "all"
        await a.flush()
        assert await _keys(redis_server.url) == [] and await _keys(redis_server2.url) == []
    finally:
        await a.close()
        await b.close()


async def test_receivers_survive_a_redis_restart(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    layer = RedisChannelLayer([fresh_redis.url], receive_timeout_s=0.5)
    sender = RedisChannelLayer([fresh_redis.url])
    try:
        local = await layer.new_channel()
        plain_wait = asyncio.ensure_future(layer.receive("jobs"))
        local_wait = asyncio.ensure_future(layer.receive(local))
        await sender.send(local, {"type": "before"})
        assert (await asyncio.wait_for(local_wait, T))["type"] == "before"
        local_wait = asyncio.ensure_future(layer.receive(local))
        await asyncio.sleep(0.1)  # both receivers are blocked in Redis now
        with caplog.at_level(logging.WARNING, logger="sluiceway"):
            await asyncio.to_thread(fresh_redis.stop)
            await asyncio.sleep(0.6)  # the receivers notice and start retrying
            with pytest.raises(Exception):  # noqa: B017 - a send while Redis is down fails loudly
                await sender.send("jobs", {"type": "lost"})
            await asyncio.to_thread(fresh_redis.start)
        assert not plain_wait.done() and not local_wait.done()
        assert any("retrying" in r.getMessage() for r in caplog.records)
        # After the restart both receivers get new messages, without any help.
        for _ in range(200):
            try:
                await sender.send("jobs", {"type": "after"})
                await sender.send(local, {"type": "after.local"})
                break
            except Exception:
                await asyncio.sleep(0.05)
        assert (await asyncio.wait_for(plain_wait, T))["type"] == "after"
        assert (await asyncio.wait_for(local_wait, T))["type"] == "after.local"
    finally:
        await sender.close()
        await layer.close()


async def test_consumer_leaving_mid_group_send_does_not_hurt_the_others(
    redis_server: RedisServer,
) -> None:
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url], capacity=200)
    sender = RedisChannelLayer([redis_server.url], capacity=200)
    try:
        channels = [await layer.new_channel() for _ in range(30)]
        for channel in channels:
            await layer.group_add("crowd", channel)
        received: dict[str, list[int]] = {c: [] for c in channels}

        async def consume(channel: str) -> None:
            while True:
                received[channel].append((await layer.receive(channel))["i"])

        tasks = {c: asyncio.ensure_future(consume(c)) for c in channels}
        leavers = channels[::3]
        for i in range(60):
            await sender.group_send("crowd", {"type": "t", "i": i})
            if i == 30:
                for channel in leavers:  # disconnect: stop receiving, leave the group
                    tasks[channel].cancel()
                    await layer.group_discard("crowd", channel)
        stayers = [c for c in channels if c not in leavers]
        for _ in range(500):
            if all(len(received[c]) == 60 for c in stayers):
                break
            await asyncio.sleep(0.01)
        for channel in stayers:
            assert received[channel] == list(range(60))  # nothing lost, in order
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        assert sender.group_send_full_skips == 0
    finally:
        await sender.close()
        await layer.close()


async def test_encryption_and_key_rotation(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.flushall()
    old = RedisChannelLayer([redis_server.url], symmetric_encryption_keys=["old-key"])
    rotated = RedisChannelLayer(
        [redis_server.url], symmetric_encryption_keys=["new-key", "old-key"]
    )
    stranger = RedisChannelLayer([redis_server.url], symmetric_encryption_keys=["other"])
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await old.send("secret", {"type": "t", "text": "attack at dawn"})
        stored = await raw.lindex("sluiceway:c:secret", 0)
        assert stored is not None and b"attack at dawn" not in stored
        assert (await asyncio.wait_for(rotated.receive("secret"), T))["text"] == "attack at dawn"
        await rotated.send("secret", {"type": "t", "text": "new"})
        await stranger.send("secret", {"type": "t", "text": "unreadable"})
        await rotated.send("secret", {"type": "t", "text": "after"})
        assert (await asyncio.wait_for(rotated.receive("secret"), T))["text"] == "new"
        with caplog.at_level(logging.ERROR, logger="sluiceway"):
            # The stranger's message is dropped with a log line, not a crash.
            assert (await asyncio.wait_for(rotated.receive("secret"), T))["text"] == "after"
        assert any(
            "decrypt" in r.getMessage() or "unreadable" in r.getMessage() for r in caplog.records
        )
    finally:
        await raw.aclose()
        for layer in (old, rotated, stranger):
            await layer.close()


def test_password_in_url(tmp_path: object) -> None:
    server = RedisServer()
    server.start()
    try:
        subprocess.run(
            ["redis-cli", "-p", str(server.port), "CONFIG", "SET", "requirepass", "s3cret"],
            check=True,
            capture_output=True,
            timeout=10,
        )

        async def scenario() -> None:
            good = RedisChannelLayer([f"redis://:s3cret@127.0.0.1:{server.port}/0"])
            bad = RedisChannelLayer([f"redis://:wrong@127.0.0.1:{server.port}/0"])
            try:
                await good.send("c", {"type": "t"})
                assert (await asyncio.wait_for(good.receive("c"), T))["type"] == "t"
                with pytest.raises(Exception, match=r"(?i)auth|pass"):
                    await bad.send("c", {"type": "t"})
            finally:
                await good.close()
                await bad.close()

        asyncio.run(scenario())
    finally:
        server.close()


def test_one_layer_several_event_loops(redis_server: RedisServer) -> None:
    """Connections are kept per loop: a layer outlives a loop and works in a thread's loop."""
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url])

    async def roundtrip(tag: str) -> str:
        await layer.send("loops", {"type": tag})
        return str((await asyncio.wait_for(layer.receive("loops"), T))["type"])

    assert asyncio.run(roundtrip("first")) == "first"
    assert asyncio.run(roundtrip("second")) == "second"  # the first loop is closed by now
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(asyncio.run(roundtrip("thread"))))
    thread.start()
    thread.join(T)
    assert result == ["thread"]

    async def finish() -> None:
        await layer.close()

    asyncio.run(finish())
    assert len(layer._loops) <= 2  # closed loops' states are dropped, not hoarded


async def test_flush_leaves_other_prefixes_alone(redis_server: RedisServer) -> None:
    redis_server.flushall()
    mine = RedisChannelLayer([redis_server.url], prefix="app1")
    theirs = RedisChannelLayer([redis_server.url], prefix="app2")
    try:
        await mine.send("c", {"type": "t"})
        await theirs.send("c", {"type": "t"})
        await mine.flush()
        assert await _keys(redis_server.url) == [b"app2:c:c"]
    finally:
        await mine.close()
        await theirs.close()


def test_tls_with_rediss_url(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")  # a test dependency: installed with .[test]
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key_file, cert_file, ca_file = tmp_path / "key.pem", tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    server = RedisServer()
    server.extra_args = [
        "--port",
        "0",
        "--tls-port",
        str(server.port),
        "--tls-cert-file",
        str(cert_file),
        "--tls-key-file",
        str(key_file),
        "--tls-ca-cert-file",
        str(ca_file),
        "--tls-auth-clients",
        "no",
    ]
    server.start()
    try:

        async def scenario() -> None:
            url = f"rediss://127.0.0.1:{server.port}/0"
            trusted = RedisChannelLayer([{"address": url, "ssl_ca_certs": str(ca_file)}])
            untrusted = RedisChannelLayer([url])  # the system store does not know our CA
            try:
                channel = await trusted.new_channel()
                await trusted.send(channel, {"type": "over.tls"})
                assert (await asyncio.wait_for(trusted.receive(channel), T))["type"] == "over.tls"
                with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
                    await untrusted.send("c", {"type": "t"})
            finally:
                await trusted.close()
                await untrusted.close()

        asyncio.run(scenario())
    finally:
        server.close()


async def test_group_send_stores_one_copy_per_process(redis_server: RedisServer) -> None:
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url], capacity=2)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        members = [await layer.new_channel() for _ in range(200)]
        for channel in members:
            await layer.group_add("big", channel)
        await layer.group_send("big", {"type": "fan", "n": 1})
        inbox = "sluiceway:c:" + members[0].split("!")[0] + "!"
        assert await raw.llen(inbox) == 1  # one entry names all 200 members
        await layer.group_send("big", {"type": "fan", "n": 2})
        await layer.group_send("big", {"type": "fan", "n": 3})  # every member is full now
        assert layer.group_send_full_skips == 200
        for channel in members:
            assert (await asyncio.wait_for(layer.receive(channel), T))["n"] == 1
            assert (await asyncio.wait_for(layer.receive(channel), T))["n"] == 2
    finally:
        await raw.aclose()
        await layer.close()


async def test_expired_group_entry_frees_every_member(redis_server: RedisServer) -> None:
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url], capacity=1, expiry_s=0.2)
    try:
        members = [await layer.new_channel() for _ in range(3)]
        for channel in members:
            await layer.group_add("g", channel)
        await layer.group_send("g", {"type": "old"})
        await asyncio.sleep(0.3)  # expiry is time passing
        layer.expiry_s = 60.0  # the new entry must outlive any stall of a busy machine
        await layer.group_send("g", {"type": "new"})  # trims the expired entry first
        assert layer.group_send_full_skips == 0
        for channel in members:
            assert (await asyncio.wait_for(layer.receive(channel), T))["type"] == "new"
    finally:
        await layer.close()


async def test_malformed_entries_are_dropped_not_fatal(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url])
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        local = await layer.new_channel()
        inbox = "sluiceway:c:" + local.split("!")[0] + "!"
        with caplog.at_level(logging.ERROR, logger="sluiceway"):
            plain_wait = asyncio.ensure_future(layer.receive("plain"))
            local_wait = asyncio.ensure_future(layer.receive(local))
            await asyncio.sleep(0.1)  # both receivers are blocked in Redis
            await raw.rpush("sluiceway:c:plain", b"garbage")
            await raw.rpush(inbox, b"garbage\xff")
            for _ in range(100):
                if sum("malformed" in r.getMessage() for r in caplog.records) == 2:
                    break
                await asyncio.sleep(0.01)
            await layer.send("plain", {"type": "ok"})
            await layer.send(local, {"type": "ok.local"})
            assert (await asyncio.wait_for(plain_wait, T))["type"] == "ok"
            assert (await asyncio.wait_for(local_wait, T))["type"] == "ok.local"
        assert sum("malformed" in r.getMessage() for r in caplog.records) == 2
        # A sender meeting garbage at the head of a list drops it too.
        await raw.rpush("sluiceway:c:plain", b"junk")
        await layer.send("plain", {"type": "after.junk"})
        assert await raw.lindex("sluiceway:c:plain", 0) != b"junk"
    finally:
        await raw.aclose()
        await layer.close()


def test_redis_without_blmpop_falls_back(tmp_path: Path) -> None:
    """Redis 6 has no BLMPOP: the inbox loop must switch to LPOP + BLPOP and lose nothing."""
    server = RedisServer()
    server.extra_args = ["--port", str(server.port), "--rename-command", "BLMPOP", ""]
    server.start()
    try:

        async def scenario() -> None:
            layer = RedisChannelLayer([server.url], capacity=5)
            try:
                channel = await layer.new_channel()
                waiting = asyncio.ensure_future(layer.receive(channel))
                for i in range(5):
                    await layer.send(channel, {"type": "t", "i": i})
                got = [(await asyncio.wait_for(waiting, T))["i"]]
                got += [(await asyncio.wait_for(layer.receive(channel), T))["i"] for _ in range(4)]
                assert got == [0, 1, 2, 3, 4]
                for _ in range(200):  # capacity comes back once the releases land
                    try:
                        await layer.send(channel, {"type": "t", "i": 5})
                        break
                    except ChannelFull:
                        await asyncio.sleep(0.01)
                assert (await asyncio.wait_for(layer.receive(channel), T))["i"] == 5
            finally:
                await layer.close()

        asyncio.run(scenario())
    finally:
        server.close()


async def test_capacity_comes_back_after_a_release_refused_by_redis(
    fresh_redis: RedisServer,
) -> None:
    """Redis at maxmemory refuses the release of a received message's capacity with
    -OOM: it must be retried, or the channel stays full for good once memory frees."""
    layer = RedisChannelLayer([fresh_redis.url], capacity=1)
    raw = aioredis.Redis.from_url(fresh_redis.url)
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "t", "i": 0})
        await raw.config_set("maxmemory", 1)  # every write now fails with -OOM
        assert (await asyncio.wait_for(layer.receive(channel), T))["i"] == 0
        await asyncio.sleep(0.1)  # the release meets -OOM at least once
        await raw.config_set("maxmemory", 0)
        for _ in range(500):
            try:
                await layer.send(channel, {"type": "t", "i": 1})
                break
            except ChannelFull:
                await asyncio.sleep(0.01)
        else:
            pytest.fail("the capacity of the received message was never released")
        assert (await asyncio.wait_for(layer.receive(channel), T))["i"] == 1
    finally:
        await raw.aclose()
        await layer.close()


def test_asyncio_run_returns_without_close(redis_server: RedisServer) -> None:
    """asyncio.run cancels every task on the way out, the inbox loop included: the
    loop must stop even though redis-py can swallow a cancellation inside a command."""
    redis_server.flushall()
    script = (
        "import asyncio, sys\n"
        "from sluiceway.layers.redis import RedisChannelLayer\n"
        "async def main():\n"
        "    layer = RedisChannelLayer([sys.argv[1]])\n"
        "    channel = await layer.new_channel()\n"
        "    await layer.send(channel, {'type': 't'})\n"
        "    await layer.receive(channel)\n"  # starts the inbox loop; no close()
        "asyncio.run(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, redis_server.url], capture_output=True, timeout=T
    )
    assert proc.returncode == 0, proc.stderr.decode()


async def test_an_expired_entry_popped_by_a_receiver_is_dropped(redis_server: RedisServer) -> None:
    """No send comes to trim the expired entries first: the receive side must drop them."""
    redis_server.flushall()
    layer = RedisChannelLayer([redis_server.url], expiry_s=0.2)
    try:
        local = await layer.new_channel()
        for channel in ("stale.plain", local):
            await layer.send(channel, {"type": "old"})
        await asyncio.sleep(0.3)  # expiry is time passing
        layer.expiry_s = 60.0  # the new messages must outlive any stall
        waiters = [asyncio.ensure_future(layer.receive(c)) for c in ("stale.plain", local)]
        for _ in range(500):
            if layer.expired_on_receive == 2:
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"expired entries dropped on receive: {layer.expired_on_receive}, not 2")
        assert not any(w.done() for w in waiters)
        for channel in ("stale.plain", local):
            await layer.send(channel, {"type": "new"})
        assert [(await asyncio.wait_for(w, T))["type"] for w in waiters] == ["new", "new"]
    finally:
        await layer.close()
