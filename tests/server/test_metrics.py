"""``--metrics-port``: GET /metrics in Prometheus text format, on a listener of its own.

Real ``sluiceway run`` processes (one, and ``--workers 2``), real clients
(httpx over HTTP/1.1 and HTTP/2, the websockets client, raw sockets). Every
scrape is parsed by a strict line parser (names, labels, HELP/TYPE before
samples, counters named ``_total``, histogram buckets cumulative), and by
prometheus_client's parser when it is installed. Numbers that only change
when a connection closes are polled for (bounded), never slept for.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from sluiceway.config import Config
from sluiceway.connection.metrics import DURATION_BUCKETS_S, Metrics
from sluiceway.connection.state import ServerState
from sluiceway.errors import ConfigError
from sluiceway.server.metrics import render, snapshot
from sluiceway.server.metrics_listener import remove_orphan_directories
from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server

HERE = Path(__file__).parent
ARGS = ["metrics_apps:app", "--port", "0", "--app-dir", str(HERE), "--metrics-port", "0"]
METRICS_LINE = r"Serving metrics on (\S+)"
READY = r"Worker (\d+) \(pid (\d+)\) ready"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

# --- a strict parser of the text exposition format 0.0.4 ----------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_exposition(text: str) -> Samples:
    """Every sample of ``text``; fails on anything the format does not allow."""
    assert text.endswith("\n")
    kinds: dict[str, str] = {}
    helped: set[str] = set()
    samples: Samples = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            name, help_text = line[7:].split(" ", 1)
            assert re.fullmatch(_NAME, name) and help_text and name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            assert name in helped and name not in kinds, line  # HELP, then TYPE, once
            if kind == "counter":
                assert name.endswith("_total"), line
            kinds[name] = kind
        else:
            match = _SAMPLE.match(line)
            assert match, line
            name, raw_labels, raw_value = match.groups()
            family = name
            if family not in kinds:
                family = re.sub(r"_(bucket|sum|count)$", "", name)
                assert kinds.get(family) == "histogram", line
            labels: list[tuple[str, str]] = []
            rest = raw_labels or ""
            while rest:
                label = _LABEL.match(rest)
                assert label, line
                labels.append((label.group(1), label.group(2)))
                rest = rest[label.end() :]
            key = (name, frozenset(labels))
            assert key not in samples, line
            samples[key] = float(raw_value)
    for name, kind in kinds.items():
        if kind == "histogram":
            buckets = sorted(
                (float(dict(labels)["le"]), value)
                for (sample, labels), value in samples.items()
                if sample == name + "_bucket"
            )
            counts = [count for _, count in buckets]
            assert counts == sorted(counts), "buckets are cumulative"
            assert buckets[-1] == (math.inf, samples[(name + "_count", frozenset())])
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def check_with_prometheus_client(text: str) -> None:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:  # the strict parser above still checked it
        return
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert families["sluiceway_http_request_duration_seconds"].type == "histogram"
    assert families["sluiceway_http_responses"].type == "counter"


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    check_with_prometheus_client(response.text)
    return parse_exposition(response.text)


async def scrape_until(
    url: str, condition: Callable[[Samples], bool], timeout: float = TIMEOUT_S
) -> Samples:
    """Scrape until ``condition`` holds (a closed connection or a worker's next write)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(url)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {samples}"
        await asyncio.sleep(0.05)


def responses(samples: Samples, status_class: str) -> float:
    return value(samples, "sluiceway_http_responses_total", status_class=status_class)


def open_gauges(samples: Samples) -> tuple[float, float]:
    return (
        value(samples, "sluiceway_http_connections_open"),
        value(samples, "sluiceway_websockets_open"),
    )


async def metrics_url(proc: CLIProcess) -> str:
    return (await proc.wait_for_line(METRICS_LINE)).group(1)


# --- one process -------------------------------------------------------------------------------


async def test_one_process_counts_statuses_bytes_durations_and_app_exceptions() -> None:
    async with cli_server(*ARGS) as proc:
        url = await metrics_url(proc)
        samples = await scrape(url)
        assert [responses(samples, f"{c}xx") for c in range(1, 6)] == [0] * 5
        assert value(samples, "sluiceway_http_request_duration_seconds_count") == 0

        got: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            for path in ("/ok", "/ok", "/missing", "/boom"):
                got.append(await client.get(proc.address + path))
            got.append(await client.post(proc.address + "/echo", content=b"x" * 1000))
        async with httpx.AsyncClient(timeout=TIMEOUT_S, http1=False, http2=True) as client:
            h2 = await client.post(proc.address + "/echo", content=b"y" * 300)
            assert h2.http_version == "HTTP/2"
            got.append(h2)
            h2 = await client.get(proc.address + "/boom")
            assert h2.http_version == "HTTP/2"
            got.append(h2)
        assert [r.status_code for r in got] == [200, 200, 404, 500, 200, 200, 500]

        samples = await scrape_until(url, lambda s: open_gauges(s) == (0, 0))
        assert [responses(samples, f"{c}xx") for c in range(1, 6)] == [0, 4, 0, 1, 2]
        assert value(samples, "sluiceway_app_exceptions_total") == 2
        assert value(samples, "sluiceway_http_request_body_bytes_total") == 1300
        assert value(samples, "sluiceway_http_response_body_bytes_total") == sum(
            len(r.content) for r in got
        )
        duration = "sluiceway_http_request_duration_seconds"
        assert value(samples, duration + "_count") == 7
        assert value(samples, duration + "_bucket", le="+Inf") == 7
        assert value(samples, duration + "_bucket", le="10.0") == 7  # the test apps are quick
        assert 0 < value(samples, duration + "_sum") < 7 * 10.0
        assert {dict(labels)["le"] for name, labels in samples if name == duration + "_bucket"} == {
            *(repr(bound) for bound in DURATION_BUCKETS_S),
            "+Inf",
        }

        # A request the server refuses before any app runs is counted by its status too.
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), TIMEOUT_S)).startswith(b"HTTP/1.1 400")
        writer.close()
        samples = await scrape(url)
        assert responses(samples, "4xx") == 2
        assert value(samples, duration + "_count") == 7  # no exchange, no duration


