"""Bad requests get a well-formed 4xx/5xx, Connection: close, and never reach the app.

Each case is a request-smuggling or parsing CVE class; docs/security.md maps
the CVEs to these test ids.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.http1.apps import echo, read_body
from tests.support import accepted, raw_connection, read_by, serve

H = b"Host: a\r\n"

BAD_REQUESTS: dict[str, tuple[bytes, int]] = {
    # Content-Length / Transfer-Encoding smuggling (RFC 9112 §6.1, §6.3)
    "cl_and_te": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "te_and_cl": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        b"0\r\n\r\n",
        400,
    ),
    "duplicate_cl_same": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    "duplicate_cl_differ": (
        b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "cl_plus_sign": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    "cl_minus_sign": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n\r\nhello", 400),
    "cl_list": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello", 400),
    "cl_same_list": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    "cl_inner_space": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5 6\r\n\r\nhello", 400),
    "cl_hex": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    "cl_vtab": (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \x0b5\r\n\r\nhello", 400),
    "te_not_chunked_last": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_unknown_coding_before_chunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "te_identity": (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 400),
    "te_xchunked": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_chunked_twice": (
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_vtab_obfuscated": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_in_http10": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    # chunked body framing
    "chunk_size_junk": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_size_0x": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_size_overflow": (
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_size_negative": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_ext_nul": (
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5;a=\x00\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_ext_lone_lf": (
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "chunk_data_trailing_bytes": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
        400,
    ),
    "chunk_lf_only": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        400,
    ),
    "chunk_ext_control": (
        b"POST / HTTP/1.1\r\n"
        + H
        + b"Transfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    "te_leading_comma": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te_multiline": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n , identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    "cl_hidden_by_obs_fold": (
        b"POST / HTTP/1.1\r\n" + H + b"X: y\r\n Content-Length: 5\r\n\r\nhello",
        400,
    ),
    # the head itself
    "cr_as_line_end": (
        b"POST / HTTP/1.1\r\n" + H + b"X: a\rContent-Length: 5\r\n\r\nhello",
        400,
    ),
    "head_end_cr_not_crlf": (b"GET / HTTP/1.1\r\n" + H + b"\rX", 400),
    "space_before_first_header": (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    "method_mixed_case": (b"PoST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n", 400),
    "bare_cr_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", 400),
    "lone_lf_line_ends": (b"GET / HTTP/1.1\nHost: a\n\n", 400),
    "lone_lf_in_headers": (b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    "obs_fold": (b"GET / HTTP/1.1\r\n" + H + b"X: a\r\n b\r\n\r\n", 400),
    "space_before_colon": (b"GET / HTTP/1.1\r\n" + H + b"X : b\r\n\r\n", 400),
    "space_before_colon_te": (
        b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "nul_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", 400),
    "ctl_in_value": (b"GET / HTTP/1.1\r\n" + H + b"X: a\x01b\r\n\r\n", 400),
    "non_token_name": (b"GET / HTTP/1.1\r\n" + H + b"X(: b\r\n\r\n", 400),
    "empty_name": (b"GET / HTTP/1.1\r\n" + H + b": b\r\n\r\n", 400),
    "missing_host": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "duplicate_host": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "duplicate_host_http10": (b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "method_not_token": (b"G(T / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "method_lowercase": (b"get / HTTP/1.1\r\n" + H + b"\r\n", 400),
    "control_in_target": (b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "space_in_target": (b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", 400),
    "bad_version": (b"GET / HTTP/1.2\r\n" + H + b"\r\n", 400),
    "http2_version": (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    # Keep-alive asked for: should_keep_alive() is true, yet the version is not 1.1.
    "http2_keep_alive": (b"GET / HTTP/2.0\r\nConnection: keep-alive\r\n" + H + b"\r\n", 505),
    "http09": (b"GET /\r\n\r\n", 505),
    "connect": (b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
async def test_bad_request_is_rejected_and_closed(name: str) -> None:
    data, status = BAD_REQUESTS[name]
    calls: list[Any] = []
    completed: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope)
        message = await receive()
        while message.get("more_body"):
            message = await receive()
        if message["type"] == "http.request":
            completed.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"served"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(data)
        response = await conn.read_response()
        assert response.status == status, response.raw
        assert response.header(b"connection") == b"close"
        assert int(response.header(b"content-length") or -1) == len(response.body)
        assert await conn.at_eof()
    if name.startswith("chunk_"):
        # The head was fine, so the app started; it must never see a complete body.
        assert completed == []
    else:
        assert calls == []


async def test_smuggled_request_never_reaches_the_app() -> None:
    paths: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        paths.append(scope["path"])
        await echo(scope, receive, send)

    smuggle = (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(smuggle)
        data = await conn.read_until_close()
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.startswith(b"HTTP/1.1 400 ")
    assert paths == []


async def test_garbage_after_valid_pipelined_request_answers_in_order() -> None:
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nBROKEN\r\n\r\n")
        first = await conn.read_response()
        second = await conn.read_response()
        assert (first.status, second.status) == (200, 400)
        assert await conn.at_eof()


async def test_leading_empty_line_is_tolerated() -> None:
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request-line.
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await conn.read_response()).status == 200


async def test_obs_text_in_value_is_passed_through() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(dict(scope["headers"])[b"x"])
        await echo(scope, receive, send)

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nX: caf\xe9\r\n\r\n")
        assert (await conn.read_response()).status == 200
    assert seen == [b"caf\xe9"]


async def test_request_trailers_do_not_become_headers() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["headers"])
        await echo(scope, receive, send)

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\nX-Trailer: injected\r\n\r\n"
        )
        response = await conn.read_response()
    assert response.body == b"hi"
    assert all(name != b"x-trailer" for name, _ in seen[0])


async def test_header_block_over_limit_is_431() -> None:
    async with serve(echo, max_request_headers_bytes=1024) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
        response = await conn.read_response()
        assert response.status == 431
        assert await conn.at_eof()


async def test_header_block_trickled_over_limit_is_431() -> None:
    # A value that never ends: llhttp buffers it; our byte count must still stop it.
    limits = {"max_request_headers_bytes": 1024, "max_request_line_bytes": 256}
    async with serve(echo, **limits) as srv, raw_connection(srv.port) as conn:
        server_side = await accepted(srv)
        await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(20):
            await read_by(server_side)  # each piece its own read: only the count can stop it
            try:
                await conn.send(b"a" * 100)
            except ConnectionError:
                break  # the server already answered and closed
        response = await conn.read_response()
        assert response.status == 431


async def test_request_line_over_limit_is_414() -> None:
    async with serve(echo, max_request_line_bytes=100) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        response = await conn.read_response()
        assert response.status == 414
        assert await conn.at_eof()


async def test_declared_body_over_limit_is_413_before_the_app_runs() -> None:
    calls: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope)
        await echo(scope, receive, send)

    async with serve(app, max_request_body_bytes=10) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        response = await conn.read_response()
        assert response.status == 413
        assert await conn.at_eof()
    assert calls == []


async def test_chunked_body_over_limit_is_413() -> None:
    async with serve(echo, max_request_body_bytes=10) as srv, raw_connection(srv.port) as conn:
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"
        )
        response = await conn.read_response()
        assert response.status == 413
        assert await conn.at_eof()


async def test_body_at_limit_is_accepted() -> None:
    async with serve(echo, max_request_body_bytes=10) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789")
        response = await conn.read_response()
        assert response.body == b"0123456789"


async def test_pipelined_bodies_are_answered_in_order() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        body = await read_body(receive)
        if body == b"first":
            await asyncio.sleep(0.05)  # finishes last, must still be answered first
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    requests = b"".join(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
        for b in (b"first", b"second", b"third")
    )
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(requests)
        bodies = [(await conn.read_response()).body for _ in range(3)]
    assert bodies == [b"first", b"second", b"third"]


async def test_upgrade_request_is_served_as_http_when_not_taken() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"] + " " + scope["path"])
        await echo(scope, receive, send)

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(
            b"GET /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        first = await conn.read_response()
        second = await conn.read_response()
    assert (first.status, second.status) == (200, 200)
    assert seen == ["http /up", "http /next"]
