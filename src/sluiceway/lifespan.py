"""The ASGI lifespan protocol (asgiref specs/lifespan.rst, version 2.0).

Two layers, after the project's sans-I/O rule:

* ``LifespanMachine`` is the protocol alone: named phases, the table of what
  the application may send in each, and what the app's exit means in each.
  No awaits, no logging; tested without an event loop.
* ``Lifespan`` runs the app's lifespan task on the loop and drives the
  machine: ``await startup()`` before the first connection is accepted,
  ``await shutdown()`` after connections drained. Every wait has a timeout.

Mode ``auto`` serves an app that raises on the lifespan scope (or returns
without answering) as the spec asks, with one log line; mode ``on`` refuses
to start. ``lifespan.startup.failed`` stops the server in every mode.

A configuration error raised during startup (``is_config_error``: a
``ConfigError``, an ``ImportError``, Django's ``ImproperlyConfigured``) is
never taken for "no lifespan support": in every mode it stops the server as
a ``ConfigError`` (the CLI's one line and exit code 2), since serving on
would only fail on every request instead.

The ``state`` dict handed in becomes ``scope["state"]``; the server copies it
(shallowly) into every request scope, so it must be the one in ``ServerState``.

Imports only the standard library, ``sluiceway.asgi`` and ``sluiceway.errors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Mapping
from typing import Any

from sluiceway.asgi.types import ASGIApp, Message
from sluiceway.errors import ASGIMessageError, ConfigError, LifespanFailed

logger = logging.getLogger("sluiceway.error")

LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}


class LifespanPhase(enum.Enum):
    IDLE = "idle"  # nothing sent yet
    DISABLED = "disabled"  # --lifespan off
    STARTING = "starting"  # lifespan.startup sent, no answer yet
    STARTED = "started"  # lifespan.startup.complete received
    UNSUPPORTED = "unsupported"  # auto: the app raised or returned instead of answering
    STARTUP_FAILED = "startup failed"
    SHUTTING_DOWN = "shutting down"  # lifespan.shutdown sent, no answer yet
    SHUT_DOWN = "shut down"  # lifespan.shutdown.complete received
    SHUTDOWN_FAILED = "shutdown failed"


P = LifespanPhase

# (phase, type the app sends) -> next phase. Anything missing is an app bug.
APP_SENDS: dict[tuple[LifespanPhase, str], LifespanPhase] = {
    (P.STARTING, "lifespan.startup.complete"): P.STARTED,
    (P.STARTING, "lifespan.startup.failed"): P.STARTUP_FAILED,
    (P.SHUTTING_DOWN, "lifespan.shutdown.complete"): P.SHUT_DOWN,
    (P.SHUTTING_DOWN, "lifespan.shutdown.failed"): P.SHUTDOWN_FAILED,
}


class LifespanMachine:
    """The lifespan protocol's state, without I/O.

    ``message`` holds the app's text from a ``*.failed`` message, or a
    description of why startup failed otherwise.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.phase = P.IDLE
        self.message = ""
        self.app_exited = False
        self.app_error: BaseException | None = None
        # Startup ended with a configuration error (see is_config_error).
        self.config_error = False

    def start(self) -> Message:
        """Begin startup; returns the event for the app's ``receive``."""
        if self.mode == "off":
            self.phase = P.DISABLED
            return {}
        self._expect(P.IDLE)
        self.phase = P.STARTING
        return {"type": "lifespan.startup"}

    def begin_shutdown(self) -> Message | None:
        """Begin shutdown; the event for the app, or None when there is nobody to tell."""
        if self.phase is not P.STARTED or self.app_exited:
            return None
        self.phase = P.SHUTTING_DOWN
        return {"type": "lifespan.shutdown"}

    def app_sent(self, message: Mapping[str, Any]) -> LifespanPhase:
        """Apply a message from the app.

        Raises:
            ASGIMessageError: the message is malformed or not allowed in this phase.
        """
        kind = message.get("type") if isinstance(message, Mapping) else None
        if not isinstance(kind, str):
            raise ASGIMessageError(f"lifespan message must be a dict with a 'type': {message!r}")
        following = APP_SENDS.get((self.phase, kind))
        if following is None:
            raise ASGIMessageError(
                f"unexpected ASGI message {kind!r} in lifespan phase {self.phase.value!r}"
            )
        text = message.get("message", "")
        if not isinstance(text, str):
            raise ASGIMessageError(f"{kind} 'message' must be a str, got {type(text).__name__}")
        self.phase = following
        if following in (P.STARTUP_FAILED, P.SHUTDOWN_FAILED):
            self.message = text
        return following

    def app_returned(self, exc: BaseException | None) -> LifespanPhase:
        """Apply the end of the app's lifespan call (``exc`` if it raised)."""
        self.app_exited = True
        self.app_error = exc
        if self.phase is P.STARTING:
            if exc is not None and is_config_error(exc):
                self.phase = P.STARTUP_FAILED
                self.config_error = True
                self.message = " ".join(f"{type(exc).__name__}: {exc}".split())
            elif self.mode == "auto":
                self.phase = P.UNSUPPORTED
            else:
                self.phase = P.STARTUP_FAILED
                self.message = (
                    f"exception in lifespan startup: {exc!r}"
                    if exc is not None
                    else "the application returned without completing lifespan startup"
                )
        elif self.phase is P.SHUTTING_DOWN:
            self.phase = P.SHUTDOWN_FAILED
            self.message = (
                f"exception in lifespan shutdown: {exc!r}"
                if exc is not None
                else "the application returned without completing lifespan shutdown"
            )
        return self.phase

    def _expect(self, phase: LifespanPhase) -> None:
        if self.phase is not phase:
            raise RuntimeError(f"lifespan is {self.phase.value!r}, expected {phase.value!r}")


