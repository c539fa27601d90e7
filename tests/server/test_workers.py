"""``sluiceway run --workers N``: real processes sharing one listening socket.

The app answers with ``os.getpid()``, so a response tells which process
served it. Workers report "Worker N (pid P) ready." on stderr; the tests wait
on those lines, never on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server

HERE = Path(__file__).parent
ARGS = ["process_apps:pid", "--port", "0", "--app-dir", str(HERE)]
READY = r"Worker (\d+) \(pid (\d+)\) ready"


async def fetch_pid(proc: CLIProcess) -> int:
    # A fresh connection per request, so the kernel picks a worker each time.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
        return int((await client.get(proc.address)).text)


async def pids_serving(proc: CLIProcess, want: set[int], deadline_s: float = 10.0) -> set[int]:
    """Request (4 at a time) until every pid in ``want`` has answered, or the deadline."""
    seen: set[int] = set()
    deadline = time.monotonic() + deadline_s
    while not want <= seen and time.monotonic() < deadline:
        seen.update(await asyncio.gather(*(fetch_pid(proc) for _ in range(4))))
    return seen


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Reparented to an init that has not reaped it yet: a zombie is gone too.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def wait_gone(pid: int, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} still running"
        await asyncio.sleep(0.05)


async def test_two_workers_serve_and_sigterm_stops_all_with_exit_0() -> None:
    async with cli_server(*ARGS, "--workers", "2") as proc:
        ready = await proc.wait_for_lines(READY, 2)
        workers = {int(m.group(2)) for m in ready}
        assert len(workers) == 2 and proc.process.pid not in workers
        # Each in its own process group: a terminal's Ctrl+C reaches only the supervisor.
        assert all(os.getpgid(pid) == pid for pid in workers)
        assert await pids_serving(proc, workers) == workers
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    for pid in workers:
        await wait_gone(pid)
    assert proc.text.count("Application shutdown complete") == 2  # lifespan in each worker
    assert "All workers stopped." in proc.text
    assert proc.text.count("Listening on") == 1  # said once, by the supervisor


async def test_a_killed_worker_is_restarted_with_backoff() -> None:
    async with cli_server(*ARGS, "--workers", "2") as proc:
        ready = await proc.wait_for_lines(READY, 2)
        slot, first = ready[0].group(1), int(ready[0].group(2))
        os.kill(first, signal.SIGKILL)
        await proc.wait_for_line(
            rf"Worker {slot} \(pid {first}\) exited unexpectedly with signal 9; restarting in 0.5 s"
        )
        third = await proc.wait_for_lines(READY, 3)
        replacement = int(third[2].group(2))
        assert third[2].group(1) == slot and replacement != first
        # The replacement serves; the dead one never does.
        alive = {int(ready[1].group(2)), replacement}
        assert await pids_serving(proc, alive) == alive

        # A second quick death of the same slot waits twice as long.
        os.kill(replacement, signal.SIGKILL)
        await proc.wait_for_line(rf"\(pid {replacement}\) exited .* restarting in 1 s")
        await proc.wait_for_lines(READY, 4)
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_second_sigint_forces_the_workers_out_with_exit_130() -> None:
    async with cli_server(*ARGS, "--workers", "2") as proc:
        await proc.wait_for_lines(READY, 2)
        reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
        writer.write(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        # In flight: the graceful drain (30 s) would wait for it.
        assert b"held" in await asyncio.wait_for(reader.readuntil(b"held"), TIMEOUT_S)
        proc.signal(signal.SIGINT)
        await proc.wait_for_line("Received SIGINT: stopping the workers")
        await proc.wait_for_lines(r"shutting down \(up to 30 s", 2)
        proc.signal(signal.SIGINT)
        assert await proc.wait_exit() == 130
        writer.close()
    assert "forcing the workers to exit" in proc.text


async def test_app_that_does_not_import_exits_2() -> None:
    args = ["no_such_module:app", "--port", "0", "--workers", "2", "--app-dir", str(HERE)]
    async with cli_server(*args, wait_listening=False) as proc:
        assert await proc.wait_exit() == 2
    assert "sluiceway: error: module 'no_such_module' not found" in proc.stderr
    assert "Traceback" not in proc.text


async def test_failed_lifespan_startup_exits_1() -> None:
    args = ["cli_apps:failing_startup", "--port", "0", "--workers", "2", "--app-dir", str(HERE)]
    async with cli_server(*args, wait_listening=False) as proc:
        assert await proc.wait_exit() == 1
    assert "sluiceway: error: application startup failed: database is down" in proc.stderr


async def test_workers_stop_when_the_supervisor_is_killed() -> None:
    async with cli_server(*ARGS, "--workers", "2") as proc:
        ready = await proc.wait_for_lines(READY, 2)
        proc.signal(signal.SIGKILL)
        await proc.wait_exit()
        for match in ready:
            await wait_gone(int(match.group(2)))


async def test_reload_with_workers_is_a_usage_error() -> None:
    async with cli_server(*ARGS, "--workers", "2", "--reload", wait_listening=False) as proc:
        assert await proc.wait_exit() == 2
    assert proc.stderr == ["sluiceway: error: --reload and --workers cannot be used together"]


async def test_unix_socket_is_shared_and_removed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    args = ["process_apps:pid", "--uds", str(path), "--workers", "2", "--app-dir", str(HERE)]
    async with cli_server(*args) as proc:
        ready = await proc.wait_for_lines(READY, 2)
        workers = {int(m.group(2)) for m in ready}
        transport = httpx.AsyncHTTPTransport(uds=str(path))
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S) as client:
            assert int((await client.get("http://workers/")).text) in workers
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert not path.exists()


def test_run_with_an_app_object_and_workers_is_refused() -> None:
    from sluiceway.config import Config
    from sluiceway.errors import ConfigError
    from sluiceway.server.process import serve_config
    from tests.server.process_apps import pid

    with pytest.raises(ConfigError, match="need the app as an import string"):
        serve_config(Config(workers=2, port=0), pid)


async def test_sigterm_while_workers_are_still_starting_exits_0() -> None:
    async with cli_server(*ARGS, "--workers", "2", wait_listening=False) as proc:
        await proc.wait_for_line(r"Supervisor \(pid \d+\) starting 2 worker")
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


def test_workers_option_and_uvicorns_variable() -> None:
    from sluiceway.errors import ConfigError
    from sluiceway.option_sources import config_from_sources

    assert config_from_sources({}, {"WEB_CONCURRENCY": "3"}).workers == 3
    assert config_from_sources({}, {"WEB_CONCURRENCY": "3", "SLUICEWAY_WORKERS": "2"}).workers == 2
    assert config_from_sources({"workers": "4"}, {"WEB_CONCURRENCY": "3"}).workers == 4
    with pytest.raises(ConfigError, match="invalid value for WEB_CONCURRENCY: 'many'"):
        config_from_sources({}, {"WEB_CONCURRENCY": "many"})
    with pytest.raises(ConfigError, match="workers must be at least 1, got 0"):
        config_from_sources({"workers": "0"}, {})


def test_ctrl_c_in_a_terminal_stops_gracefully_with_exit_0() -> None:
    """^C on a real terminal: the workers get one signal each (from us), not two."""
    import pty
    import select
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    pid, master = pty.fork()
    if pid == 0:  # the child: a session leader with the pty as its terminal
        os.execve(
            sys.executable, [sys.executable, "-m", "sluiceway", "run", *ARGS, "--workers", "2"], env
        )
    output = b""

    def read_until(token: bytes) -> None:
        nonlocal output
        deadline = time.monotonic() + TIMEOUT_S
        while token not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([master], [], [], 0.2)[0]:
                try:
                    output += os.read(master, 65536)
                except OSError:  # the child is gone and the pty closed
                    break

    status = None
    try:
        read_until(b"Worker 0")
        read_until(b"Worker 1")
        os.write(master, b"\x03")
        read_until(b"All workers stopped.")
        _, status = os.waitpid(pid, 0)
    finally:
        if status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0
    text = output.decode(errors="replace")
    assert "forcing" not in text
    assert text.count("Application shutdown complete") == 2
