"""``sluiceway run`` exits within a bound after a signal, whatever the app does.

Issue 16, defect 2: an app that catches ``CancelledError`` and carries on
kept the process alive forever after "Server stopped.", and a second SIGTERM
then killed it by the signal instead of exiting 130. Each test runs the real
CLI on an app from ``stop_apps.py`` and waits on log lines, never a sleep;
``wait_exit``'s timeout is the bound the old code overran (it never exited).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server

HERE = Path(__file__).parent
APP_DIR = ["--app-dir", str(HERE)]
# A short graceful timeout, so each test takes a second or two: the cancelled
# tasks' wait is the graceful timeout again (at most 5 s).
QUICK = ["--port", "0", "--timeout-graceful-shutdown", "0.5", *APP_DIR]
STOP_APPS = HERE / "stop_apps.py"


async def start_request(proc: CLIProcess, path: str) -> asyncio.StreamWriter:
    """Send GET ``path`` and wait until the app has answered its first chunk."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", proc.port), TIMEOUT_S
    )
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"started"), TIMEOUT_S)
    return writer


async def leave_a_task_behind(proc: CLIProcess) -> None:
    """One request to ``stop_apps:background``, answered and closed."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", proc.port), TIMEOUT_S
    )
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert b"left a task behind" in await asyncio.wait_for(reader.read(), TIMEOUT_S)
    writer.close()


def abandoned_lines(proc: CLIProcess) -> list[str]:
    return [line for line in proc.stderr if "[ERROR] Abandoned" in line]


async def test_a_request_that_swallows_cancellation_is_abandoned_and_the_process_exits() -> None:
    async with cli_server("stop_apps:stubborn", *QUICK) as proc:
        writer = await start_request(proc, "/stuck?q=1")
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0  # documented: a first signal exits 0
        writer.close()
    assert "request swallowed a cancel" in proc.text
    # Which request, and the app line it is stuck on.
    [line] = abandoned_lines(proc)
    assert f"Abandoned task GET /stuck, in _swallow_cancellation() at {STOP_APPS}:" in line
    assert "still running 0.5 s after it was cancelled" in line
    assert "Exiting without the task(s) abandoned above." in proc.text


async def test_a_second_sigterm_exits_130_while_a_stubborn_request_runs() -> None:
    # The default 30 s graceful timeout: only the second signal ends the wait.
    async with cli_server("stop_apps:stubborn", "--port", "0", *APP_DIR) as proc:
        writer = await start_request(proc, "/stuck")
        proc.signal(signal.SIGTERM)
        await proc.wait_for_line("Received SIGTERM: shutting down")
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 130
        writer.close()
    assert "Received SIGTERM again: forcing exit." in proc.text
    [line] = abandoned_lines(proc)
    assert "Abandoned task GET /stuck" in line


async def test_a_signal_after_the_server_stopped_exits_at_once_with_130() -> None:
    # A background task that ignores cancellation is waited for after
    # "Server stopped." (up to the graceful timeout again, here 5 s); before,
    # serve()'s handlers were gone by then and SIGTERM killed the process (-15).
    args = ["--port", "0", "--timeout-graceful-shutdown", "5", *APP_DIR]
    async with cli_server("stop_apps:background", *args) as proc:
        await leave_a_task_behind(proc)
        proc.signal(signal.SIGTERM)
        await proc.wait_for_line(r"Waiting up to 5 s for 1 background task\(s\) to end\.")
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 130
    assert "Received SIGTERM again: exiting now." in proc.text


async def test_a_background_task_that_ignores_cancellation_is_named_and_abandoned() -> None:
    async with cli_server("stop_apps:background", *QUICK) as proc:
        await leave_a_task_behind(proc)
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    [line] = abandoned_lines(proc)
    assert f"in _swallow_cancellation() at {STOP_APPS}:" in line


async def test_a_lifespan_that_ignores_shutdown_and_cancellation_is_abandoned() -> None:
    args = [*QUICK, "--timeout-lifespan-shutdown", "0.5"]
    async with cli_server("stop_apps:stubborn_lifespan", *args) as proc:
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert "Application shutdown did not complete within 0.5 s." in proc.text
    [line] = abandoned_lines(proc)  # once, though two helpers were waiting on it
    assert "Abandoned task lifespan, in _swallow_cancellation()" in line


@pytest.mark.parametrize("path", ["/executor", "/pool"])
async def test_a_thread_stuck_in_a_blocking_call_does_not_keep_the_process_alive(
    path: str,
) -> None:
    # The task is cancelled and ends; its thread cannot be stopped, and the
    # interpreter joins executor threads at exit, forever.
    async with cli_server("stop_apps:in_thread", *QUICK) as proc:
        writer = await start_request(proc, path)
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
        writer.close()
    [line] = abandoned_lines(proc)
    assert "Abandoned thread" in line
    assert "still running 0.5 s after the server stopped" in line


async def test_workers_with_a_stubborn_app_stop_without_being_killed() -> None:
    # Before, each worker hung after "Server stopped." and the supervisor
    # killed it after the graceful and lifespan timeouts plus 5 s (35.5 s here).
    async with cli_server("stop_apps:stubborn", *QUICK, "--workers", "2") as proc:
        await proc.wait_for_lines(r"Worker \d+ \(pid \d+\) ready", 2)
        writer = await start_request(proc, "/stuck")
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
        writer.close()
    assert len(abandoned_lines(proc)) == 1
    assert "All workers stopped." in proc.text
    assert "Killing" not in proc.text


async def test_a_worker_with_a_blocked_loop_is_killed_soon_after_a_second_signal() -> None:
    # Nothing in the worker runs; only the supervisor can end it. After the
    # second signal it waits 5 s, not the 65 s of the default timeouts.
    args = ["--port", "0", *APP_DIR, "--workers", "2"]
    async with cli_server("stop_apps:blocks_loop", *args) as proc:
        await proc.wait_for_lines(r"Worker \d+ \(pid \d+\) ready", 2)
        writer = await start_request(proc, "/block")
        proc.signal(signal.SIGTERM)
        await proc.wait_for_line("Received SIGTERM: stopping the workers.")
        proc.signal(signal.SIGTERM)
        await proc.wait_for_line("forcing the workers to exit")
        # 40 s: generous for a loaded machine, yet below the 65 s the old
        # supervisor waited before it killed the worker.
        assert await proc.wait_exit(timeout=40) == 130
        writer.close()
    assert "Killing 1 worker(s) still running" in proc.text
