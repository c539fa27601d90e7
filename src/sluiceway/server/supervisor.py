"""Worker processes (``--workers N``) and the reloader (``--reload``): the supervisor.

``supervise(config, app)`` binds the listening sockets once, then runs worker
processes that all serve those sockets (the kernel hands each new connection
to one of them). Each worker is a fresh interpreter started with
``multiprocessing``'s *spawn* method: the sockets travel as inherited file
descriptors, and nothing of the supervisor's state (no event loop, no uvloop,
no threads, no imported app) is copied into it by a ``fork``. Each worker
imports the app and runs its own lifespan, then serves with ``Server``.

The supervisor then waits, in one ``select``, for a worker to exit, a worker
to report it is accepting, a signal, or the next reload poll:

* A worker that stops on its own after ``--limit-max-requests`` (exit code 0)
  is replaced at once.
* A worker that dies unexpectedly is restarted: at once if it had run for a
  while (``STABLE_S``), else after a delay that doubles with each quick death
  (``BACKOFF_FIRST_S`` .. ``BACKOFF_MAX_S``), so a crash-looping app does
  not spin. A worker that fails to start (exit code 1: lifespan startup
  failed; 2: the app does not import) before any worker ever started ends
  the whole server with that code: it will not fix itself.
* SIGINT/SIGTERM: each worker gets one SIGTERM and drains gracefully (its own
  ``--timeout-graceful-shutdown``, then lifespan shutdown). A second signal
  is forwarded, which makes the workers skip the drain. A worker bounds its
  own stop whatever its app does (``server/stopping.py``), unless its loop
  is blocked: one still alive ``KILL_MARGIN_S`` after that bound
  (``process_exit_bound_s``), or after the forwarded second signal, is
  killed. Exit: 0 when every worker stopped cleanly, 130 when forced, else 1.
* ``--reload`` (one worker; with ``--workers`` it is a usage error): every
  ``--reload-delay`` seconds (1 by default) ``FileWatcher`` compares
  modification times; on a change the worker is stopped gracefully and a
  new one started, which imports the changed code. A worker that fails
  while reloading is not restarted until the next change (fix the typo,
  save, it comes back).

Workers run in their own process group, so a terminal's Ctrl+C reaches only
the supervisor, which forwards it once (else each worker would see it twice:
from the terminal and from us, and force its exit). A worker whose
supervisor disappears (``kill -9``) shuts itself down gracefully.

Imports ``sluiceway.config``, ``sluiceway.errors``, ``sluiceway.server.stopping``
(the workers' stop bound), ``sluiceway.server.sockets`` (binding),
``sluiceway.transport.tls`` (to check the TLS files before any worker
starts), ``sluiceway.server.reload`` and, in the worker only,
``sluiceway.server.runner`` (``serve_config``).
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
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING, Any

from sluiceway.config import Config
from sluiceway.errors import ConfigError, LifespanFailed
from sluiceway.server.stopping import process_exit_bound_s

if TYPE_CHECKING:
    from sluiceway.server.runner import Server

logger = logging.getLogger("sluiceway.error")

STABLE_S = 10.0  # a worker that ran this long is restarted without delay
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
# Past its own bound (or a forwarded second signal) a worker that has not
# exited has a blocked loop: nothing but a kill ends it.
KILL_MARGIN_S = 5.0
EXIT_STARTUP_CODES = (1, 2)  # the CLI's codes for a failed lifespan / an app that does not load

_CONTEXT = multiprocessing.get_context("spawn")


@dataclass
class Worker:
    """One worker slot's current process."""

    slot: int
    process: BaseProcess
    ready_pipe: Connection  # the worker sends its pid once accepting
    started_at: float
    ready: bool = False


@dataclass
class _Slot:
    failures: int = 0  # quick deaths in a row, for the backoff
    restart_at: float | None = None  # a restart waiting for its delay


