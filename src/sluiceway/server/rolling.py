"""SIGHUP under ``--workers``: replace the workers one at a time, with no downtime.

``RollingRestart`` is the supervisor's (``server/supervisor.py``) restart in
progress. ``begin()`` queues every slot; ``step()``, called from the
supervisor's loop after each wake-up, moves it on:

1. start the next slot's replacement (a new process, which imports the code
   as it is now); the old worker keeps serving;
2. once the replacement reports ``ready`` (its listeners are open: a message
   from the worker, never a guess from time), it takes the slot, and the old
   worker gets SIGTERM and drains (``retiring``); then the next slot;
3. a replacement that exits first, or is not serving within
   ``--timeout-lifespan-startup`` + ``--timeout-worker-healthcheck``, is
   killed: one ERROR line, and the restart ends there, the old workers of
   that and later slots serving on.

Nothing here blocks: every wait is a deadline (``deadlines()``) or a process
the supervisor's ``select`` watches (``processes()``), so signals, deaths,
health checks and the systemd watchdog go on meanwhile. A SIGHUP during a
restart runs another one after it (the code may have changed again).
systemd hears RELOADING=1 at the start and READY=1 at the end, whichever
way it ended (``STATUS=`` says which).

A retiring worker is not waited for before the next slot: a long request on
one does not hold up the restart (uvicorn waits), at the cost of up to
twice the workers' memory while they drain. One still running
``KILL_MARGIN_S`` past its own stop bound has a blocked loop and is killed.

No connection is lost on the way: every worker serves the same listening
sockets, so a draining worker closes only its own descriptor of each, and
connections waiting in the accept queue go to the other workers.

Imports ``sluiceway.server.stopping`` and ``sluiceway.server.worker_process``.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING

from sluiceway.server.stopping import process_exit_bound_s
from sluiceway.server.worker_process import KILL_MARGIN_S, Worker, exit_text, send_signal

if TYPE_CHECKING:
    from sluiceway.server.supervisor import Supervisor

logger = logging.getLogger("sluiceway.error")


class RollingRestart:
    """The SIGHUP restart of ``supervisor``'s workers; see the module docstring."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self.active = False
        self._again = False  # a SIGHUP came during this restart
        self._queue: list[int] = []  # slots left to replace
        self._replacement: Worker | None = None  # the new worker starting for a slot
        self._deadline = 0.0  # ... which must serve by then
        self._retiring: list[Worker] = []  # old workers draining after their replacement took over

    def processes(self) -> list[Worker]:
        """The workers this restart started or retired that are still running."""
        starting = [self._replacement] if self._replacement is not None else []
        return [*self._retiring, *starting]

    def deadlines(self) -> list[float]:
        due = [w.kill_at for w in self._retiring if w.kill_at is not None]
        if self._replacement is not None:
            due.append(self._deadline)
        return due

    def abandon(self) -> list[Worker]:
        """Stop restarting (the supervisor stops); returns the processes for it to stop."""
        processes = self.processes()
        self.active = self._again = False
        self._queue.clear()
        self._replacement = None
        self._retiring.clear()
        return processes

    def begin(self) -> None:
        supervisor = self._supervisor
        if self.active:
            self._again = True
            logger.info("Received SIGHUP during a restart: another one follows it.")
            return
        self.active = True
        self._queue = sorted(supervisor.slots)
        logger.info(
            "Received SIGHUP: replacing the %d worker(s) one at a time.", len(supervisor.slots)
        )
        if supervisor.notifier is not None:
            supervisor.notifier.reloading("Replacing the workers")

    def step(self) -> None:
        """Move on: start the next slot's replacement, or promote or drop the one starting."""
        supervisor = self._supervisor
        while self.active:
            new = self._replacement
            if new is None:
                if not self._queue:
                    logger.info("Restart complete: every worker replaced.")
                    self._end(f"{len(supervisor.workers)} worker(s) serving")
                    continue
                slot = self._queue.pop(0)
                # A slot without a worker (it died, its restart is pending)
                # gets a new process, with the new code, anyway.
                if slot in supervisor.workers:
                    self._replacement = supervisor.spawn(slot)
                    self._deadline = time.monotonic() + self._bound_s()
                continue
            if new.ready:
                self._promote(new)
                continue
            if new.process.is_alive() and time.monotonic() < self._deadline:
                return  # still starting: the old worker serves meanwhile
            self._replacement = None
            if new.process.is_alive():
                new.process.kill()
                why = f"was not serving after {self._bound_s():g} s"
            else:
                why = f"exited with {exit_text(new.process.exitcode)} before serving"
            new.process.join(KILL_MARGIN_S)
            new.pipe.close()
            logger.error(
                "Restart stopped: the new worker %d (pid %s) %s; the old workers keep serving.",
                new.slot,
                new.process.pid,
                why,
            )
            self._end(f"Restart stopped: a new worker {why}; the old workers serve")

    def collect_retired(self) -> None:
        """Reap the old workers that finished draining; kill one whose drain is stuck."""
        for worker in list(self._retiring):
            pid = worker.process.pid
            if worker.process.is_alive():
                if worker.kill_at is not None and time.monotonic() >= worker.kill_at:
                    logger.warning("Killing replaced worker (pid %s): its drain is stuck.", pid)
                    worker.process.kill()
                    worker.kill_at = None
                continue
            worker.process.join()
            worker.pipe.close()
            self._retiring.remove(worker)
            code = worker.process.exitcode
            if code == 0:
                logger.info("Replaced worker (pid %s) stopped.", pid)
            else:
                logger.warning("Replaced worker (pid %s) exited with %s.", pid, exit_text(code))

    def _bound_s(self) -> float:
        # The worker bounds its lifespan startup itself; the import and the
        # interpreter's start must fit in the health-check timeout.
        config = self._supervisor.config
        return config.lifespan_startup_timeout_s + config.timeout_worker_healthcheck_s

    def _promote(self, new: Worker) -> None:
        supervisor = self._supervisor
        self._replacement = None
        old = supervisor.workers.get(new.slot)
        supervisor.workers[new.slot] = new
        state = supervisor.slots[new.slot]
        state.restart_at = None
        state.failures = 0
        if old is None:
            return
        logger.info(
            "Worker %d (pid %s) replaced pid %s, which now drains.",
            new.slot,
            new.process.pid,
            old.process.pid,
        )
        old.signalled = True
        send_signal(old, signal.SIGTERM)
        config = supervisor.config
        bound = process_exit_bound_s(
            config.graceful_shutdown_timeout_s, config.lifespan_shutdown_timeout_s
        )
        old.kill_at = time.monotonic() + bound + KILL_MARGIN_S
        old.ping_sent_at = None
        self._retiring.append(old)

    def _end(self, status: str) -> None:
        self.active = False
        self._queue.clear()
        notifier = self._supervisor.notifier
        if notifier is not None:
            # READY=1 ends the reload for systemd either way (the old workers
            # serve); STATUS= (systemctl status) says which way it went.
            notifier.ready(status)
        if self._again:
            self._again = False
            self.begin()
