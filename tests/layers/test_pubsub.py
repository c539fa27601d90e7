"""The pub/sub layer: its counterparts of the queue-only conformance tests, and its faults.

The conformance suite runs on it (``make_layer``'s ``pubsub`` backend) minus
the tests that need a queue (``conftest.PUBSUB_NOT_APPLICABLE``); here each of
those is restated for a receiver already listening, and the guarantees pub/sub
does not give are pinned down: a message nobody hears is lost, a full local
buffer drops the newest, a normal channel received in two processes reaches
both, a subscriber reconnects and resubscribes after Redis restarts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from sluiceway.layers import channel_layers, layer_config_from_url, redis_pubsub_pub
from sluiceway.layers.redis_pubsub import RedisPubSubChannelLayer
from sluiceway.layers.redis_scripts import encode_entry
from tests.layers.conftest import RedisServer
from tests.layers.sentinel_support import SentinelSet
from tests.layers.test_worker import APP, start_worker

T = 5.0

Factory = Callable[..., RedisPubSubChannelLayer]


@pytest.fixture
async def make(redis_server: RedisServer) -> AsyncIterator[Factory]:
    made: list[RedisPubSubChannelLayer] = []

    def factory(**options: object) -> RedisPubSubChannelLayer:
        options.setdefault("hosts", [redis_server.url])
        layer = RedisPubSubChannelLayer(**options)  # type: ignore[arg-type]
        made.append(layer)
        return layer

    yield factory
    for layer in made:
        await layer.close()


async def _until(check: Callable[[], bool], what: str, timeout: float = T) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _listening(layer: RedisPubSubChannelLayer, channel: str) -> asyncio.Future[dict]:  # type: ignore[type-arg]
    """A receive() of ``channel`` that has subscribed (Redis confirmed it)."""
    waiting = asyncio.ensure_future(layer.receive(channel))
    subscriber = layer._state().subscriber(channel)
    topic = layer._topic(channel)
    await _until(
        lambda: (
            subscriber.live and topic in subscriber.wanted and topic not in subscriber.confirming
        ),
        "the subscription",
    )
    return waiting


# -- counterparts of the conformance tests that need a queue --------------------------------


async def test_roundtrip_to_a_listening_receiver(make: Factory) -> None:
    layer = make()
    message = {"type": "m", "text": "hé", "blob": b"\x00\xff", "nested": {"l": [1, None, True]}}
    waiting = await _listening(layer, "test-channel.1")
    await layer.send("test-channel.1", message)
    received = await asyncio.wait_for(waiting, T)
    assert received == message and received is not message
    # The limit of a name, too.
    name = "a" * 99
    waiting = await _listening(layer, name)
    await layer.send(name, {"type": "t"})
    assert (await asyncio.wait_for(waiting, T))["type"] == "t"


async def test_new_channel_listens_at_once_and_keeps_order_and_copies(make: Factory) -> None:
    layer = make(capacity=500)
    channel = await layer.new_channel()
    message = {"type": "m", "items": [1]}
    await layer.send(channel, message)
    message["items"].append(2)
    for i in range(200):
        await layer.send(channel, {"type": "n", "i": i})
    assert (await asyncio.wait_for(layer.receive(channel), T))["items"] == [1]
    got = [(await asyncio.wait_for(layer.receive(channel), T))["i"] for _ in range(200)]
    assert got == list(range(200))


async def test_a_full_local_buffer_drops_the_newest_and_counts_it(
    make: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    # The sender cannot see the receiver's buffer: send never raises ChannelFull.
    layer = make(capacity=3, channel_capacity={"tiny.*": 1, re.compile(r"^big\d\."): 5})
    small, tiny, big = (
        await layer.new_channel(),
        await layer.new_channel("tiny"),
        await layer.new_channel("big1"),
    )
    with caplog.at_level(logging.WARNING, logger="sluiceway"):
        for i in range(6):
            for channel in (small, tiny, big):
                await layer.send(channel, {"type": "t", "i": i})
        # Six sends each: three dropped on small, five on tiny, one on big.
        await _until(lambda: layer.receive_buffer_overflows == 3 + 5 + 1, "the drops")
    assert any("full" in r.getMessage() for r in caplog.records)
    assert [(await layer.receive(small))["i"] for _ in range(3)] == [0, 1, 2]
    assert (await layer.receive(tiny))["i"] == 0
    assert [(await layer.receive(big))["i"] for _ in range(5)] == [0, 1, 2, 3, 4]
    # Room again after a receive.
    assert layer.stats()["receive_buffer_overflows"] == 9
    assert layer.stats()["queued_messages"] == 0
    await layer.send(tiny, {"type": "t", "i": 9})
    assert (await asyncio.wait_for(layer.receive(tiny), T))["i"] == 9


async def test_group_send_to_a_full_member_is_dropped_by_its_receiver(make: Factory) -> None:
    layer = make(capacity=1, channel_capacity={"roomy.*": 5})
    full, ok = await layer.new_channel(), await layer.new_channel("roomy")
    await layer.group_add("g", full)
    await layer.group_add("g", ok)
    await layer.send(full, {"type": "filler"})
    await layer.group_send("g", {"type": "fanout", "i": 1})
    await layer.group_send("g", {"type": "fanout", "i": 2})
    await _until(lambda: layer.receive_buffer_overflows == 2, "the drops")
    assert (await asyncio.wait_for(layer.receive(full), T))["type"] == "filler"
    assert [(await layer.receive(ok))["i"] for _ in range(2)] == [1, 2]


async def test_a_message_expires_in_the_local_buffer(make: Factory) -> None:
    layer = make(expiry_s=0.2)
    local = await layer.new_channel()
    await layer.send(local, {"type": "old"})
    await asyncio.sleep(0.3)  # expiry is about time passing: nothing to await instead
    layer.expiry_s = 60.0
    await layer.send(local, {"type": "new"})
    assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "new"


async def test_group_membership_expires_and_flush_forgets_members(make: Factory) -> None:
    layer = make(group_expiry_s=0.2)
    stale, fresh = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", stale)
    await asyncio.sleep(0.3)  # expiry is about time passing
    layer.group_expiry_s = 60.0
    await layer.group_add("g", fresh)
    await layer.group_send("g", {"type": "to.group"})
    assert (await asyncio.wait_for(layer.receive(fresh), T))["type"] == "to.group"
    await layer.send(stale, {"type": "direct"})
    assert (await asyncio.wait_for(layer.receive(stale), T))["type"] == "direct"
    # flush: the buffer and this process's members are gone.
    await layer.send(fresh, {"type": "buffered"})
    await _until(lambda: layer._state().store.depth(fresh) == 1, "the buffered message")
    await layer.flush()
    await layer.group_send("g", {"type": "after.flush.group"})
    await layer.send(fresh, {"type": "after"})
    assert (await asyncio.wait_for(layer.receive(fresh), T))["type"] == "after"


# -- what pub/sub does not guarantee ---------------------------------------------------------


async def test_a_message_nobody_listens_to_is_lost_and_counted(make: Factory) -> None:
    layer = make()
    await layer.send("nobody.here", {"type": "lost"})
    assert layer.unheard_sends == 1
    waiting = await _listening(layer, "nobody.here")
    await layer.send("nobody.here", {"type": "heard"})
    assert (await asyncio.wait_for(waiting, T))["type"] == "heard"
    assert layer.unheard_sends == 1


async def test_groups_and_normal_channels_reach_every_listening_process(make: Factory) -> None:
    one, two = make(), make()
    a, b = await one.new_channel(), await two.new_channel()
    await one.group_add("room", a)
    await two.group_add("room", b)
    await one.group_send("room", {"type": "hi"})
    assert (await asyncio.wait_for(one.receive(a), T))["type"] == "hi"
    assert (await asyncio.wait_for(two.receive(b), T))["type"] == "hi"
    await two.group_discard("room", b)
    await one.group_send("room", {"type": "second"})
    assert (await asyncio.wait_for(one.receive(a), T))["type"] == "second"
    await one.send(b, {"type": "direct"})
    assert (await asyncio.wait_for(two.receive(b), T))["type"] == "direct"  # "second" never came
    # A normal channel received in two processes: each gets every message
    # (the queue layer gives each to one). Documented.
    first, second = await _listening(one, "shared"), await _listening(two, "shared")
    await one.send("shared", {"type": "both"})
    assert (await asyncio.wait_for(first, T)) == (await asyncio.wait_for(second, T))


async def test_idle_normal_channels_are_unsubscribed(make: Factory) -> None:
    layer = make(expiry_s=0.2)
    waiting = await _listening(layer, "idle")
    await layer.send("idle", {"type": "t"})
    await asyncio.wait_for(waiting, T)
    subscriber = layer._state().subscriber("idle")
    await _until(lambda: layer._topic("idle") not in subscriber.wanted, "the unsubscribe")
    await layer.send("idle", {"type": "t"})
    assert layer.unheard_sends == 1


async def test_the_subscriber_resubscribes_after_redis_restarts(
    fresh_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis restarted under a subscriber: it reconnects and resubscribes; between, all is lost.

    Printed (docs/layers.md quotes it): how long after Redis is back the
    first message arrives, and how many publishes went unheard meanwhile.
    """
    caplog.set_level(logging.ERROR, logger="sluiceway")
    layer = RedisPubSubChannelLayer([fresh_redis.url], receive_timeout_s=1.0)
    sender = RedisPubSubChannelLayer([fresh_redis.url])
    try:
        local = await layer.new_channel()
        await layer.group_add("room", local)
        await sender.group_send("room", {"type": "before"})
        assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "before"
        subscriber = layer._state().subscriber(local)
        fresh_redis.kill()
        fresh_redis.start()
        back_at = time.monotonic()
        receiving = asyncio.ensure_future(layer.receive(local))
        sent = 0
        while not receiving.done():
            if time.monotonic() - back_at > 15:
                raise AssertionError("no message arrived after Redis came back")
            try:
                await sender.group_send("room", {"type": "after", "n": sent})
                sent += 1
            except Exception:
                pass  # the sender reconnects too
            await asyncio.sleep(0.01)  # a publish every 10 ms until one is heard
        first = receiving.result()
        arrived_after = time.monotonic() - back_at
        assert subscriber.reconnects >= 1
        # Everything before the one that arrived was published to nobody: lost.
        assert sender.unheard_sends >= first["n"]
        print(
            f"\npub/sub resubscribed {arrived_after:.2f} s after Redis was back;"
            f" {first['n']} publishes before that were lost (heard by nobody)"
        )
        await sender.send(local, {"type": "direct"})
        assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "direct"
    finally:
        await layer.close()
        await sender.close()