def is_config_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised by the app's lifespan startup, is a configuration error.

    By class: ``ConfigError`` (a channel layer that cannot load, say),
    ``ImportError`` (a missing package), and Django's ``ImproperlyConfigured``
    (matched by name: this module does not import Django).
    """
    if isinstance(exc, (ConfigError, ImportError)):
        return True
    return any(cls.__name__ == "ImproperlyConfigured" for cls in type(exc).__mro__)


class Lifespan:
    """Runs the application's lifespan task and waits on it, with timeouts."""

    def __init__(
        self,
        app: ASGIApp,
        mode: str,
        state: dict[str, Any],
        startup_timeout_s: float,
        shutdown_timeout_s: float,
    ) -> None:
        self.app = app
        self.state = state
        self.machine = LifespanMachine(mode)
        self.startup_timeout_s = startup_timeout_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._settled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def phase(self) -> LifespanPhase:
        return self.machine.phase

    async def startup(self) -> None:
        """Send ``lifespan.startup`` and wait for the answer.

        Raises:
            LifespanFailed: the app sent ``lifespan.startup.failed``, raised
                under mode ``on``, or did not answer in time.
            ConfigError: the app raised a configuration error (``is_config_error``).
        """
        event = self.machine.start()
        if self.machine.phase is P.DISABLED:
            return
        logger.debug("Waiting for application startup.")
        scope = {"type": "lifespan", "asgi": dict(LIFESPAN_ASGI), "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        self._inbox.put_nowait(event)
        if not await self._wait(self.startup_timeout_s):
            await self.cancel()
            raise LifespanFailed(
                f"lifespan startup did not complete within {self.startup_timeout_s:g} s"
            )
        phase = self.machine.phase
        if phase is P.STARTED:
            logger.info("Application startup complete.")
        elif phase is P.UNSUPPORTED:
            error = self.machine.app_error
            logger.info(
                "The application does not support the ASGI lifespan protocol (%s); "
                "serving without it.",
                f"it raised {error!r}" if error is not None else "it returned without answering",
            )
        elif phase is P.STARTUP_FAILED:
            # Give the app a moment to finish (Starlette re-raises after .failed).
            await self._finish(min(self.shutdown_timeout_s, 1.0))
            if self.machine.config_error:
                raise ConfigError(f"application startup: {self.machine.message}")
            raise LifespanFailed(self.machine.message or "application startup failed")

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown`` (if startup completed) and wait for the answer.

        Failures are logged, never raised: the process is ending anyway.
        """
        event = self.machine.begin_shutdown()
        if event is None:
            await self._finish(0)
            return
        self._settled.clear()
        self._inbox.put_nowait(event)
        if not await self._wait(self.shutdown_timeout_s):
            logger.warning(
                "Application shutdown did not complete within %g s.", self.shutdown_timeout_s
            )
        elif self.machine.phase is P.SHUTDOWN_FAILED:
            logger.error("Application shutdown failed: %s", self.machine.message)
        else:
            logger.info("Application shutdown complete.")
        await self._finish(min(self.shutdown_timeout_s, 1.0))

    async def _run(self, scope: dict[str, Any]) -> None:
        error: BaseException | None = None
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc
        finally:
            phase_before = self.machine.phase
            self.machine.app_returned(error)
            self._settled.set()
        if error is None:
            return
        if self.machine.config_error:
            # startup() raises it as one line; the traceback is for debugging.
            logger.debug("Lifespan startup raised a configuration error", exc_info=error)
        elif phase_before is P.STARTING and self.machine.phase is P.UNSUPPORTED:
            # auto mode: the usual way an app says it has no lifespan support.
            logger.debug("Lifespan scope raised %r; serving without lifespan.", error)
        elif phase_before in (P.STARTUP_FAILED, P.SHUT_DOWN, P.SHUTDOWN_FAILED):
            # It already answered; the exception repeats what it said.
            logger.debug("Lifespan task raised after answering: %r", error)
        else:
            logger.error("Exception in ASGI lifespan (%s)", phase_before.value, exc_info=error)

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        self.machine.app_sent(message)
        self._settled.set()

    async def _wait(self, timeout_s: float) -> bool:
        """Wait until the app answers or exits; False on timeout."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    async def _finish(self, grace_s: float) -> None:
        """Let the app's task end on its own for ``grace_s``, then cancel it."""
        task = self._task
        if task is None or task.done():
            return
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), grace_s)
        await self.cancel()

    async def cancel(self) -> None:
        """Cancel the app's lifespan task, if it still runs (forced exit, timeouts)."""
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
