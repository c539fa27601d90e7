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
  ``--reload-delay`` seconds (1 by default) the watcher (``server/reload.py``:
  watchfiles, else polling) reports changes; on one the worker is stopped gracefully and a
  new one started, which imports the changed code. A worker that fails
  while reloading is not restarted until the next change (fix the typo,
  save, it comes back).
* SIGHUP: a zero-downtime restart (``server/rolling.py``). One slot at a
  time, a new worker starts and the old one keeps serving until the new one
  reports it accepts; only then does the old one get its SIGTERM and drain.
  A new worker that fails to start ends the restart, the old workers
  serving on.
* Health checks (``--timeout-worker-healthcheck``, uvicorn's name): each
  serving worker is pinged through its pipe every that many seconds and
  must answer within as long again. The answer comes from the worker's
  event loop (``server/worker_process.py``), so a loop the app blocks (a
  synchronous call in ``async`` code) fails it: the worker is killed and
  restarted like one that died.
* systemd (``server/systemd.py``): with ``NOTIFY_SOCKET`` set the supervisor
  says READY=1 once every worker serves, RELOADING=1 then READY=1 around a
  SIGHUP restart, STOPPING=1 when it stops, and pings the watchdog from
  this loop (its waits included). Sockets systemd passed (``LISTEN_FDS``)
  are served instead of binding.

Sockets: every worker serves the same listening sockets (inherited, not one
``SO_REUSEPORT`` socket each), so the kernel keeps a single accept queue per
address. A draining worker closes only its own descriptor: the queue, and
any connection waiting in it, stays with the socket the supervisor and the
other workers still hold, and one of them accepts it.

Workers run in their own process group, so a terminal's Ctrl+C reaches only
the supervisor, which forwards it once (else each worker would see it twice:
from the terminal and from us, and force its exit). A worker whose
supervisor disappears (``kill -9``) shuts itself down gracefully.

Imports ``sluiceway.config``, ``sluiceway.errors``, ``sluiceway.server.stopping``
(the workers' stop bound), ``sluiceway.server.sockets`` (binding),
``sluiceway.server.systemd``, ``sluiceway.transport.tls`` (to check the TLS
files before any worker starts), ``sluiceway.server.reload``,
``sluiceway.server.worker_process`` (spawning a worker, and its entry point),
``sluiceway.server.rolling`` (SIGHUP) and ``sluiceway.server.signal_catcher``
(signals that wake the supervisor's wait).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any

from sluiceway.config import Config
from sluiceway.errors import ConfigError
from sluiceway.server import systemd
from sluiceway.server.rolling import RollingRestart
from sluiceway.server.signal_catcher import SignalCatcher, drain
from sluiceway.server.stopping import process_exit_bound_s
from sluiceway.server.worker_process import (
    KILL_MARGIN_S,
    PING,
    PONG,
    READY,
    Worker,
    exit_text,
    send_signal,
    spawn_worker,
)

logger = logging.getLogger("sluiceway.error")

STABLE_S = 10.0  # a worker that ran this long is restarted without delay
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
EXIT_STARTUP_CODES = (1, 2)  # the CLI's codes for a failed lifespan / an app that does not load


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
    notifier: systemd.Notifier | None = None
    hups: list[int] = field(default_factory=list)
    any_ready: bool = False
    forced: bool = False
    announced: bool = False  # READY=1 said for the first full set of workers
    next_watchdog_at: float = 0.0
    rolling: RollingRestart = field(init=False)  # SIGHUP's restart

    def __post_init__(self) -> None:
        self.rolling = RollingRestart(self)

    def run(self) -> int:
        """Run until a signal or a fatal start-up failure; returns the exit code."""
        config = self.config
        watcher = None
        if config.reload:
            from sluiceway.server.reload import make_watcher

            watcher = make_watcher(
                config.reload_dirs,
                config.reload_includes,
                config.reload_excludes,
                config.reload_backend,
            )
            watcher.changes()  # the baseline
            logger.info("Watching for changes in %s (%s)", ", ".join(watcher.dirs), watcher.backend)
        count = 1 if config.reload else config.workers
        with SignalCatcher(self.signals, self.hups) as wakeup:
            logger.info("Supervisor (pid %d) starting %d worker(s).", os.getpid(), count)
            for slot in range(count):
                self.slots[slot] = _Slot()
                self._start(slot)
            next_poll = time.monotonic() + config.reload_delay_s
            while True:
                now = time.monotonic()
                due = [s.restart_at for s in self.slots.values() if s.restart_at is not None]
                due.extend(self._deadlines())
                if watcher is not None:
                    due.append(next_poll)
                timeout = max(0.0, min(due) - now) if due else None
                wait(self._waitables(wakeup), timeout)
                drain(wakeup)
                if self.signals:
                    break
                self._collect_messages()
                code = self._collect_exits()
                if code is not None:
                    self._notify_stopping()
                    self._stop_all(wakeup)
                    return code
                self.rolling.collect_retired()
                now = time.monotonic()
                for slot, state in self.slots.items():
                    if state.restart_at is not None and state.restart_at <= now:
                        state.restart_at = None
                        self._start(slot)
                if self.hups:
                    self.hups.clear()
                    self.rolling.begin()
                self.rolling.step()
                self._check_health()
                self._announce_ready()
                self._tick_watchdog()
                if watcher is not None and now >= next_poll:
                    changed = watcher.changes()
                    next_poll = time.monotonic() + config.reload_delay_s
                    if changed:
                        self._reload(changed, wakeup)
                        if self.signals:
                            break
            name = signal.Signals(self.signals[0]).name
            logger.info("Received %s: stopping the workers.", name)
            self._notify_stopping()
            # Only the first signal asked to stop: one that came since (even
            # before _stop_all looks) is the second, which forces the exit.
            return self._stop_all(wakeup, signals_seen=1)

    # -- workers ---------------------------------------------------------------------------

    def _start(self, slot: int) -> None:
        self.workers[slot] = self.spawn(slot)

    def spawn(self, slot: int) -> Worker:
        return spawn_worker(self.config, self.app, self.sockets, slot)

    def _waitables(self, wakeup: socket.socket) -> list[Any]:
        waitables: list[Any] = [wakeup]
        for worker in self._all_workers():
            waitables.append(worker.process.sentinel)
            if self._expects_message(worker):
                waitables.append(worker.pipe)
        return waitables

    def _all_workers(self) -> list[Worker]:
        return [*self.workers.values(), *self.rolling.processes()]

    @staticmethod
    def _expects_message(worker: Worker) -> bool:
        return not worker.pipe_closed and (not worker.ready or worker.ping_sent_at is not None)

    def _deadlines(self) -> list[float]:
        """When the loop must look again, besides restarts and the reloader's poll."""
        due = self.rolling.deadlines()
        timeout = self.config.timeout_worker_healthcheck_s
        for worker in self.workers.values():
            if worker.ready and not worker.pipe_closed:
                sent = worker.ping_sent_at
                due.append(worker.next_ping_at if sent is None else sent + timeout)
        return due + self._watchdog_due()

    def _collect_messages(self) -> None:
        """The workers' "ready" and health-check "pong" messages."""
        now = time.monotonic()
        for worker in self._all_workers():
            if not self._expects_message(worker) or not worker.pipe.poll():
                continue
            try:
                message = worker.pipe.recv_bytes()
            except (EOFError, OSError):
                worker.pipe_closed = True  # it is exiting: its sentinel tells the rest
                continue
            worker.next_ping_at = now + self.config.timeout_worker_healthcheck_s
            if message == PONG:
                worker.ping_sent_at = None
            elif message == READY and not worker.ready:
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
            worker.pipe.close()
            state = self.slots[slot]
            how = exit_text(code)
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

    # -- health checks and systemd -----------------------------------------------------------

    def _check_health(self) -> None:
        """Ping the serving workers; kill one that left a ping unanswered too long."""
        timeout = self.config.timeout_worker_healthcheck_s
        now = time.monotonic()
        for worker in self.workers.values():
            if not worker.ready or worker.pipe_closed:
                continue
            if worker.ping_sent_at is None:
                if now >= worker.next_ping_at:
                    try:
                        worker.pipe.send_bytes(PING)
                    except OSError:
                        worker.pipe_closed = True  # exiting: its sentinel tells
                        continue
                    worker.ping_sent_at = now
            elif now - worker.ping_sent_at >= timeout:
                logger.error(
                    "Worker %d (pid %s) did not answer a health check within %g s "
                    "(a blocked event loop?): killing it.",
                    worker.slot,
                    worker.process.pid,
                    timeout,
                )
                worker.process.kill()  # _collect_exits restarts it
                worker.ping_sent_at = None
                worker.pipe_closed = True

    def _announce_ready(self) -> None:
        if self.announced or self.notifier is None:
            return
        if all(slot in self.workers and self.workers[slot].ready for slot in self.slots):
            self.announced = True
            self.notifier.ready(f"{len(self.slots)} worker(s) serving")

    def _watchdog_due(self) -> list[float]:
        notifier = self.notifier
        if notifier is None or notifier.watchdog_interval_s is None:
            return []
        return [self.next_watchdog_at]

    def _tick_watchdog(self) -> None:
        notifier = self.notifier
        if notifier is None or notifier.watchdog_interval_s is None:
            return
        now = time.monotonic()
        if now >= self.next_watchdog_at:
            notifier.watchdog()
            self.next_watchdog_at = now + notifier.watchdog_interval_s

    def _notify_stopping(self) -> None:
        if self.notifier is not None:
            self.notifier.stopping("Stopping the workers")

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
        workers = [*self.workers.values(), *self.rolling.abandon()]
        self.workers.clear()
        for state in self.slots.values():
            state.restart_at = None
        # Stopping for a signal, the next one forces the workers out; stopping
        # for a reload, a first signal only means "do not start them again".
        seen_signals = (
            signals_seen if signals_seen is not None else len(self.signals) + (1 if quiet else 0)
        )
        for worker in workers:
            if not worker.signalled:  # a replaced one draining has had it: a second would force
                worker.signalled = True
                send_signal(worker, signal.SIGTERM)
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
            until = min([deadline, *self._watchdog_due()]) - time.monotonic()
            wait([wakeup, *(w.process.sentinel for w in alive)], max(0.0, until))
            drain(wakeup)
            self._tick_watchdog()
            if len(self.signals) > seen_signals:
                # Another signal: the workers treat a second one as "now".
                seen_signals = len(self.signals)
                self.forced = True
                logger.warning("Received another signal: forcing the workers to exit.")
                for worker in alive:
                    send_signal(worker, signal.SIGINT)
                deadline = min(deadline, time.monotonic() + KILL_MARGIN_S)
            alive = [w for w in alive if w.process.is_alive()]
        unclean = []
        for worker in workers:
            worker.process.join(0)
            worker.pipe.close()
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


# --- the supervisor's entry point -----------------------------------------------------------


def supervise(config: Config, app: str) -> None:
    """Bind, run the workers until a signal, clean up.

    Raises:
        ConfigError: a reload dir is missing or the sockets cannot be bound
            (before any worker starts).
        SystemExit: a worker could not start (its exit code), or a worker did not stop cleanly.
        KeyboardInterrupt: a second signal forced the exit.
    """
    from sluiceway.server.sockets import bind_sockets, describe_socket, removable_path

    if config.reload:
        for directory in config.reload_dirs:
            if not os.path.isdir(directory):
                raise ConfigError(f"--reload-dir {directory!r}: not a directory")
    if config.is_ssl:
        from sluiceway.transport.tls import create_ssl_context

        # Each worker builds its own context; a bad file or key password is
        # said once, here, not by every worker after "Listening on".
        create_ssl_context(config)
    # Read (and unset) before any worker is spawned: only we notify systemd.
    notifier = systemd.Notifier.from_environ()
    sockets = bind_sockets(config)
    uds_path = removable_path(config, sockets)
    metrics = None
    try:
        for sock in sockets:
            # Listen now: connections wait in the backlog while workers start
            # or reload, instead of being refused.
            sock.listen(config.backlog)
        if config.metrics_port is not None:
            # One /metrics for all workers, summed here (server/metrics_listener.py).
            from sluiceway.server.metrics_listener import SupervisorExporter

            metrics = SupervisorExporter.start(config)
            config = metrics.worker_config(config)
        scheme = "https" if config.is_ssl else "http"
        for sock in sockets:
            logger.info("Listening on %s", describe_socket(sock, scheme, config))
        logger.info("Press CTRL+C to stop.")
        code = Supervisor(config, app, sockets, notifier=notifier).run()
    finally:
        if metrics is not None:
            metrics.close()
        for sock in sockets:
            sock.close()
        if uds_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(uds_path)
        if notifier is not None:
            notifier.close()
    if code == 130:
        raise KeyboardInterrupt
    if code != 0:
        raise SystemExit(code)