async def test_close_then_reuse_resubscribes(make: Factory) -> None:
    layer = make()
    local = await layer.new_channel()
    await layer.close()
    waiting = await _listening(layer, local)  # reconnects, resubscribes
    await layer.send(local, {"type": "after.close"})
    assert (await asyncio.wait_for(waiting, T))["type"] == "after.close"


# -- the publishing pipeline and the hand-over (redis_pubsub_pub.py) ------------------------


async def test_concurrent_sends_keep_their_order_per_channel(make: Factory) -> None:
    # One pipelined connection per host carries every PUBLISH of a loop, in
    # call order (a pool of connections could reorder concurrent sends).
    layer = make(capacity=1000)
    sender = make()
    local = await layer.new_channel()
    plain = await _listening(layer, "ordered")
    count = 400
    await asyncio.gather(
        *(sender.send(c, {"type": "t", "i": i}) for i in range(count) for c in (local, "ordered"))
    )
    got_local = [(await asyncio.wait_for(layer.receive(local), T))["i"] for _ in range(count)]
    got_plain = [(await asyncio.wait_for(plain, T))["i"]]
    got_plain += [
        (await asyncio.wait_for(layer.receive("ordered"), T))["i"] for _ in range(1, count)
    ]
    assert got_local == list(range(count))
    assert got_plain == list(range(count))
    assert sender.unheard_sends == 0


