"""Graceful shutdown never drops a request the client has already started to send.

Idle keep-alive connections close at once; but a connection accepted and not
yet used, a head partly received, or request bytes that reached the socket
before the server read them are answered (``Connection: close``), then closed.
These tests start the drain as the runner does: ``shutting_down``, then
``shutdown()`` on every connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.http1.apps import hello
from tests.support import (
    TIMEOUT_S,
    RawConnection,
    Served,
    accepted,
    raw_connection,
    read_by,
    serve,
)

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def begin_shutdown(srv: Served) -> None:
    srv.state.shutting_down = True
    for conn in list(srv.state.connections):
        conn.shutdown()


async def serve_one(srv: Served, conn: RawConnection) -> None:
    """One request answered on ``conn``: the connection is then idle, kept alive."""
    await conn.send(GET)
    assert (await conn.read_response()).status == 200
    await read_by(await accepted(srv))


async def test_idle_keep_alive_connection_closes_at_once() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await serve_one(srv, conn)
        begin_shutdown(srv)
        assert await conn.at_eof()


async def test_a_connection_not_used_yet_gets_its_first_request_answered() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await accepted(srv)
        begin_shutdown(srv)
        await conn.send(GET)
        response = await conn.read_response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()
        await asyncio.wait_for(srv.state.wait_connections_closed(), TIMEOUT_S)


async def test_a_connection_not_used_yet_still_closes_at_its_header_timeout() -> None:
    async with serve(hello, request_headers_timeout_s=0.2) as srv, raw_connection(srv.port) as conn:
        await accepted(srv)
        begin_shutdown(srv)
        assert await conn.at_eof()  # it never sent anything: the drain does not wait forever


async def test_request_bytes_not_yet_read_are_answered() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await serve_one(srv, conn)
        # The second request reaches the server's socket, and the drain starts before
        # the loop hands it to the protocol (no await in between).
        conn.writer.write(GET)
        begin_shutdown(srv)
        response = await conn.read_response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()


async def test_a_head_partly_received_is_completed_and_answered() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await serve_one(srv, conn)
        await conn.send(GET[:10])
        await read_by(await accepted(srv))
        begin_shutdown(srv)
        await conn.send(GET[10:])
        response = await conn.read_response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()


async def test_in_flight_response_finishes_then_the_connection_closes() -> None:
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await hello(scope, receive, send)

    async with serve(slow) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        server_side = await accepted(srv)
        await read_by(server_side)
        begin_shutdown(srv)
        release.set()
        response = await conn.read_response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()
