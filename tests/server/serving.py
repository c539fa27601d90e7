"""Helpers for runner tests: a ``Server`` in this loop, or ``sluiceway run`` as a subprocess.

``async with running(app, **config) as server`` starts the real ``Server``
(real HTTP protocol) on 127.0.0.1:0 and shuts it down on exit.

``async with cli_server(*args, cwd=...) as proc`` runs ``python -m sluiceway
run ...``, waits for its "Listening on ADDRESS" log line (never a sleep) and
exposes ``proc.address`` (e.g. ``http://127.0.0.1:41234``), ``proc.stderr``
(every line so far) and ``proc.wait_exit()``. The process is killed on exit if
the test did not end it. Every wait has a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from sluiceway.config import Config
from sluiceway.server.runner import Server

TIMEOUT_S = 15.0
_LISTENING = re.compile(r"Listening on (\S+)")


@contextlib.asynccontextmanager
async def running(app: Any, **options: Any) -> AsyncIterator[Server]:
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    server = Server(Config(**options), app)
    await asyncio.wait_for(server.start(), TIMEOUT_S)
    try:
        yield server
    finally:
        await asyncio.wait_for(server.shutdown(), TIMEOUT_S)


class CLIProcess:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr: list[str] = []
        self.address = ""
        self._new_line = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while True:
            raw = await self.process.stderr.readline()
            if not raw:
                break
            self.stderr.append(raw.decode(errors="replace").rstrip("\n"))
            self._new_line.set()
        self._new_line.set()

    async def wait_for_line(self, pattern: str, timeout: float = TIMEOUT_S) -> re.Match[str]:
        """The first stderr line matching ``pattern`` (waits for it)."""
        regex = re.compile(pattern)

        async def scan() -> re.Match[str]:
            seen = 0
            while True:
                for line in self.stderr[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.stderr)
                if self._reader.done():
                    raise AssertionError(f"no line matching {pattern!r}:\n" + self.text)
                self._new_line.clear()
                await self._new_line.wait()

        return await asyncio.wait_for(scan(), timeout)

    async def wait_for_lines(
        self, pattern: str, count: int, timeout: float = TIMEOUT_S
    ) -> list[re.Match[str]]:
        """The first ``count`` stderr lines matching ``pattern`` (waits for them)."""
        regex = re.compile(pattern)

        async def scan() -> list[re.Match[str]]:
            while True:
                found = [m for m in map(regex.search, self.stderr) if m]
                if len(found) >= count:
                    return found[:count]
                if self._reader.done():
                    raise AssertionError(
                        f"{len(found)} of {count} lines {pattern!r}:\n" + self.text
                    )
                self._new_line.clear()
                await self._new_line.wait()

        return await asyncio.wait_for(scan(), timeout)

    @property
    def text(self) -> str:
        return "\n".join(self.stderr)

    @property
    def port(self) -> int:
        return int(self.address.rsplit(":", 1)[1])

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    async def wait_exit(self, timeout: float = TIMEOUT_S) -> int:
        code = await asyncio.wait_for(self.process.wait(), timeout)
        await asyncio.wait_for(self._reader, timeout)
        return code


@contextlib.asynccontextmanager
async def cli_server(
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    wait_listening: bool = True,
    pass_fds: Sequence[int] = (),
    python_args: Sequence[str] = ("-m", "sluiceway", "run"),
) -> AsyncIterator[CLIProcess]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *python_args,  # or a shim that execs the server (systemd's tests)
        *args,
        cwd=cwd,
        env=full_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=pass_fds,
    )
    proc = CLIProcess(process)
    try:
        if wait_listening:
            proc.address = (await proc.wait_for_line(_LISTENING.pattern)).group(1)
        yield proc
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), TIMEOUT_S)
        proc._reader.cancel()