async def test_publishes_cut_off_by_a_dropped_connection_raise_to_their_senders(
    make: Factory, redis_server: RedisServer
) -> None:
    layer = make()
    local = await layer.new_channel()
    await layer.send(local, {"type": "warm"})  # the publishing connection is open
    assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "warm"
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        # Paused, Redis holds the PUBLISHes unexecuted: they are in flight.
        await admin.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
        sends = [
            asyncio.ensure_future(layer.send(local, {"type": "lost", "i": i})) for i in range(5)
        ]
        await _until(lambda: _unanswered(layer) == 5, "the publishes in flight")
        killed = await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert killed == 1  # the layer's publishing connection
        results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), T)
        assert all(isinstance(r, RedisConnectionError) for r in results), results
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    # The next send connects again; none of the cut-off ones ever went out.
    await layer.send(local, {"type": "after"})
    assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "after"


async def test_a_publish_redis_never_answers_fails_after_the_timeout(
    make: Factory, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A silent connection (no RST, no reply) must not hang senders for ever.
    monkeypatch.setattr(redis_pubsub_pub, "_SLACK_S", 0.1)
    layer = make(receive_timeout_s=0.2)
    local = await layer.new_channel()
    await layer.send(local, {"type": "warm"})
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(layer.send(local, {"type": "stuck"}), T)
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    await layer.send(local, {"type": "after"})
    assert (await asyncio.wait_for(layer.receive(local), T))["type"] in ("warm", "after")


async def test_a_message_handed_to_a_cancelled_receive_goes_to_the_next(make: Factory) -> None:
    # on_message hands a message straight to a waiting receive(); cancelled
    # before it resumes, that receive gives it back, first in line.
    layer = make()
    local = await layer.new_channel()
    state = layer._state()
    waiting = asyncio.ensure_future(layer.receive(local))
    await _until(lambda: local in state.waiting, "the waiting receive")
    for i in range(2):
        entry = encode_entry(
            int((time.time() + 60) * 1000), local, layer._serializer.dumps({"i": i})
        )
        state.on_message(layer._topic(local), entry)
    waiting.cancel()  # handed message 0, not yet resumed
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert layer.stats()["queued_messages"] == 2
    assert [(await layer.receive(local))["i"] for _ in range(2)] == [0, 1]


async def test_receivers_in_line_on_one_channel_each_take_one_message(make: Factory) -> None:
    # A channel's first waiting receive() sits in ``waiting``, the others in
    # line in ``behind``: a receiver leaving the middle of the line, and one
    # handed a message but cancelled before it resumed, leave each message
    # to exactly one of the others, and the line empty at the end.
    layer = make()
    local = await layer.new_channel()
    state = layer._state()

    def deliver(i: int) -> None:
        entry = encode_entry(
            int((time.time() + 60) * 1000), local, layer._serializer.dumps({"i": i})
        )
        state.on_message(layer._topic(local), entry)

    receivers = [asyncio.ensure_future(layer.receive(local)) for _ in range(4)]
    await _until(lambda: len(state.behind.get(local, ())) == 3, "four receivers in line")
    receivers[1].cancel()  # leaves from the middle of the line
    with pytest.raises(asyncio.CancelledError):
        await receivers[1]
    deliver(0)  # to receiver 0
    deliver(1)  # to receiver 2, the next still waiting
    receivers[0].cancel()  # handed message 0, not yet resumed: it goes to receiver 3
    with pytest.raises(asyncio.CancelledError):
        await receivers[0]
    assert (await receivers[2])["i"] == 1
    assert (await receivers[3])["i"] == 0
    assert local not in state.waiting and local not in state.behind
    assert layer.stats()["queued_messages"] == 0


async def test_a_silent_subscriber_connection_is_pinged_dropped_and_replaced(
    make: Factory, redis_server: RedisServer
) -> None:
    # Redis paused answers nothing (no RST either): only the PING after
    # receive_timeout_s of silence, unanswered as long again, tells.
    layer = make(receive_timeout_s=0.2)
    local = await layer.new_channel()
    subscriber = layer._state().subscriber(local)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        await _until(lambda: subscriber.reconnects >= 1, "the reconnection")
    finally:
        await admin.aclose()
    # Once Redis answers again, messages flow again; those sent while the
    # subscriber was reconnecting are lost, as after any reconnection.
    receiving = asyncio.ensure_future(layer.receive(local))
    deadline = time.monotonic() + T
    while not receiving.done():
        assert time.monotonic() < deadline, "no message arrived after the pause"
        await layer.send(local, {"type": "after"})
        await asyncio.wait([receiving], timeout=0.05)
    assert receiving.result()["type"] == "after"


def test_the_layer_runs_on_uvloop(redis_server: RedisServer) -> None:
    # The server's default loop: its transports are not asyncio's classes,
    # and the layer drives them directly (take_over).
    import uvloop

    async def roundtrip() -> dict[str, object]:
        layer = RedisPubSubChannelLayer([redis_server.url])
        try:
            local = await layer.new_channel()
            await layer.send(local, {"type": "uv"})
            return await asyncio.wait_for(layer.receive(local), T)
        finally:
            await layer.close()

    loop = uvloop.new_event_loop()
    try:
        assert loop.run_until_complete(roundtrip())["type"] == "uv"
    finally:
        loop.close()


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_tls_on_either_loop(tmp_path: Path, loop_kind: str) -> None:
    # take_over hands the TLS transport (asyncio's or uvloop's SSL wrapper)
    # to the layer's protocol after redis-py's handshake.
    trustme = pytest.importorskip("trustme")  # a test dependency: installed with .[test]
    import uvloop

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pems = {name: tmp_path / f"{name}.pem" for name in ("key", "cert", "ca")}
    cert.private_key_pem.write_to_path(str(pems["key"]))
    cert.cert_chain_pems[0].write_to_path(str(pems["cert"]))
    ca.cert_pem.write_to_path(str(pems["ca"]))
    server = RedisServer()
    server.extra_args = ["--port", "0", "--tls-port", str(server.port), "--tls-auth-clients", "no"]
    for option, name in (("cert", "cert"), ("key", "key"), ("ca-cert", "ca")):
        server.extra_args += [f"--tls-{option}-file", str(pems[name])]
    server.start()

    async def roundtrip() -> dict[str, object]:
        url = f"rediss://127.0.0.1:{server.port}/0"
        layer = RedisPubSubChannelLayer([{"address": url, "ssl_ca_certs": str(pems["ca"])}])
        try:
            local = await layer.new_channel()
            await layer.send(local, {"type": "over.tls"})
            return await asyncio.wait_for(layer.receive(local), T)
        finally:
            await layer.close()

    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(roundtrip())["type"] == "over.tls"
    finally:
        loop.close()
        server.close()


def _unanswered(layer: RedisPubSubChannelLayer) -> int:
    return sum(len(p.waiting) for p in layer._state().publishers)


# -- configuration, Sentinel -----------------------------------------------------------------


def test_urls_and_channels_alias_choose_the_pubsub_layer() -> None:
    pubsub = "sluiceway.layers.redis_pubsub.RedisPubSubChannelLayer"
    assert layer_config_from_url("redis+pubsub://h:6379/0") == {
        "BACKEND": pubsub,
        "CONFIG": {"hosts": ["redis://h:6379/0"]},
    }
    assert layer_config_from_url("redis+pubsub+sentinel://a:1,b:2/svc/0") == {
        "BACKEND": pubsub,
        "CONFIG": {"hosts": ["redis+sentinel://a:1,b:2/svc/0"]},
    }
    assert layer_config_from_url("redis+pubsub+cluster://a:7000,b:7001") == {
        "BACKEND": pubsub,
        "CONFIG": {"hosts": ["redis://a:7000", "redis://b:7001"], "cluster": True},
    }
    channel_layers.configure(
        {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {}}}
    )
    try:
        assert isinstance(channel_layers["default"], RedisPubSubChannelLayer)
    finally:
        channel_layers.reset()