async def test_one_process_gauges_follow_connections_and_websockets_and_ws_exceptions_count() -> (
    None
):
    async with cli_server(*ARGS) as proc:
        url = await metrics_url(proc)
        assert open_gauges(await scrape(url)) == (0, 0)
        # An idle connection counts once it is accepted.
        _, idle = await asyncio.open_connection("127.0.0.1", proc.port)
        await scrape_until(url, lambda s: open_gauges(s) == (1, 0))
        # A WebSocket counts as a WebSocket, not as an HTTP connection.
        async with connect(f"ws://127.0.0.1:{proc.port}/chat") as ws:
            await scrape_until(url, lambda s: open_gauges(s) == (1, 1))
            await ws.send("bye")
            with pytest.raises(ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        await scrape_until(url, lambda s: open_gauges(s) == (1, 0))
        idle.close()
        samples = await scrape_until(url, lambda s: open_gauges(s) == (0, 0))
        assert value(samples, "sluiceway_app_exceptions_total") == 0
        # A WebSocket app that raises is an app exception too (the client sees 1011).
        async with connect(f"ws://127.0.0.1:{proc.port}/raise") as ws:
            with pytest.raises(ConnectionClosedError) as closed:
                await asyncio.wait_for(ws.recv(), TIMEOUT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        samples = await scrape_until(url, lambda s: open_gauges(s) == (0, 0))
        assert value(samples, "sluiceway_app_exceptions_total") == 1
        assert [responses(samples, f"{c}xx") for c in range(1, 6)] == [0] * 5


async def test_one_process_channel_layer_queue_and_full_counts() -> None:
    async with cli_server(*ARGS) as proc:
        url = await metrics_url(proc)
        samples = await scrape(url)
        # No layer built yet: no layer families at all.
        assert not any(name.startswith("sluiceway_channel_layer") for name, _ in samples)
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            queued = int((await client.get(proc.address + "/fill")).text)
        assert queued == 100  # the in-memory layer's default capacity
        samples = await scrape(url)
        assert value(samples, "sluiceway_channel_layer_messages_queued", layer="default") == 100
        full = "sluiceway_channel_layer_full_total"
        assert value(samples, full, layer="default", operation="send") == 1
        assert value(samples, full, layer="default", operation="group_send") == 1


async def test_metrics_and_app_listeners_serve_only_their_own() -> None:
    async with cli_server(*ARGS) as proc:
        url = await metrics_url(proc)
        metrics_port = int(url.rsplit(":", 1)[1].split("/")[0])
        assert metrics_port != proc.port
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            on_app = await client.get(proc.address + "/metrics")
            assert (on_app.status_code, on_app.text) == (404, "app: /metrics")
            assert (await client.get(url.replace("/metrics", "/ok"))).status_code == 404
            post = await client.post(url)
            assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
            head = await client.head(url + "?x=1")
            assert head.status_code == 200 and head.content == b""
            assert int(head.headers["content-length"]) > 0
        # Scrapes are not requests to the app: nothing was counted but the app's 404.
        samples = await scrape(url)
        assert [responses(samples, f"{c}xx") for c in range(1, 6)] == [0, 0, 0, 1, 0]


async def test_metrics_port_in_use_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        args = ["metrics_apps:app", "--port", "0", "--app-dir", str(HERE), "--metrics-port", port]
        async with cli_server(*args, wait_listening=False) as proc:
            assert await proc.wait_exit() == 2
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in proc.text


def test_no_metrics_port_no_registry() -> None:
    # The hot path tests ``metrics is not None``: without the option there is nothing to count.
    assert ServerState(Config()).metrics is None
    state = ServerState(Config(metrics_port=0))
    assert isinstance(state.metrics, Metrics)
    with pytest.raises(ConfigError, match="metrics_port must be between 0 and 65535"):
        Config(metrics_port=65536)


def test_histogram_bounds_are_inclusive_and_cumulative() -> None:
    state = ServerState(Config(metrics_port=0))
    metrics = state.metrics
    assert metrics is not None
    for duration_s in (0.0, 0.005, 0.0051, 0.01, 9.99, 10.0, 20.0):
        metrics.observe(200, 1, duration_s)
    samples = parse_exposition(render(snapshot(state)).decode())
    bucket = "sluiceway_http_request_duration_seconds_bucket"
    # Prometheus' "le": a duration equal to a bound is in that bound's bucket.
    assert value(samples, bucket, le="0.005") == 2
    assert value(samples, bucket, le="0.01") == 4
    assert value(samples, bucket, le="5.0") == 4
    assert value(samples, bucket, le="10.0") == 6
    assert value(samples, bucket, le="+Inf") == 7
    assert value(samples, "sluiceway_http_request_duration_seconds_sum") == pytest.approx(40.0101)
    assert value(samples, "sluiceway_http_response_body_bytes_total") == 7


def test_directories_of_dead_supervisors_are_removed(tmp_path: Path) -> None:
    # A supervisor killed with SIGKILL leaves its snapshot directory behind:
    # the next one to start removes it, and never a live supervisor's.
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True
    )
    orphan = tmp_path / f"sluiceway-metrics-{int(dead.stdout)}-abc"
    live = tmp_path / f"sluiceway-metrics-{os.getpid()}-def"
    for directory in (orphan, live):
        directory.mkdir()
        (directory / "1-a.json").write_text("{}")
    remove_orphan_directories(str(tmp_path))
    assert not orphan.exists() and (live / "1-a.json").exists()


def test_label_values_are_escaped() -> None:
    snap = snapshot(ServerState(Config(metrics_port=0)))
    snap["layers"] = {'odd"alias\\\n': {"queued_messages": 1, "send_full": 2}}
    samples = parse_exposition(render(snap).decode())
    assert (
        value(samples, "sluiceway_channel_layer_messages_queued", layer='odd\\"alias\\\\\\n') == 1
    )


# --- workers -----------------------------------------------------------------------------------


async def fetch_pid(address: str) -> int:
    # A fresh connection per request, so the kernel picks a worker each time.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
        return int((await client.get(address + "/pid")).text)


async def serve_until_all_answered(address: str, pids: set[int]) -> int:
    """Requests until every pid in ``pids`` answered one; returns how many were made."""
    seen: Counter[int] = Counter()
    deadline = time.monotonic() + TIMEOUT_S
    while not pids <= set(seen):
        assert time.monotonic() < deadline, f"only {set(seen)} of {pids} answered"
        for pid in await asyncio.gather(*(fetch_pid(address) for _ in range(4))):
            seen[pid] += 1
    return sum(seen.values())


async def held_connection(port: int) -> tuple[int, asyncio.StreamWriter]:
    """A keep-alive connection that made one request: the pid that answered, and its writer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /pid HTTP/1.1\r\nHost: test\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
    match = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert match is not None, head
    pid = int(await asyncio.wait_for(reader.readexactly(int(match.group(1))), TIMEOUT_S))
    return pid, writer


async def test_workers_share_one_endpoint_and_a_replaced_workers_counts_stay() -> None:
    async with cli_server(*ARGS, "--workers", "2") as proc:
        url = await metrics_url(proc)
        assert proc.text.count("Serving metrics on") == 1  # the supervisor's, not each worker's
        workers = {int(m.group(2)) for m in await proc.wait_for_lines(READY, 2)}
        served = await serve_until_all_answered(proc.address, workers)
        # One scrape sums both workers (each writes its numbers within a second).
        await scrape_until(url, lambda s: responses(s, "2xx") == served)

        # Keep-alive connections held open, each knowing the worker it reached.
        held = [await held_connection(proc.port) for _ in range(4)]
        served += len(held)
        victim = held[0][0]
        survivor = (workers - {victim}).pop()
        await scrape_until(url, lambda s: open_gauges(s) == (len(held), 0))
        os.kill(victim, signal.SIGKILL)
        replaced = {int(m.group(2)) for m in await proc.wait_for_lines(READY, 3)}
        newcomer = (replaced - workers).pop()
        # The killed worker's counters were folded in once (not lost, not
        # doubled); its gauges went with it.
        on_survivor = sum(pid == survivor for pid, _ in held)
        samples = await scrape_until(url, lambda s: open_gauges(s) == (on_survivor, 0))
        assert responses(samples, "2xx") == served
        assert value(samples, "sluiceway_http_request_duration_seconds_count") == served
        for _, writer in held:
            writer.close()

        more = await serve_until_all_answered(proc.address, {newcomer, survivor})
        samples = await scrape_until(url, lambda s: responses(s, "2xx") == served + more)
        assert open_gauges(samples) == (0, 0)
        assert responses(await scrape(url), "2xx") == served + more
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
