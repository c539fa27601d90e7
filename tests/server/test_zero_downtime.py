"""SIGHUP under ``--workers``: the workers are replaced one at a time, and no request fails.

A real ``sluiceway run --workers 2`` serves a load of raw-socket clients (new
connections, and keep-alive connections reused until the server closes
them) while the test sends SIGHUP three times; each time it waits for
"Restart complete", for every old worker to have drained and exited, and for
the new ones to answer. The app answers with its pid, so the responses show
which generation of workers served them.

Every failure is an error, and the test wants none: a refused or reset
connection, a cut response, a non-200, a timeout, and on a keep-alive
connection the race every HTTP/1.1 server has when it closes an idle
connection (RFC 9112 §9.3.1), which the keep-alive clients here (sending
their next request microseconds after the last response) used to hit on most
restarts: the close crossed their next request, which got no response. A
draining worker now leaves an idle connection open a moment for that request
(``http1/protocol.py``, ``shutdown``), and answers it with Connection: close.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server
from tests.server.test_workers import READY, wait_gone

HERE = Path(__file__).parent
ARGS = ["restart_apps:app", "--port", "0", "--app-dir", str(HERE), "--workers", "2"]
RESTARTS = 3


@dataclass
class Load:
    port: int
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    served: list[tuple[float, int]] = field(default_factory=list)  # (when, pid)
    errors: list[str] = field(default_factory=list)

    def pids_since(self, since: float) -> set[int]:
        return {pid for when, pid in self.served if when >= since}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """The pid in one 200 response, and whether the server said Connection: close."""
    head = await reader.readuntil(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    assert status.startswith("HTTP/1.1 200 "), status
    headers = dict(line.lower().split(":", 1) for line in lines if line)
    body = await reader.readexactly(int(headers["content-length"]))
    return int(body), headers.get("connection", "").strip() == "close"


async def new_connections(load: Load) -> None:
    while not load.stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            pid, _ = await asyncio.wait_for(read_response(reader), TIMEOUT_S)
            load.served.append((time.monotonic(), pid))
        except (OSError, asyncio.IncompleteReadError, AssertionError, TimeoutError) as exc:
            load.errors.append(f"new connection: {exc!r}")
        finally:
            if writer is not None:
                writer.close()


async def keep_alive(load: Load) -> None:
    writer: asyncio.StreamWriter | None = None
    reused = False
    while not load.stop.is_set():
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
                reused = False
            writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            pid, close = await asyncio.wait_for(read_response(reader), TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, AssertionError, TimeoutError) as exc:
            crossed = reused and isinstance(exc, asyncio.IncompleteReadError) and not exc.partial
            race = " (closed under a request: the idle-close race)" if crossed else ""
            load.errors.append(f"keep-alive: {exc!r}{race}")
            if writer is not None:
                writer.close()
            writer = None
            continue
        load.served.append((time.monotonic(), pid))
        reused = True
        if close:  # the draining worker said so: the next request opens a new connection
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def served_by(load: Load, pids: set[int], what: str) -> None:
    """Wait (bounded) until each of ``pids`` has answered one of the load's requests from now."""
    since = time.monotonic()
    while not pids <= load.pids_since(since):
        assert time.monotonic() < since + TIMEOUT_S, f"{what}: {pids} not serving"
        await asyncio.sleep(0.02)


def current_workers(proc: CLIProcess) -> set[int]:
    """The pid of each slot's latest "ready" worker, from the supervisor's log."""
    import re

    latest: dict[str, int] = {}
    for line in proc.stderr:
        match = re.search(READY, line)
        if match:
            latest[match.group(1)] = int(match.group(2))
    return set(latest.values())