@dataclass
class Supervisor:
    config: Config
    app: str
    sockets: list[socket.socket]
    workers: dict[int, Worker] = field(default_factory=dict)
    slots: dict[int, _Slot] = field(default_factory=dict)
    signals: list[int] = field(default_factory=list)
    any_ready: bool = False
    forced: bool = False

    def run(self) -> int:
        """Run until a signal or a fatal start-up failure; returns the exit code."""
        config = self.config
        watcher = None
        if config.reload:
            from sluiceway.server.reload import FileWatcher

            watcher = FileWatcher(
                config.reload_dirs, config.reload_includes, config.reload_excludes
            )
            watcher.changes()  # the baseline
            logger.info("Watching for changes in %s", ", ".join(watcher.dirs))
        count = 1 if config.reload else config.workers
        with _SignalCatcher(self.signals) as wakeup:
            logger.info("Supervisor (pid %d) starting %d worker(s).", os.getpid(), count)
            for slot in range(count):
                self.slots[slot] = _Slot()
                self._start(slot)
            next_poll = time.monotonic() + config.reload_delay_s
            while True:
                now = time.monotonic()
                due = [s.restart_at for s in self.slots.values() if s.restart_at is not None]
                if watcher is not None:
                    due.append(next_poll)
                timeout = max(0.0, min(due) - now) if due else None
                waitables: list[Any] = [wakeup]
                for worker in self.workers.values():
                    waitables.append(worker.process.sentinel)
                    if not worker.ready:
                        waitables.append(worker.ready_pipe)
                wait(waitables, timeout)
                _drain(wakeup)
                if self.signals:
                    break
                self._collect_ready()
                code = self._collect_exits()
                if code is not None:
                    self._stop_all(wakeup)
                    return code
                now = time.monotonic()
                for slot, state in self.slots.items():
                    if state.restart_at is not None and state.restart_at <= now:
                        state.restart_at = None
                        self._start(slot)
                if watcher is not None and now >= next_poll:
                    changed = watcher.changes()
                    next_poll = time.monotonic() + config.reload_delay_s
                    if changed:
                        self._reload(changed, wakeup)
                        if self.signals:
                            break
            name = signal.Signals(self.signals[0]).name
            logger.info("Received %s: stopping the workers.", name)
            # Only the first signal asked to stop: one that came since (even
            # before _stop_all looks) is the second, which forces the exit.
            return self._stop_all(wakeup, signals_seen=1)

    # -- workers ---------------------------------------------------------------------------

    def _start(self, slot: int) -> None:
        reader, writer = _CONTEXT.Pipe(duplex=False)
        process = _CONTEXT.Process(
            target=worker_main,
            # The fields, not the object: the worker rebuilds (and checks) its
            # Config, whatever the pickling of frozen slotted dataclasses.
            args=(_fields(self.config), self.app, self.sockets, writer),
            name=f"sluiceway-worker-{slot}",
        )
        # The child inherits an ignored SIGINT until its server installs its
        # handlers: a Ctrl+C in that window must not kill it with a traceback.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        writer.close()  # ours: the pipe reads EOF once the child's end closes
        self.workers[slot] = Worker(slot, process, reader, time.monotonic())

    def _collect_ready(self) -> None:
        for worker in self.workers.values():
            if worker.ready or not worker.ready_pipe.poll():
                continue
            try:
                worker.ready_pipe.recv()
            except (EOFError, OSError):
                continue  # it died before it was ready: _collect_exits sees it
            worker.ready = True
            self.any_ready = True
            logger.info("Worker %d (pid %s) ready.", worker.slot, worker.process.pid)

    def _lived(self, worker: Worker) -> bool:
        return time.monotonic() - worker.started_at >= STABLE_S

    def _collect_exits(self) -> int | None:
        """Handle workers that exited; returns an exit code when the server must stop."""
        for slot, worker in list(self.workers.items()):
            if worker.process.is_alive():
                continue
            worker.process.join()
            code = worker.process.exitcode
            del self.workers[slot]
            worker.ready_pipe.close()
            state = self.slots[slot]
            how = f"signal {-code}" if code is not None and code < 0 else f"code {code}"
            if self.config.reload:
                logger.warning(
                    "Worker (pid %s) exited with %s; waiting for a file change to restart.",
                    worker.process.pid,
                    how,
                )
                continue  # _reload starts it again
            if code == 0 and self.config.limit_max_requests is not None:
                # It served its --limit-max-requests and stopped cleanly on its own.
                logger.info(
                    "Worker %d (pid %s) reached its request limit; starting a new one.",
                    slot,
                    worker.process.pid,
                )
                state.failures = 0
                state.restart_at = time.monotonic()
                continue
            if not worker.ready and not self.any_ready and code in EXIT_STARTUP_CODES:
                logger.error("Worker (pid %s) could not start; stopping.", worker.process.pid)
                return int(code) if code is not None else 1
            if self._lived(worker):
                state.failures = 0
                delay = 0.0
            else:
                state.failures += 1
                delay = min(BACKOFF_FIRST_S * 2 ** (state.failures - 1), BACKOFF_MAX_S)
            logger.warning(
                "Worker %d (pid %s) exited unexpectedly with %s; restarting in %g s.",
                slot,
                worker.process.pid,
                how,
                delay,
            )
            state.restart_at = time.monotonic() + delay
        return None

    def _reload(self, changed: list[str], wakeup: socket.socket) -> None:
        shown = ", ".join(os.path.relpath(path) for path in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        logger.warning("Detected changes in %s%s: reloading.", shown, more)
        self._stop_all(wakeup, quiet=True)
        if self.signals:
            return  # asked to stop meanwhile
        for slot, state in self.slots.items():
            state.restart_at = None
            state.failures = 0
            self._start(slot)

    def _stop_all(
        self, wakeup: socket.socket, quiet: bool = False, signals_seen: int | None = None
    ) -> int:
        """SIGTERM every worker and wait (bounded); returns the supervisor's exit code."""
        config = self.config
        workers = list(self.workers.values())
        self.workers.clear()
        for state in self.slots.values():
            state.restart_at = None
        # Stopping for a signal, the next one forces the workers out; stopping
        # for a reload, a first signal only means "do not start them again".
        seen_signals = (
            signals_seen if signals_seen is not None else len(self.signals) + (1 if quiet else 0)
        )
        for worker in workers:
            _send(worker, signal.SIGTERM)
        started = time.monotonic()
        bound = process_exit_bound_s(
            config.graceful_shutdown_timeout_s, config.lifespan_shutdown_timeout_s
        )
        deadline = started + bound + KILL_MARGIN_S
        alive = [w for w in workers if w.process.is_alive()]
        while alive:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning(
                    "Killing %d worker(s) still running after %.1f s.",
                    len(alive),
                    time.monotonic() - started,
                )
                for worker in alive:
                    worker.process.kill()
                    worker.process.join(KILL_MARGIN_S)
                break
            wait([wakeup, *(w.process.sentinel for w in alive)], remaining)
            _drain(wakeup)
            if len(self.signals) > seen_signals:
                # Another signal: the workers treat a second one as "now".
                seen_signals = len(self.signals)
                self.forced = True
                logger.warning("Received another signal: forcing the workers to exit.")
                for worker in alive:
                    _send(worker, signal.SIGINT)
                deadline = min(deadline, time.monotonic() + KILL_MARGIN_S)
            alive = [w for w in alive if w.process.is_alive()]
        unclean = []
        for worker in workers:
            worker.process.join(0)
            worker.ready_pipe.close()
            code = worker.process.exitcode
            # One still importing its app had no handler yet (the server
            # installs them before lifespan startup): SIGTERM ended it, and
            # it had served nothing.
            if code != 0 and not (code == -signal.SIGTERM and not worker.ready):
                unclean.append(code)
        if quiet:
            return 0
        if self.forced:
            return 130
        if unclean:
            logger.error("%d worker(s) did not stop cleanly (exit %s).", len(unclean), unclean)
            return 1
        logger.info("All workers stopped.")
        return 0


def _send(worker: Worker, sig: signal.Signals) -> None:
    pid = worker.process.pid
    if pid is not None and worker.process.is_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _drain(wakeup: socket.socket) -> None:
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while wakeup.recv(512):
            pass


class _SignalCatcher:
    """SIGINT/SIGTERM append to ``signals`` and wake the ``select`` through a socket pair."""

    def __init__(self, signals: list[int]) -> None:
        self._signals = signals
        self._previous: dict[int, Any] = {}
        self._old_wakeup = -1
        self._pair = socket.socketpair()
        for sock in self._pair:
            sock.setblocking(False)

    def __enter__(self) -> socket.socket:
        self._old_wakeup = signal.set_wakeup_fd(self._pair[1].fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self._pair[0]

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        for sock in self._pair:
            sock.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)


# --- the supervisor's entry point -----------------------------------------------------------


def supervise(config: Config, app: str) -> None:
    """Bind, run the workers until a signal, clean up.

    Raises:
        ConfigError: a reload dir is missing or the sockets cannot be bound
            (before any worker starts).
        SystemExit: a worker could not start (its exit code), or a worker did not stop cleanly.
        KeyboardInterrupt: a second signal forced the exit.
    """
    from sluiceway.server.sockets import bind_sockets, describe_socket

    if config.reload:
        for directory in config.reload_dirs:
            if not os.path.isdir(directory):
                raise ConfigError(f"--reload-dir {directory!r}: not a directory")
    if config.is_ssl:
        from sluiceway.transport.tls import create_ssl_context

        # Each worker builds its own context; a bad file or key password is
        # said once, here, not by every worker after "Listening on".
        create_ssl_context(config)
    sockets = bind_sockets(config)
    try:
        for sock in sockets:
            # Listen now: connections wait in the backlog while workers start
            # or reload, instead of being refused.
            sock.listen(config.backlog)
        scheme = "https" if config.is_ssl else "http"
        for sock in sockets:
            logger.info("Listening on %s", describe_socket(sock, scheme, config))
        logger.info("Press CTRL+C to stop.")
        code = Supervisor(config, app, sockets).run()
    finally:
        for sock in sockets:
            sock.close()
        if config.uds is not None:
            with contextlib.suppress(OSError):
                os.unlink(config.uds)
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise SystemExit(code)


# --- the worker's entry point (runs in the spawned process) ---------------------------------


def _fields(config: Config) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def worker_main(
    fields: dict[str, Any], app: str, sockets: list[socket.socket], ready: Connection
) -> None:
    """Serve ``sockets`` until SIGTERM; exit codes as the CLI's (0, 1, 2, 130)."""
    config = Config(**fields)
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # see the module docstring: Ctrl+C goes to the supervisor only
    if config.reload:
        # A .pyc records its source's mtime in whole seconds (and its size):
        # one written now would be taken for a same-size edit saved within
        # the same second, and the reload would serve the old code.
        sys.dont_write_bytecode = True
    from sluiceway.logconfig import configure_logging
    from sluiceway.server.runner import serve_config

    parent = multiprocessing.parent_process()

    def started(server: Server) -> None:
        if parent is not None:
            asyncio.get_running_loop().add_reader(parent.sentinel, _orphaned, server)
        ready.send(os.getpid())
        ready.close()

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
