"""``--limit-max-requests`` (and its jitter): a process stops cleanly after N requests.

A single server drains and exits 0; under ``--workers`` the supervisor starts
a fresh worker at once, so the service stays up and a slow leak stays bounded.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx

from sluiceway.config import Config
from sluiceway.server.runner import Server, request_limit
from tests.server.process_apps import pid
from tests.server.serving import TIMEOUT_S, cli_server

HERE = Path(__file__).parent
ARGS = ["process_apps:pid", "--port", "0", "--app-dir", str(HERE)]
READY = r"Worker (\d+) \(pid (\d+)\) ready"


async def test_serve_returns_after_the_limit_and_every_request_was_answered() -> None:
    server = Server(Config(port=0, limit_max_requests=3), pid)
    serving = asyncio.ensure_future(server.serve())
    await asyncio.wait_for(server.started_event.wait(), TIMEOUT_S)
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        url = f"http://127.0.0.1:{server.port}/"
        statuses = [(await client.get(url)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    await asyncio.wait_for(serving, TIMEOUT_S)  # no signal: the limit ended it
    assert server.state.requests == 3
    assert not server.forced


async def test_below_the_limit_the_server_keeps_serving() -> None:
    server = Server(Config(port=0, limit_max_requests=5, keep_alive_timeout_s=0.2), pid)
    serving = asyncio.ensure_future(server.serve())
    await asyncio.wait_for(server.started_event.wait(), TIMEOUT_S)
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for _ in range(4):
            assert (await client.get(f"http://127.0.0.1:{server.port}/")).status_code == 200
    # Ticks pass (one every 0.05 s with this keep-alive timeout) and nothing stops it.
    done, _ = await asyncio.wait({serving}, timeout=0.5)
    assert not done
    server.request_exit()
    await asyncio.wait_for(serving, TIMEOUT_S)


def test_jitter_adds_between_zero_and_n() -> None:
    assert request_limit(100, 0) == 100
    drawn = {request_limit(100, 3) for _ in range(200)}
    assert drawn <= {100, 101, 102, 103} and len(drawn) > 1


async def test_cli_single_process_exits_0_after_the_limit() -> None:
    async with cli_server(*ARGS, "--limit-max-requests", "2") as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            for _ in range(2):
                assert (await client.get(proc.address)).status_code == 200
        assert await proc.wait_exit() == 0
    assert "Served 2 requests, the limit was 2 (--limit-max-requests): shutting down." in proc.text
    assert "Application shutdown complete" in proc.text


async def test_a_worker_at_its_limit_is_replaced_and_the_service_stays_up() -> None:
    async with cli_server(*ARGS, "--workers", "2", "--limit-max-requests", "2") as proc:
        ready = await proc.wait_for_lines(READY, 2)
        initial = {int(m.group(2)) for m in ready}
        limits = httpx.Limits(max_keepalive_connections=0)
        seen: set[int] = set()
        async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
            deadline = time.monotonic() + TIMEOUT_S
            # Fresh connections: the kernel picks a worker for each; every answer is a 200
            # (connections that arrive while a worker is replaced wait in the shared backlog).
            while seen <= initial:
                assert time.monotonic() < deadline, f"no new worker answered; saw {seen}"
                response = await client.get(proc.address)
                assert response.status_code == 200
                seen.add(int(response.text))
        stopped = await proc.wait_for_line(
            r"Worker \d \(pid (\d+)\) reached its request limit; starting a new one"
        )
        assert int(stopped.group(1)) in initial
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert "exited unexpectedly" not in proc.text
