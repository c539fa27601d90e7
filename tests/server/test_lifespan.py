"""The lifespan protocol: the state machine alone, then the runner against real apps."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from sluiceway.asgi.types import Message, Receive, Scope, Send
from sluiceway.errors import ASGIMessageError, LifespanFailed
from sluiceway.lifespan import Lifespan, LifespanMachine, LifespanPhase

P = LifespanPhase


# --- the machine, no event loop -------------------------------------------------------------


def test_machine_happy_path() -> None:
    machine = LifespanMachine("on")
    assert machine.start() == {"type": "lifespan.startup"}
    assert machine.app_sent({"type": "lifespan.startup.complete"}) is P.STARTED
    assert machine.begin_shutdown() == {"type": "lifespan.shutdown"}
    assert machine.app_sent({"type": "lifespan.shutdown.complete"}) is P.SHUT_DOWN


@pytest.mark.parametrize(
    ("message", "needle"),
    [
        ({"type": "lifespan.shutdown.complete"}, "unexpected ASGI message"),
        ({"type": "http.response.start"}, "unexpected ASGI message"),
        ({"no": "type"}, "must be a dict with a 'type'"),
        ({"type": "lifespan.startup.failed", "message": 3}, "'message' must be a str"),
    ],
)
def test_machine_rejects_messages_out_of_place(message: dict[str, Any], needle: str) -> None:
    machine = LifespanMachine("auto")
    machine.start()
    with pytest.raises(ASGIMessageError, match=needle):
        machine.app_sent(message)
    assert machine.phase is P.STARTING


def test_machine_failed_keeps_the_apps_message() -> None:
    machine = LifespanMachine("auto")
    machine.start()
    assert machine.app_sent({"type": "lifespan.startup.failed", "message": "no db"}) is (
        P.STARTUP_FAILED
    )
    assert machine.message == "no db"
    assert machine.begin_shutdown() is None


@pytest.mark.parametrize(("mode", "phase"), [("auto", P.UNSUPPORTED), ("on", P.STARTUP_FAILED)])
def test_machine_app_raising_at_startup_depends_on_mode(mode: str, phase: LifespanPhase) -> None:
    machine = LifespanMachine(mode)
    machine.start()
    assert machine.app_returned(ValueError("no lifespan here")) is phase


def test_machine_off_sends_nothing() -> None:
    machine = LifespanMachine("off")
    assert machine.start() == {}
    assert machine.phase is P.DISABLED
    assert machine.begin_shutdown() is None


# --- the runner ----------------------------------------------------------------------------


class RecordingApp:
    """A well-behaved lifespan app that records what it saw."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.scope: Scope | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        message = await receive()
        self.events.append(message["type"])
        scope["state"]["pool"] = "ready"
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        self.events.append(message["type"])
        await send({"type": "lifespan.shutdown.complete"})


def make(app: Any, mode: str = "auto", timeout: float = 5.0) -> tuple[Lifespan, dict[str, Any]]:
    state: dict[str, Any] = {}
    return Lifespan(app, mode, state, timeout, timeout), state


async def test_startup_and_shutdown_complete_and_state_is_shared() -> None:
    app = RecordingApp()
    lifespan, state = make(app, "on")
    await lifespan.startup()
    assert lifespan.phase is P.STARTED
    assert state == {"pool": "ready"}
    assert app.scope is not None
    assert app.scope["asgi"] == {"version": "3.0", "spec_version": "2.0"}
    assert app.scope["state"] is state
    await lifespan.shutdown()
    assert lifespan.phase is P.SHUT_DOWN
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]


async def test_startup_failed_raises_with_the_apps_message() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        raise RuntimeError("database unreachable")  # Starlette re-raises like this

    lifespan, _ = make(app, "auto")
    with pytest.raises(LifespanFailed, match="database unreachable"):
        await lifespan.startup()


async def test_auto_serves_an_app_that_raises_on_lifespan(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("only http")

    lifespan, _ = make(app, "auto")
    with caplog.at_level(logging.INFO, "sluiceway.error"):
        await lifespan.startup()
        await lifespan.shutdown()
    assert lifespan.phase is P.UNSUPPORTED
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1
    assert "does not support the ASGI lifespan protocol" in lines[0]
    assert "only http" in lines[0]


async def test_on_fails_for_an_app_that_raises() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("only http")

    lifespan, _ = make(app, "on")
    with pytest.raises(LifespanFailed, match="only http"):
        await lifespan.startup()


async def test_off_never_calls_the_app() -> None:
    called = False

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal called
        called = True

    lifespan, _ = make(app, "off")
    await lifespan.startup()
    await lifespan.shutdown()
    assert not called


async def test_startup_timeout_cancels_the_app() -> None:
    cancelled = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    lifespan, _ = make(app, "auto", timeout=0.05)
    with pytest.raises(LifespanFailed, match=r"did not complete within 0\.05 s"):
        await lifespan.startup()
    assert cancelled.is_set()


async def test_shutdown_failed_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})

    lifespan, _ = make(app)
    await lifespan.startup()
    with caplog.at_level(logging.INFO, "sluiceway.error"):
        await lifespan.shutdown()
    assert lifespan.phase is P.SHUTDOWN_FAILED
    assert any(
        r.levelno == logging.ERROR and "Application shutdown failed: flush failed" in r.getMessage()
        for r in caplog.records
    )


async def test_shutdown_that_hangs_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await asyncio.sleep(3600)

    lifespan, _ = make(app, timeout=0.05)
    await lifespan.startup()
    with caplog.at_level(logging.WARNING, "sluiceway.error"):
        await asyncio.wait_for(lifespan.shutdown(), 5)
    assert "did not complete within 0.05 s" in caplog.text


async def test_out_of_order_message_raises_in_the_app() -> None:
    seen: list[BaseException] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        try:
            await send({"type": "lifespan.shutdown.complete"})
        except ASGIMessageError as exc:
            seen.append(exc)
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    lifespan, _ = make(app, "on")
    await lifespan.startup()
    await lifespan.shutdown()
    assert len(seen) == 1
    assert lifespan.phase is P.SHUT_DOWN


async def test_asgi2_style_app_through_compat() -> None:
    from sluiceway.asgi.compat import guarantee_single_callable

    class App:
        def __init__(self, scope: Scope) -> None:
            self.scope = scope

        async def __call__(self, receive: Receive, send: Send) -> None:
            message: Message = await receive()
            assert message["type"] == "lifespan.startup"
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})

    lifespan, _ = make(guarantee_single_callable(App), "on")
    await lifespan.startup()
    await lifespan.shutdown()
    assert lifespan.phase is P.SHUT_DOWN