async def test_three_sighup_restarts_under_load_fail_no_request() -> None:
    async with cli_server(*ARGS) as proc:
        await proc.wait_for_lines(READY, 2)
        generations = [current_workers(proc)]
        load = Load(proc.port)
        clients = [asyncio.ensure_future(task(load)) for task in (new_connections, keep_alive) * 2]
        try:
            await served_by(load, generations[0], "the first workers")
            for restart in range(1, RESTARTS + 1):
                proc.signal(signal.SIGHUP)
                await proc.wait_for_lines("Restart complete: every worker replaced", restart)
                new = current_workers(proc)
                assert len(new) == 2 and not new & set().union(*generations)
                for old in generations[-1]:
                    await wait_gone(old)  # drained and exited while the load ran
                await served_by(load, new, f"restart {restart}")
                generations.append(new)
        finally:
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), TIMEOUT_S)
        assert load.errors == []
        # Every request in the window of the restarts was served, by all four generations.
        assert {pid for _, pid in load.served} <= set().union(*generations)
        assert len(load.served) > 100
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert proc.text.count("Received SIGHUP: replacing the 2 worker(s) one at a time.") == RESTARTS
    assert proc.text.count("which now drains") == 2 * RESTARTS


# The release a deploy test writes, breaks and fixes: a module of its own in a temporary --app-dir.
GOOD_APP = """
import os


async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
"""


async def fetch_pids(port: int, count: int) -> set[int]:
    """``count`` requests, each on a new connection (so the kernel picks a worker each time)."""
    pids = set()
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        pid, _ = await asyncio.wait_for(read_response(reader), TIMEOUT_S)
        writer.close()
        pids.add(pid)
    return pids


async def pids_answering(port: int, want: set[int]) -> set[int]:
    """Request (on new connections) until every pid in ``want`` has answered; all that answered."""
    seen: set[int] = set()
    deadline = time.monotonic() + TIMEOUT_S
    while not want <= seen:
        seen |= await fetch_pids(port, 4)
        assert time.monotonic() < deadline, f"{want - seen} not serving"
    return seen


async def test_a_replacement_that_does_not_import_leaves_the_old_workers_serving(
    tmp_path: Path,
) -> None:
    app_file = tmp_path / "deployed.py"
    app_file.write_text(GOOD_APP)
    args = ["deployed:app", "--port", "0", "--app-dir", str(tmp_path), "--workers", "2"]
    async with cli_server(*args, env={"PYTHONDONTWRITEBYTECODE": "1"}) as proc:
        await proc.wait_for_lines(READY, 2)
        first = current_workers(proc)
        app_file.write_text("raise RuntimeError('the new release is broken')\n")
        proc.signal(signal.SIGHUP)
        stopped = await proc.wait_for_line(r"Restart stopped: the new worker 0 \(pid (\d+)\)")
        assert "exited with code 2 before serving; the old workers keep serving." in stopped.string
        # Both old workers still serve, and only they: neither was told to drain.
        assert await pids_answering(proc.port, first) == first
        assert current_workers(proc) == first
        # A fixed release restarts normally on the next SIGHUP.
        app_file.write_text(GOOD_APP)
        proc.signal(signal.SIGHUP)
        await proc.wait_for_line("Restart complete: every worker replaced")
        assert not current_workers(proc) & first
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert proc.text.count("Restart stopped") == 1
    assert "which now drains" in proc.text  # only after the fix
    assert proc.text.index("which now drains") > proc.text.index("Restart stopped")


async def test_a_replacement_that_hangs_is_killed_after_its_bound(tmp_path: Path) -> None:
    app_file = tmp_path / "deployed.py"
    app_file.write_text(GOOD_APP)
    args = [
        "deployed:app",
        "--port",
        "0",
        "--app-dir",
        str(tmp_path),
        "--workers",
        "2",
        "--timeout-lifespan-startup",
        "0.5",
        "--timeout-worker-healthcheck",
        "1",
    ]
    async with cli_server(*args, env={"PYTHONDONTWRITEBYTECODE": "1"}) as proc:
        await proc.wait_for_lines(READY, 2)
        first = current_workers(proc)
        app_file.write_text("import time\ntime.sleep(600)\n")  # an import that never ends
        proc.signal(signal.SIGHUP)
        stopped = await proc.wait_for_line(r"Restart stopped: the new worker 0 \(pid (\d+)\)")
        assert "was not serving after 1.5 s; the old workers keep serving." in stopped.string
        await wait_gone(int(stopped.group(1)))
        assert await fetch_pids(proc.port, 8) <= first
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
