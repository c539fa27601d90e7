"""A worker process of ``--workers``/``--reload``: its entry point, and the supervisor's handle.

``spawn_worker`` starts one (``multiprocessing``'s *spawn* method: a fresh
interpreter, the sockets passed as file descriptors) and returns its
``Worker`` handle: the process, its pipe, and what the supervisor knows of
it. ``worker_main`` runs in the fresh interpreter the supervisor spawned: it
rebuilds the ``Config``, sets up logging, and serves the inherited sockets
with ``serve_config``. Its pipe to the supervisor carries, once the server
accepts, one ``ready`` message (the supervisor's proof that it serves, which
a SIGHUP replacement waits for before the old worker drains), then a
``pong`` for each health-check ``ping``. The pongs are answered by the event
loop itself, not a thread: a loop blocked by the app (a synchronous call in
``async`` code) misses them, and the supervisor replaces the worker
(``--timeout-worker-healthcheck``).

Exit codes are the CLI's: 0, 1 (lifespan startup failed), 2 (the app does
not import, or another configuration error), 130 (forced).

Imports ``sluiceway.config``, ``sluiceway.errors``, and in the worker only
``sluiceway.logconfig`` and ``sluiceway.server.runner``; imported by
``server/supervisor.py`` and ``server/rolling.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from sluiceway.config import Config
from sluiceway.errors import ConfigError, LifespanFailed

if TYPE_CHECKING:
    from sluiceway.server.runner import Server

logger = logging.getLogger("sluiceway.error")

READY = b"ready"
PING = b"ping"
PONG = b"pong"

# Past its own stop bound (or a forwarded second signal) a worker that has
# not exited has a blocked loop: nothing but a kill ends it.
KILL_MARGIN_S = 5.0

_CONTEXT = multiprocessing.get_context("spawn")


@dataclass
class Worker:
    """One worker process, as the supervisor sees it."""

    slot: int
    process: BaseProcess
    pipe: Connection  # "ready" once accepting, then a "pong" per health-check "ping"
    started_at: float
    ready: bool = False
    pipe_closed: bool = False  # read EOF (it is exiting): nothing more to read or ping
    ping_sent_at: float | None = None  # a ping waiting for its pong
    next_ping_at: float = 0.0
    signalled: bool = False  # has had its SIGTERM
    kill_at: float | None = None  # replaced by SIGHUP: killed if still running then


def spawn_worker(config: Config, app: str, sockets: list[socket.socket], slot: int) -> Worker:
    """Start a worker process for ``slot``, serving ``sockets``."""
    ours, theirs = _CONTEXT.Pipe(duplex=True)
    # The fields, not the object: the worker rebuilds (and checks) its
    # Config, whatever the pickling of frozen slotted dataclasses.
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    process = _CONTEXT.Process(
        target=worker_main, args=(fields, app, sockets, theirs), name=f"sluiceway-worker-{slot}"
    )
    # The child inherits an ignored SIGINT until its server installs its
    # handlers: a Ctrl+C in that window must not kill it with a traceback.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    theirs.close()  # the pipe reads EOF once the child's end closes
    return Worker(slot, process, ours, time.monotonic())


def send_signal(worker: Worker, sig: signal.Signals) -> None:
    pid = worker.process.pid
    if pid is not None and worker.process.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def exit_text(code: int | None) -> str:
    """``code 2`` or ``signal 9``, for the log."""
    return f"signal {-code}" if code is not None and code < 0 else f"code {code}"


def worker_main(
    fields: dict[str, Any], app: str, sockets: list[socket.socket], pipe: Connection
) -> None:
    """Serve ``sockets`` until SIGTERM; exit codes as the CLI's (0, 1, 2, 130)."""
    config = Config(**fields)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # Ctrl+C goes to the supervisor only (server/supervisor.py)
    if config.reload:
        # A .pyc records its source's mtime in whole seconds (and its size):
        # one written now would be taken for a same-size edit saved within
        # the same second, and the reload would serve the old code.
        sys.dont_write_bytecode = True
    from sluiceway.logconfig import configure_logging
    from sluiceway.server.process import serve_config

    parent = multiprocessing.parent_process()

    def started(server: Server) -> None:
        loop = asyncio.get_running_loop()
        if parent is not None:
            loop.add_reader(parent.sentinel, _orphaned, server)
        pipe.send_bytes(READY)
        loop.add_reader(pipe.fileno(), _answer_ping, pipe)

    try:
        # As the CLI did in the supervisor, --log-config included (a spawned
        # worker inherits no logging set-up).
        configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors)
        serve_config(config, app, sockets=sockets, on_started=started)
    except ConfigError as exc:
        _exit_with(f"sluiceway: error: {exc}", 2)
    except LifespanFailed as exc:
        _exit_with(f"sluiceway: error: application startup failed: {exc.message}", 1)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _answer_ping(pipe: Connection) -> None:
    # Both ends write whole small messages at once: a readable pipe holds one.
    try:
        if pipe.recv_bytes() == PING:
            pipe.send_bytes(PONG)
    except (EOFError, OSError):
        # The supervisor is gone: _orphaned (its sentinel) stops the server.
        asyncio.get_running_loop().remove_reader(pipe.fileno())


def _orphaned(server: Server) -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        asyncio.get_running_loop().remove_reader(parent.sentinel)
    logger.warning("The supervisor is gone: shutting down.")
    server.request_exit()


def _exit_with(line: str, code: int) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    raise SystemExit(code)
