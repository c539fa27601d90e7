"""Channel layer benchmark: sluiceway's layers beside channels_redis and Channels' in-memory layer.

    python bench/layers.py                       # 5 interleaved rounds, every scenario
    python bench/layers.py --rounds 3 --output bench/results/layers.md
    python bench/layers.py --only pubsub --rounds 1 --messages 2 --trips 100   # a smoke run

Scenarios (issue 6):

* fan-out: one process holds 1,000 consumers (``new_channel()`` + ``group_add``), each
  awaiting ``receive()`` in its own task, as consumers do; the same process sends
  ``--messages`` ``group_send``s one after another and waits until every member has
  everything, timed after one warm-up ``group_send`` has reached every member (the
  connections made). Reported: messages delivered per second.
* round trip: one ``send`` then one ``receive`` on the same channel, in sequence,
  ``--trips`` times, on a process-local channel (what consumers use) and on a normal
  channel (what workers use). Reported: round trips per second and the p99 latency.
  With the pub/sub family, each round also measures the same round trip with no
  layer at all (``floor_roundtrip``): the floor both pub/sub layers stand on.

Both run for the Redis layers (sluiceway ``RedisChannelLayer`` and
``channels_redis.core.RedisChannelLayer``, same Redis), the pub/sub layers (sluiceway
``RedisPubSubChannelLayer`` and ``channels_redis.pubsub.RedisPubSubChannelLayer``, same
Redis; a pub/sub round trip's receiver listens before the first send, as nothing is
queued for a channel nobody receives) and the in-memory layers (sluiceway
``InMemoryChannelLayer`` and ``channels.layers.InMemoryChannelLayer``).

On Redis Cluster: sluiceway's ``RedisChannelLayer`` (``redis+cluster://``) on three
primaries (cluster mode, pinned like the single server) beside channels_redis on the
standalone server (it has no cluster mode, and sharded it loses process-local channels);
the cluster's fan-out set against the single-Redis row gives its cost per member. The
pub/sub layer on the same cluster (``redis+pubsub+cluster://``, sharded pub/sub) beside
channels_redis's pub/sub layer on the standalone server.

Method: Redis (persistence off) is pinned to core 1, every measurement runs in a fresh
child process pinned to core 0 (``taskset``), on the stdlib event loop. Each round runs
every implementation once, alternating which goes first; cells are medians over rounds.

Needs: redis-server, ``channels`` and ``channels_redis`` (bench only:
``pip install channels channels_redis``; not sluiceway dependencies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Import sluiceway from this checkout's src/, and nothing from bench/ by accident.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT / "src"))

LAYER_CORE, REDIS_CORE = "0", "1"
GROUP_SIZE = 1000
IMPLS = {
    "redis": ("sluiceway-redis", "channels_redis"),
    "pubsub": ("sluiceway-pubsub", "channels_redis-pubsub"),
    "memory": ("sluiceway-memory", "channels-memory"),
    # Redis Cluster, three primaries. channels_redis has no cluster mode, and
    # sharded over several servers it loses process-local channels (a sender
    # and a receiver hash them differently, its issue #1492): its peer is
    # channels_redis on one standalone server, as in the "redis" row.
    "cluster": ("sluiceway-cluster", "channels_redis"),
    # The pub/sub layer on the same cluster (sharded pub/sub), beside
    # channels_redis's pub/sub layer on the standalone server.
    "pubsub-cluster": ("sluiceway-pubsub-cluster", "channels_redis-pubsub"),
}


# Not a layer: a bare client's pub/sub round trip (floor_roundtrip), run
# beside the pub/sub layers' round trips to show what Redis alone costs.
FLOOR = "no-layer"


def make_layer(impl: str, redis_url: str) -> Any:
    if impl == "sluiceway-redis":
        from sluiceway.layers.redis import RedisChannelLayer

        return RedisChannelLayer([redis_url], capacity=1000)
    if impl == "channels_redis":
        from channels_redis.core import RedisChannelLayer as CR

        return CR(hosts=[redis_url], capacity=1000)
    if impl in ("sluiceway-cluster", "sluiceway-pubsub-cluster"):
        from sluiceway.layers import layer_config_from_url
        from sluiceway.layers.redis import RedisChannelLayer
        from sluiceway.layers.redis_pubsub import RedisPubSubChannelLayer

        config = layer_config_from_url(redis_url)  # redis+[pubsub+]cluster://h1,h2,h3
        assert config is not None
        pubsub = impl == "sluiceway-pubsub-cluster"
        cls = RedisPubSubChannelLayer if pubsub else RedisChannelLayer
        return cls(**config["CONFIG"], capacity=1000)
    if impl == "sluiceway-pubsub":
        from sluiceway.layers.redis_pubsub import RedisPubSubChannelLayer

        return RedisPubSubChannelLayer([redis_url], capacity=1000)
    if impl == "channels_redis-pubsub":
        from channels_redis.pubsub import RedisPubSubChannelLayer as CP

        return CP(hosts=[redis_url])
    if impl == "sluiceway-memory":
        from sluiceway.layers.memory import InMemoryChannelLayer

        return InMemoryChannelLayer(capacity=1000)
    if impl == "channels-memory":
        from channels.layers import InMemoryChannelLayer as CM

        return CM(capacity=1000)
    raise SystemExit(f"unknown implementation {impl}")


async def fanout(layer: Any, messages: int) -> dict[str, float]:
    channels = [await layer.new_channel() for _ in range(GROUP_SIZE)]
    for channel in channels:
        await layer.group_add("bench-room", channel)
    received = 0
    expected = GROUP_SIZE  # the warm-up's, then the measured sends'
    done = asyncio.Event()

    async def consume(channel: str) -> None:
        nonlocal received
        while True:
            await layer.receive(channel)
            received += 1
            if received == expected:
                done.set()

    tasks = [asyncio.ensure_future(consume(c)) for c in channels]
    await asyncio.sleep(0.2)  # every consumer is waiting, as live consumers are
    # Warm-up: one group_send reaches every member before the clock starts,
    # so the publishing connection (and on a cluster, the slot map) is made
    # and a live server's steady state is measured, as the round trips do.
    await layer.group_send("bench-room", {"type": "chat.message", "text": "warm-up", "n": -1})
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), 30)
    if received != GROUP_SIZE:
        raise SystemExit(f"warm-up: {received} of {GROUP_SIZE} members got the message")
    received, expected = 0, GROUP_SIZE * messages
    done.clear()
    start = time.perf_counter()
    for i in range(messages):
        await layer.group_send("bench-room", {"type": "chat.message", "text": "hello", "n": i})
    with contextlib.suppress(asyncio.TimeoutError):  # counted as undelivered below
        await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"delivered_per_s": received / elapsed, "delivered": received, "expected": expected}


async def roundtrip(
    layer: Any, trips: int, local: bool, listen_first: bool = False
) -> dict[str, float]:
    channel = await layer.new_channel() if local else "bench.plain"
    latencies = []
    message = {"type": "bench.ping", "text": "x" * 64}
    if listen_first:
        # Pub/sub: a channel nobody receives drops what is sent to it; the
        # first receive() subscribes, and both layers stay subscribed after it.
        first = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.2)
        await layer.send(channel, message)
        await first
    for _ in range(50):  # warm-up: connections, scripts, the receive loop
        await layer.send(channel, message)
        await layer.receive(channel)
    start = time.perf_counter()
    for _ in range(trips):
        t0 = time.perf_counter()
        await layer.send(channel, message)
        await layer.receive(channel)
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "trips_per_s": trips / elapsed,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def floor_roundtrip(redis_url: str, trips: int) -> dict[str, float]:
    """The pub/sub round trip with no layer at all: what Redis and the loop cost alone.

    One connection PUBLISHes a 64-byte payload, a second one subscribed to its
    topic reads the message; each side a bare asyncio Protocol that hands the
    first bytes read to a future (no parsing: one reply per read here). Both
    layers' pub/sub round trips are this plus their own work.
    """
    host, port = redis_url.split("//")[1].split("/")[0].rsplit(":", 1)
    loop = asyncio.get_running_loop()

    class Reads(asyncio.Protocol):
        future: asyncio.Future[bytes] | None = None

        def data_received(self, data: bytes) -> None:
            if self.future is not None and not self.future.done():
                self.future.set_result(data)

    publisher, subscriber = Reads(), Reads()
    pub, _ = await loop.create_connection(lambda: publisher, host, int(port))
    sub, _ = await loop.create_connection(lambda: subscriber, host, int(port))
    subscriber.future = loop.create_future()
    sub.write(b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nfloor\r\n")
    await subscriber.future
    command = b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nfloor\r\n$64\r\n" + b"x" * 64 + b"\r\n"

    async def trip() -> None:
        publisher.future, subscriber.future = loop.create_future(), loop.create_future()
        pub.write(command)
        await publisher.future  # the PUBLISH reply, as a layer's send() awaits it
        await subscriber.future  # the message, as a receive() awaits it

    for _ in range(50):
        await trip()
    latencies = []
    start = time.perf_counter()
    for _ in range(trips):
        t0 = time.perf_counter()
        await trip()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    pub.close()
    sub.close()
    latencies.sort()
    return {
        "trips_per_s": trips / elapsed,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


async def child_main(args: argparse.Namespace) -> None:
    if args.impl == FLOOR:
        result = await floor_roundtrip(args.redis, args.trips)
        print("RESULT " + json.dumps(result), flush=True)
        return
    layer = make_layer(args.impl, args.redis)
    if args.scenario == "fanout":
        result = await fanout(layer, args.messages)
    else:
        result = await roundtrip(
            layer,
            args.trips,
            local=args.scenario == "roundtrip-local",
            listen_first="pubsub" in args.impl,
        )
    if hasattr(layer, "flush"):
        await layer.flush()
    close = getattr(layer, "close", None) or getattr(layer, "close_pools", None)
    if close is not None:
        await close()
    print("RESULT " + json.dumps(result), flush=True)


def run_child(
    impl: str, scenario: str, urls: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    redis_url = urls.get(impl, urls[""])
    cmd = [
        "taskset",
        "-c",
        LAYER_CORE,
        sys.executable,
        __file__,
        "--child",
        "--impl",
        impl,
        "--scenario",
        scenario,
        "--redis",
        redis_url,
        "--messages",
        str(args.messages),
        "--trips",
        str(args.trips),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    raise SystemExit(f"{impl} {scenario} failed:\n{out.stderr[-2000:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(*extra: str) -> tuple[subprocess.Popen[bytes], str, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [
            "taskset",
            "-c",
            REDIS_CORE,
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            *(arg.replace("{dir}", workdir) for arg in extra),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    version = subprocess.run([binary, "--version"], capture_output=True, text=True)
                    return proc, f"redis://127.0.0.1:{port}/0", version.stdout.split()[2]
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not start")


def start_cluster() -> tuple[list[subprocess.Popen[bytes]], str]:
    """Three primaries (cluster mode, no replicas) on the Redis core; the layer URL."""
    started = [
        start_redis(
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "{dir}/nodes.conf",
            "--cluster-port",
            str(free_port()),
        )
        for _ in range(3)
    ]
    addresses = [url.split("//")[1].rsplit("/", 1)[0] for _, url, _ in started]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *addresses, "--cluster-yes"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    host, port = addresses[0].split(":")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = subprocess.run(
            ["redis-cli", "-h", host, "-p", port, "cluster", "info"],
            capture_output=True,
            text=True,
        ).stdout
        if "cluster_state:ok" in info:
            return [p for p, _, _ in started], "redis+cluster://" + ",".join(addresses)
        time.sleep(0.05)
    raise SystemExit("the Redis Cluster did not form")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100, help="group_sends per fan-out run")
    parser.add_argument("--trips", type=int, default=3000, help="round trips per run")
    parser.add_argument("--output", type=Path)
    parser.add_argument(
        "--only",
        default=",".join(IMPLS),
        help=f"comma-separated families to run (default: all of {','.join(IMPLS)})",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--scenario", help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child_main(args))
        return

    chosen = [f for f in args.only.split(",") if f]
    if not chosen or set(chosen) - set(IMPLS):
        raise SystemExit(f"--only: choose among {', '.join(IMPLS)}")
    families = {f: IMPLS[f] for f in chosen}
    redis_proc, redis_url, redis_version = start_redis()
    procs = [redis_proc]
    urls = {"": redis_url}
    if {"cluster", "pubsub-cluster"} & set(families):
        cluster_procs, urls["sluiceway-cluster"] = start_cluster()
        procs += cluster_procs
        urls["sluiceway-pubsub-cluster"] = urls["sluiceway-cluster"].replace(
            "redis+", "redis+pubsub+", 1
        )
    scenarios = ["fanout", "roundtrip-local", "roundtrip-plain"]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        for rnd in range(args.rounds):
            for scenario in scenarios:
                for pair in families.values():
                    order = pair if rnd % 2 == 0 else pair[::-1]
                    for impl in order:
                        r = run_child(impl, scenario, urls, args)
                        results.setdefault((impl, scenario), []).append(r)
                        print(f"round {rnd + 1} {scenario:16} {impl:17} {r}", flush=True)
            if "pubsub" in families:
                r = run_child(FLOOR, "roundtrip-plain", urls, args)
                results.setdefault((FLOOR, "roundtrip-plain"), []).append(r)
                print(f"round {rnd + 1} {'floor':16} {FLOOR:17} {r}", flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)

    def med(impl: str, scenario: str, key: str) -> float:
        return statistics.median(r[key] for r in results[(impl, scenario)])

    lines = [
        "# Channel layer benchmark",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, `python bench/layers.py "
        f"--rounds {args.rounds} --messages {args.messages} --trips {args.trips}`",
        f"Python {platform.python_version()} ({platform.machine()}, {os.cpu_count()} cores), "
        f"redis-server {redis_version} pinned to core {REDIS_CORE}, the layer process "
        f"pinned to core {LAYER_CORE}, stdlib asyncio loop. Medians of {args.rounds} "
        "interleaved rounds, a fresh process per measurement.",
        "",
        "| scenario | metric | sluiceway | peer | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    for family, (ours, peer) in families.items():
        rows = [
            ("fanout", "delivered_per_s", f"fan-out, group of {GROUP_SIZE}", "messages/s"),
            ("roundtrip-local", "trips_per_s", "round trip, process-local channel", "trips/s"),
            ("roundtrip-local", "p99_ms", "round trip, process-local channel", "p99 ms"),
            ("roundtrip-plain", "trips_per_s", "round trip, normal channel", "trips/s"),
            ("roundtrip-plain", "p99_ms", "round trip, normal channel", "p99 ms"),
        ]
        for scenario, key, label, unit in rows:
            a, b = med(ours, scenario, key), med(peer, scenario, key)
            ratio = (b / a) if key == "p99_ms" else (a / b)
            digits = 3 if key == "p99_ms" else 0
            lines.append(
                f"| {family}: {label} | {unit} | {a:,.{digits}f} | {b:,.{digits}f} ({peer})"
                f" | {ratio:.2f}x |"
            )
    lines += [
        "",
        "Ratio: sluiceway / peer for rates, peer / sluiceway for latency (above 1 = sluiceway "
        "better).",
    ]
    if "pubsub" in families:
        floor = med(FLOOR, "roundtrip-plain", "trips_per_s")
        peer = med(IMPLS["pubsub"][1], "roundtrip-plain", "trips_per_s")
        lines += [
            "",
            f"No layer at all (`floor_roundtrip`: a bare asyncio client, PUBLISH on one "
            f"connection, the message read on a second, subscribed): {floor:,.0f} trips/s, "
            f"p99 {med(FLOOR, 'roundtrip-plain', 'p99_ms'):.3f} ms, "
            f"{floor / peer:.2f}x channels_redis's pub/sub round trip. Every pub/sub layer's "
            "round trip is this and its own work.",
        ]
    lost = [
        f"{impl} {s}: delivered {r['delivered']:.0f}/{r['expected']:.0f}"
        for (impl, s), rs in results.items()
        for r in rs
        if s == "fanout" and r["delivered"] != r["expected"]
    ]
    if lost:
        lines += ["", "Incomplete fan-out runs (capacity or loss):", *[f"- {x}" for x in lost]]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
