"""A request body that stops coming is cut off: 408, and http.disconnect to the app (issue 16).

``--timeout-request-body`` bounds each stretch in which the body makes no
progress (1 KiB more of it); a body dripped a byte at a time never makes any.
Waits that are the app's choice (reading paused because it does not consume,
a ``100 Continue`` it has not asked for) are not the client's stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

import pytest

from sluiceway.errors import ConfigError
from sluiceway.option_sources import config_from_sources
from tests.http1.apps import echo, read_body
from tests.support import TIMEOUT_S, accepted, raw_connection, read_by, serve

TIMEOUT: dict[str, Any] = {"request_body_timeout_s": 0.5}


def post(length: int, *extra: bytes) -> bytes:
    fields = b"".join(field + b"\r\n" for field in extra)
    return b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n%s\r\n" % (length, fields)


class Reader:
    """An app that reads the body and records what receive() gave it."""

    def __init__(self, *, start_first: bool = False) -> None:
        self.start_first = start_first
        self.got: list[str] = []
        self.disconnected = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.start_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"started", "more_body": True})
        while True:
            message = await receive()
            self.got.append(message["type"])
            if message["type"] == "http.disconnect":
                self.disconnected.set()
                return
            if not message.get("more_body"):
                if not self.start_first:
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"done"})
                return


async def until(condition: Any, timeout: float = TIMEOUT_S) -> None:
    """Poll ``condition()`` until it holds (bounded)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_a_stalled_body_gets_408_and_the_reading_app_sees_disconnect() -> None:
    app = Reader()
    async with serve(app, **TIMEOUT) as srv, raw_connection(srv.port) as conn:
        await conn.send(post(100) + b"only-part")
        response = await conn.read_response()
        assert response.status == 408
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()
        await asyncio.wait_for(app.disconnected.wait(), TIMEOUT_S)
    assert app.got == ["http.request", "http.disconnect"]


async def test_a_body_dripped_a_byte_at_a_time_is_cut_off() -> None:
    # The client, faster: each byte arrives well within the timeout,
    # but a byte is not progress, so the drip is cut off after one timeout.
    app = Reader()
    sent = 0

    async with serve(app, **TIMEOUT) as srv, raw_connection(srv.port) as conn:

        async def drip() -> None:
            nonlocal sent
            while True:
                await conn.send(b"x")
                sent += 1
                await asyncio.sleep(0.02)  # the client's own slow send

        await conn.send(post(10_000))
        dripping = asyncio.ensure_future(drip())
        try:
            response = await conn.read_response()
        finally:
            dripping.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await dripping
        assert response.status == 408
        await asyncio.wait_for(app.disconnected.wait(), TIMEOUT_S)
    assert 1 < sent < 1024


async def test_a_slow_body_that_keeps_making_progress_is_not_cut_off() -> None:
    # 2 KiB every 0.1 s: the whole upload takes twice the timeout, and is served.
    body = b"y" * 20 * 1024
    async with serve(echo, **TIMEOUT) as srv, raw_connection(srv.port) as conn:
        server_side = await accepted(srv)
        await conn.send(post(len(body)))
        for at in range(0, len(body), 2048):
            await conn.send(body[at : at + 2048])
            await read_by(server_side)
            await asyncio.sleep(0.1)  # the client's own slow send
        response = await conn.read_response()
    assert (response.status, response.body) == (200, body)


async def test_a_stall_after_the_response_started_closes_without_408() -> None:
    app = Reader(start_first=True)
    async with serve(app, **TIMEOUT) as srv, raw_connection(srv.port) as conn:
        await conn.send(post(100) + b"only-part")
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
        assert head.startswith(b"HTTP/1.1 200")
        rest = await conn.read_until_close()
        await asyncio.wait_for(app.disconnected.wait(), TIMEOUT_S)
    assert b"408" not in rest
    assert not rest.endswith(b"0\r\n\r\n")  # cut short: no last chunk
    assert app.got == ["http.request", "http.disconnect"]


async def test_paused_reading_is_not_the_clients_stall() -> None:
    # The app does not read for longer than the timeout: reading pauses above
    # the high-water mark, and that wait is not held against the client.
    go = asyncio.Event()
    body = b"z" * 300_000

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await go.wait()
        await echo(scope, receive, send)

    async with serve(slow, **TIMEOUT) as srv, raw_connection(srv.port) as conn:
        server_side = await accepted(srv)
        conn.writer.write(post(len(body)) + body)  # not drained: reading pauses midway
        await until(lambda: server_side._flow.read_paused)
        paused_until = server_side.deadline
        # The deadline passes while paused: the tick moves it on instead of cutting off.
        await until(lambda: server_side.deadline != paused_until)
        assert not conn.reader._buffer and not conn.reader.at_eof()  # type: ignore[attr-defined]
        go.set()
        response = await conn.read_response()
    assert (response.status, response.body == body) == (200, True)


async def test_expect_100_continue_waits_for_the_app_not_the_client() -> None:
    go = asyncio.Event()

    async def late_reader(scope: Any, receive: Any, send: Any) -> None:
        await go.wait()
        await echo(scope, receive, send)

    async with serve(late_reader, **TIMEOUT) as srv, raw_connection(srv.port) as conn:
        server_side = await accepted(srv)
        await conn.send(post(5, b"Expect: 100-continue"))
        await read_by(server_side)
        first = server_side.deadline
        # The client rightly waits for a 100 the app has not asked for yet.
        await until(lambda: server_side.deadline != first)
        assert not conn.reader._buffer and not conn.reader.at_eof()  # type: ignore[attr-defined]
        go.set()
        assert (await conn.read_response()).status == 100
        await conn.send(b"hello")
        response = await conn.read_response()
    assert (response.status, response.body) == (200, b"hello")


async def test_the_clock_starts_again_after_a_100_continue() -> None:
    # After the 100 the client owes the body: a stall then is the client's.
    async def reader(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)

    async with serve(reader, **TIMEOUT) as srv, raw_connection(srv.port) as conn:
        await conn.send(post(5, b"Expect: 100-continue"))
        assert (await conn.read_response()).status == 100
        assert (await conn.read_response()).status == 408


async def test_zero_turns_the_body_timeout_off() -> None:
    async with serve(Reader(), request_body_timeout_s=0) as srv, raw_connection(srv.port) as conn:
        server_side = await accepted(srv)
        await conn.send(post(100) + b"only-part")
        await read_by(server_side)
        assert server_side.deadline == math.inf


def test_the_option_comes_from_argv_and_environment() -> None:
    assert config_from_sources({}, {}).request_body_timeout_s == 30.0
    env = {"SLUICEWAY_TIMEOUT_REQUEST_BODY": "2.5"}
    assert config_from_sources({}, env).request_body_timeout_s == 2.5
    assert config_from_sources({"request_body_timeout_s": "7"}, env).request_body_timeout_s == 7.0
    with pytest.raises(ConfigError, match="--timeout-request-body must not be negative"):
        config_from_sources({"request_body_timeout_s": "-1"}, {})
