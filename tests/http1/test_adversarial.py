"""An attacker's view of the HTTP/1.1 server over raw sockets: the classes docs/security.md
did not cover yet (floods of tiny chunks, chunk extensions and trailers, headers that never
end, long names, pipelines never read, smuggling behind a refused upgrade).

Each test asserts the safe behaviour: a well-formed error and a close, no smuggled request
reaching the app, or a server that stays bounded and keeps serving other connections.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.http1.apps import echo, hello, read_body
from tests.support import TIMEOUT_S, RawConnection, Response, exchange, raw_connection, serve

Scope = dict[str, Any]

POST_CHUNKED = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


async def read_error(conn: RawConnection) -> Response:
    """An error answer: well-formed, says Connection: close, then the server closes."""
    response = await conn.read_response(timeout=2.0)
    assert response.header(b"connection") == b"close", response.raw
    assert await conn.at_eof(timeout=2.0)
    return response


async def send_until_answered(conn: RawConnection, data: bytes, piece: int = 16 * 1024) -> None:
    """Send ``data`` in pieces, stopping early once the server answers or closes."""
    for at in range(0, len(data), piece):
        try:
            await conn.send(data[at : at + piece])
        except (ConnectionError, asyncio.TimeoutError):
            return  # the server stopped reading or closed: what a limit looks like
        # StreamReader has no public peek: its buffer says an answer has arrived.
        if conn.reader._buffer or conn.reader.at_eof():  # type: ignore[attr-defined]
            return


async def assert_server_still_serves(port: int) -> None:
    response = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (response.status, response.body) == (200, b"Hello, world!")


# -- chunked bodies ----------------------------------------------------------------------


async def test_many_tiny_chunks_are_reassembled_exactly() -> None:
    # aiohttp/Node-style "1-byte chunk" floods: correct, and no per-chunk blow-up.
    n = 20_000
    data = POST_CHUNKED + b"1\r\nx\r\n" * n + b"0\r\n\r\n"
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(data)
        response = await conn.read_response()
        assert (response.status, response.body) == (200, b"x" * n)


async def test_many_tiny_chunks_over_the_body_limit_are_413() -> None:
    data = POST_CHUNKED + b"1\r\nx\r\n" * 5000
    async with serve(echo, max_request_body_bytes=1000) as srv, raw_connection(srv.port) as conn:
        await send_until_answered(conn, data)
        assert (await read_error(conn)).status == 413
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
        response = await exchange(srv.port, request)
        assert (response.status, response.body) == (200, b"ok")


@pytest.mark.parametrize("size", [b"7fffffffffffffff", b"00000000000000000001000"])
async def test_huge_or_zero_padded_chunk_size_is_bounded_by_the_limit(size: bytes) -> None:
    # The largest chunk size llhttp accepts, and a long run of leading zeros (waitress
    # CVE-2022-24761 parsed sizes with int()): the limit still holds once the data comes.
    data = POST_CHUNKED + size + b"\r\n" + b"a" * 4096
    async with serve(echo, max_request_body_bytes=1000) as srv, raw_connection(srv.port) as conn:
        await send_until_answered(conn, data)
        assert (await read_error(conn)).status == 413


async def test_chunk_size_with_too_many_hex_digits_is_400() -> None:
    # 17 significant hex digits overflow 64 bits (Twisted, llhttp overflow checks).
    data = POST_CHUNKED + b"1" + b"0" * 16 + b"\r\n"
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(data)
        assert (await read_error(conn)).status == 400


async def test_content_length_overflow_is_400() -> None:
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(request)
        assert (await read_error(conn)).status == 400


@pytest.mark.parametrize(
    "prefix",
    [b"1;", b"1;" + b"e" * 4000 + b"\r\na\r\n1;", b"1\r\na\r\n0\r\nX-T: "],
    ids=["extension", "extension_after_a_chunk", "trailer_field"],
)
async def test_chunk_extension_flood_is_400_past_the_body_limit(prefix: bytes) -> None:
    # Node CVE-2024-22019: llhttp skips chunk extensions (and a trailer field's
    # pieces) without counting them, so only the server can bound them.
    async with serve(echo, max_request_body_bytes=1000) as srv, raw_connection(srv.port) as conn:
        await conn.send(POST_CHUNKED + prefix)
        await send_until_answered(conn, b"e" * (8 * 1024 * 1024), piece=16 * 1024)
        assert (await read_error(conn)).status == 400
        request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"
        response = await exchange(srv.port, request)
        assert (response.status, response.body) == (200, b"ok")


async def test_chunks_with_short_extensions_and_padded_sizes_are_accepted() -> None:
    # The framing bound must not bite legitimate use: many 1-byte chunks, each
    # with a zero-padded size and a short extension, sent in separate reads.
    n = 4000
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(POST_CHUNKED)
        for _ in range(4):
            await conn.send(b"00000001;a=b\r\nx\r\n" * (n // 4))
        await conn.send(b"0\r\n\r\n")
        response = await conn.read_response()
        assert (response.status, response.body) == (200, b"x" * n)


# -- trailers -----------------------------------------------------------------------------


async def test_trailer_flood_is_431() -> None:
    # Trailer fields count against the same head budget (Node/undici trailer floods).
    trailers = b"".join(b"x-t%d: v\r\n" % i for i in range(4000))
    data = POST_CHUNKED + b"1\r\na\r\n0\r\n" + trailers + b"\r\n"
    async with (
        serve(echo, max_request_headers_bytes=8 * 1024) as srv,
        raw_connection(srv.port) as conn,
    ):
        await send_until_answered(conn, data)
        assert (await read_error(conn)).status == 431


# -- heads --------------------------------------------------------------------------------


async def test_many_tiny_headers_are_431() -> None:
    # Count floods (ws CVE-2024-37890, Node's maxHeadersCount): the byte budget bounds them.
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"a:\r\n" * 20_000 + b"\r\n"
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await send_until_answered(conn, head)
        assert (await read_error(conn)).status == 431


@pytest.mark.parametrize("where", ["name", "value"])
async def test_a_header_field_that_never_ends_is_431_before_it_ends(where: str) -> None:
    # One enormous field with no line end: llhttp hands it over in pieces, so the
    # server must count them rather than wait for a callback that never comes.
    start = b"GET / HTTP/1.1\r\nHost: x\r\n" + (b"X" if where == "name" else b"X-Long: ")
    async with (
        serve(hello, max_request_headers_bytes=4096) as srv,
        raw_connection(srv.port) as conn,
    ):
        await conn.send(start)
        await send_until_answered(conn, b"a" * (512 * 1024), piece=1024)
        assert (await read_error(conn)).status == 431
        await assert_server_still_serves(srv.port)


async def test_request_target_trickled_in_pieces_is_414() -> None:
    async with serve(hello, max_request_line_bytes=2048) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET /")
        await send_until_answered(conn, b"a" * (256 * 1024), piece=512)
        assert (await read_error(conn)).status == 414


# -- pipelining ---------------------------------------------------------------------------


async def test_pipeline_never_read_does_not_run_ahead_of_the_client() -> None:
    # A client pipelines many requests for big responses and reads nothing: the server must
    # hold back (send blocks at the high-water mark), not run every app and buffer every
    # response, and it must keep serving other connections meanwhile.
    body = b"z" * (256 * 1024)
    calls = 0
    blocked = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal calls
        if scope["path"] == "/other":
            await hello(scope, receive, send)
            return
        calls += 1
        await read_body(receive)
        # A response goes out at the end of the loop pass, so the send that waits at the
        # mark may be the next app's first one: watch them all.
        for message in (
            {"type": "http.response.start", "status": 200, "headers": []},
            {"type": "http.response.body", "body": body},
        ):
            sending = asyncio.ensure_future(send(message))
            done, _ = await asyncio.wait({sending}, timeout=0.2)
            if not done:
                blocked.set()  # the server applies back-pressure to this app
            await sending

    n = 200  # 50 MiB of responses: far more than socket buffers hold
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(request * n)
        await asyncio.wait_for(blocked.wait(), TIMEOUT_S)
        other = await exchange(srv.port, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n")
        assert other.status == 200
        assert calls < n // 2
        # Reading now gets every response, whole and in order.
        first = await conn.read_response()
        assert first.body == body


async def test_smuggled_request_after_a_refused_websocket_upgrade_never_reaches_the_app() -> None:
    # A WebSocket handshake the app refuses (403), with a second request packed behind it:
    # a front proxy that saw "Upgrade" treats those bytes as an opaque tunnel, so the
    # server must not parse them as a request (the "websocket smuggling" class).
    paths: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.close"})
            return
        await hello(scope, receive, send)

    upgrade = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade + smuggled)
        assert (await conn.read_response()).status == 403
        assert await conn.at_eof(timeout=2.0)
    assert paths == ["/ws"]