async def test_pubsub_over_sentinel(sentinel_set: SentinelSet) -> None:
    layer = RedisPubSubChannelLayer([sentinel_set.url])
    try:
        local = await layer.new_channel()
        await layer.group_add("room", local)
        await layer.group_send("room", {"type": "via.sentinel"})
        assert (await asyncio.wait_for(layer.receive(local), T))["type"] == "via.sentinel"
    finally:
        await layer.close()


async def test_sluiceway_worker_on_the_pubsub_layer(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """``sluiceway worker`` with ``SLUICEWAY_CHANNEL_LAYER=redis+pubsub://``, unchanged."""
    (tmp_path / "workerapp.py").write_text(APP)
    url = redis_server.url.replace("redis://", "redis+pubsub://", 1)
    proc = await start_worker(tmp_path, url)
    layer = RedisPubSubChannelLayer([redis_server.url])
    try:
        reply = await layer.new_channel()
        receiving = asyncio.ensure_future(layer.receive(reply))
        # Until the worker listens, a job is heard by nobody (lost): send until one is answered.
        deadline = time.monotonic() + 15
        n = 0
        while not receiving.done():
            assert time.monotonic() < deadline, "the worker never answered"
            await layer.send("jobs.a", {"type": "job.run", "n": n, "reply_to": reply})
            n += 1
            await asyncio.wait({receiving}, timeout=0.05)
        assert receiving.result()["by"] == "jobs.a"
        # Listening now: a job sent is answered.
        await layer.send("jobs.a", {"type": "job.run", "n": -1, "reply_to": reply})
        while (await asyncio.wait_for(layer.receive(reply), T))["n"] != -1:
            pass
    finally:
        await layer.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), T)
