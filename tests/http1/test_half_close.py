"""A client's half-close ends its requests, not its interest in the answers (RFC 9112 §9.6).

"a TCP connection that is half-closed by the client does not delimit a request
message, nor does it imply that the client is no longer interested in a
response." ``printf 'GET / HTTP/1.0\r\n\r\n' | nc host port`` and clients that
pipeline then shut their side send exactly this. Every request the client
completed is answered, in order, and the server closes after the last one
(which says ``Connection: close`` if the EOF was seen before it went out).
Apps see ``http.disconnect`` from ``receive()`` once they have their body (a
client that closed fully looks the same until a write fails), but ``send``
keeps working. A request cut short by the half-close is not answered: the
connection closes, as it does for an idle one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.support import TIMEOUT_S, RawConnection, Served, accepted, raw_connection, read_by, serve

GET = b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n"


class Gated:
    """Answers with its path once ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        assert message["type"] == "http.request"
        self.started.set()
        await self.release.wait()
        body = scope["path"].encode()
        headers = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def half_close(srv: Served, conn: RawConnection) -> None:
    """Shut the client's side and wait until the server has seen the EOF."""
    conn.writer.write_eof()
    await read_by(await accepted(srv))


async def test_a_request_then_half_close_is_answered_then_closed() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        # Returns once the server has taken in the half-close, so the answer below
        # is always written after it: then it says Connection: close.
        assert (await receive())["type"] == "http.disconnect"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"/1"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET % 1)
        await half_close(srv, conn)
        response = await conn.read_response()
        assert (response.status, response.body) == (200, b"/1")
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()


async def test_pipelined_requests_then_half_close_are_all_answered_in_order() -> None:
    app = Gated()
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET % 1 + GET % 2 + GET % 3)
        await asyncio.wait_for(app.started.wait(), TIMEOUT_S)
        await half_close(srv, conn)
        app.release.set()
        responses = [await conn.read_response() for _ in range(3)]
        assert [r.body for r in responses] == [b"/1", b"/2", b"/3"]
        # Reading pauses while requests queue, so the server may see the EOF only once
        # the last answer is out: then that answer cannot say Connection: close.
        assert [r.header(b"connection") for r in responses][:2] == [None, None]
        assert await conn.at_eof()


async def test_the_app_hears_disconnect_but_can_still_answer() -> None:
    heard: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "http.request"
        heard.append((await receive())["type"])  # waits: the client has not gone yet
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"still here"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET % 1)
        await read_by(await accepted(srv))
        assert heard == []
        conn.writer.write_eof()
        response = await conn.read_response()
        assert heard == ["http.disconnect"]
        assert response.body == b"still here"
        assert await conn.at_eof()


async def test_a_head_cut_short_by_half_close_is_not_answered() -> None:
    app = Gated()
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send((GET % 1)[:12])
        await half_close(srv, conn)
        assert await conn.read_until_close() == b""
        assert not app.started.is_set()


async def test_a_body_cut_short_by_half_close_reaches_the_app_as_disconnect() -> None:
    heard: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        heard.append(await receive())
        heard.append(await receive())
        done.set()

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        await half_close(srv, conn)
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
        assert await conn.read_until_close() == b""
    assert heard[0] == {"type": "http.request", "body": b"abc", "more_body": True}
    assert heard[1]["type"] == "http.disconnect"


async def test_an_idle_keep_alive_connection_closes_on_half_close() -> None:
    app = Gated()
    app.release.set()
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET % 1)
        assert (await conn.read_response()).header(b"connection") is None
        conn.writer.write_eof()
        assert await conn.at_eof()
        await asyncio.wait_for(srv.state.wait_connections_closed(), TIMEOUT_S)
