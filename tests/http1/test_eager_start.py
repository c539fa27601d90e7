"""Starting the app of a bodyless request once it is whole, eagerly on 3.12+ (connection/tasks.py).

What an app must still see however it is started; each test would fail with a naive "step the
coroutine without a task" start: no current task (anyio, sniffio), a ContextVar leaking between
requests, an anyio cancel scope exited in another task than it was entered in, or pipelined
requests run after a response closed the connection.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
from typing import Any

import anyio
import pytest

from sluiceway.connection.tasks import start_eagerly
from tests.support import raw_connection, serve

EAGER = sys.version_info >= (3, 12)
GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
_request_tag: contextvars.ContextVar[str] = contextvars.ContextVar("request_tag", default="")


async def _reply(send: Any, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(body)), *(headers or [])],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def test_an_app_that_never_waits_still_runs_in_a_task_anyio_recognises() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        library = anyio.get_current_task()  # what anyio and sniffio need: a current task
        await _reply(send, f"{type(task).__name__} {library.id == id(task)}".encode())

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        response = await conn.read_response()
    assert response.body == b"Task True"


async def test_context_variables_do_not_leak_between_requests_on_one_connection() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        before = _request_tag.get()
        _request_tag.set(scope["path"])
        await _reply(send, f"saw {before!r}".encode())

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        for path in (b"/one", b"/two"):
            await conn.send(b"GET " + path + b" HTTP/1.1\r\nHost: example\r\n\r\n")
            response = await conn.read_response()
            assert response.body == b"saw ''"
    assert _request_tag.get() == ""  # nor into the server's own context


async def test_a_cancel_scope_entered_before_the_first_wait_exits_in_the_same_task() -> None:
    # anyio ties a cancel scope to the task that entered it: the task that goes on running
    # the app after it suspends must be the one that was current in its first step.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        first = asyncio.current_task()
        with anyio.CancelScope():
            value = await anyio.to_thread.run_sync(lambda: 42)
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep, 0)
        same = asyncio.current_task() is first
        await _reply(send, f"{value} {same}".encode())

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        response = await conn.read_response()
    assert response.status == 200
    assert response.body == b"42 True"


async def test_an_app_that_suspends_is_tracked_and_cancelled_at_shutdown() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        await asyncio.wait_for(started.wait(), 5)
        assert len(srv.state.tasks) == 1
    assert cancelled.is_set()


async def test_pipelined_requests_after_a_closing_response_are_not_run() -> None:
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await _reply(send, b"bye", [(b"connection", b"close")])

    pipelined = b"".join(b"GET /%d HTTP/1.1\r\nHost: example\r\n\r\n" % i for i in range(3))
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(pipelined)
        data = await conn.read_until_close()
    assert data.count(b"HTTP/1.1 200") == 1
    assert calls == ["/0"]


async def test_an_app_error_in_the_first_step_is_a_500_and_the_connection_stays_open() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        await _reply(send, b"fine")

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET /boom HTTP/1.1\r\nHost: example\r\n\r\n")
        assert (await conn.read_response()).status == 500
        await conn.send(GET)
        response = await conn.read_response()
    assert (response.status, response.body) == (200, b"fine")


async def test_start_eagerly_runs_a_coroutine_under_one_task_from_start_to_end() -> None:
    loop = asyncio.get_running_loop()
    seen: list[Any] = []
    started: list[asyncio.Task[None] | None] = []

    async def finishes() -> None:
        seen.append(asyncio.current_task())

    async def waits() -> None:
        seen.append(asyncio.current_task())
        await asyncio.sleep(0)
        seen.append(asyncio.current_task())

    def from_a_callback() -> None:
        started.append(start_eagerly(loop, finishes()))
        started.append(start_eagerly(loop, waits()))

    loop.call_soon(from_a_callback)
    while len(seen) < 3:
        await asyncio.sleep(0)
    quick, slow = started
    assert slow is not None
    await slow
    assert all(isinstance(task, asyncio.Task) for task in seen)
    assert seen[1] is seen[2] is slow
    if EAGER:
        assert quick is None  # finished in its first step: never scheduled
        assert seen[0] is not slow
    else:
        assert quick is seen[0]


async def test_an_app_cancelled_in_its_first_step_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/cancel":
            raise asyncio.CancelledError
        await _reply(send, b"fine")

    with caplog.at_level(logging.WARNING):
        async with serve(app) as srv:
            async with raw_connection(srv.port) as conn:
                await conn.send(b"GET /cancel HTTP/1.1\r\nHost: example\r\n\r\n")
                assert await conn.read_until_close() == b""
            async with raw_connection(srv.port) as conn:
                await conn.send(GET)
                response = await conn.read_response()
    assert (response.status, response.body) == (200, b"fine")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
