"""``--timeout-worker-healthcheck``: a worker whose event loop stops answering is replaced.

The app's ``/block`` makes a synchronous 60 s sleep in ``async`` code: the
worker process is alive and its sockets stay open, but its loop answers
nothing. The supervisor's ping goes unanswered, the worker is killed and a
new one takes its slot; the other worker serves throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pytest

from tests.server.serving import TIMEOUT_S, cli_server
from tests.server.test_workers import READY, wait_gone
from tests.server.test_zero_downtime import current_workers, fetch_pids, pids_answering

HERE = Path(__file__).parent
ARGS = ["restart_apps:app", "--port", "0", "--app-dir", str(HERE), "--workers", "2"]


async def test_a_worker_with_a_blocked_loop_is_killed_and_replaced() -> None:
    async with cli_server(*ARGS, "--timeout-worker-healthcheck", "0.5") as proc:
        await proc.wait_for_lines(READY, 2)
        first = current_workers(proc)
        # Find the worker that takes a /block: it answers nothing, so ask it its pid first
        # on the same keep-alive connection. Not pipelined: a worker writes a pass's
        # responses at the end of the pass, and /block (started at once on 3.12+,
        # where tasks start eagerly) would stop the pass before the first one left.
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        blocked = int(await reader.readexactly(length))
        writer.write(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
        killed = await proc.wait_for_line(
            rf"Worker (\d) \(pid {blocked}\) did not answer a health check within 0.5 s"
        )
        await wait_gone(blocked)
        # The connection the blocked worker held is gone with it (closed, or reset).
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), TIMEOUT_S) == b""
        writer.close()
        await proc.wait_for_lines(READY, 3)
        now = current_workers(proc)
        assert blocked not in now and first - {blocked} <= now
        replacement = (now - first).pop()
        assert await pids_answering(proc.port, now) == now
        assert f"Worker {killed.group(1)} (pid {replacement}) ready." in proc.text
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_healthy_workers_are_left_alone() -> None:
    # Pings go by (every 1.5 s) while the workers serve: answered, nobody is replaced.
    async with cli_server(*ARGS, "--timeout-worker-healthcheck", "1.5") as proc:
        await proc.wait_for_lines(READY, 2)
        first = current_workers(proc)
        await asyncio.wait_for(_serve_for(proc.port, 3.5), TIMEOUT_S)
        assert current_workers(proc) == first
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert "health check" not in proc.text


async def _serve_for(port: int, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        await fetch_pids(port, 4)


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_the_option_must_be_a_positive_number(value: str) -> None:
    from sluiceway.errors import ConfigError
    from sluiceway.option_sources import config_from_sources

    with pytest.raises(ConfigError, match="--timeout-worker-healthcheck"):
        config_from_sources({"timeout_worker_healthcheck_s": value}, {})
    assert config_from_sources({}, {}).timeout_worker_healthcheck_s == 5.0
    env = {"SLUICEWAY_TIMEOUT_WORKER_HEALTHCHECK": "2.5"}
    assert config_from_sources({}, env).timeout_worker_healthcheck_s == 2.5
