"""Keep-alive, pipelining, body streaming, scope keys, app errors: over real sockets."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from tests.http1.apps import echo, hello, read_body, scope_json
from tests.support import exchange, raw_connection, serve

GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


async def test_hello_with_httpx() -> None:
    async with serve(hello) as srv, httpx.AsyncClient() as client:
        response = await client.get(srv.url)
    assert response.status_code == 200
    assert response.text == "Hello, world!"
    assert response.headers["content-length"] == "13"
    assert response.headers["server"] == "sluiceway"
    assert response.headers["date"].endswith("GMT")


async def test_keep_alive_reuses_the_connection() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        for _ in range(3):
            await conn.send(GET)
            response = await conn.read_response()
            assert response.status == 200
            assert response.body == b"Hello, world!"
            assert response.header(b"connection") is None


async def test_pipelined_requests_are_answered_in_order() -> None:
    async def slow_first(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        if scope["path"] == "/slow":
            await asyncio.sleep(0.05)  # the later, fast request must still wait its turn
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["path"].encode()})

    requests = b"".join(
        b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % p for p in (b"/slow", b"/1", b"/2", b"/3")
    )
    async with serve(slow_first) as srv, raw_connection(srv.port) as conn:
        await conn.send(requests)
        bodies = [(await conn.read_response()).body for _ in range(4)]
    assert bodies == [b"/slow", b"/1", b"/2", b"/3"]


async def test_connection_close_is_honoured() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        response = await conn.read_response()
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()


async def test_http10_closes_unless_keep_alive_asked() -> None:
    async with serve(hello) as srv:
        async with raw_connection(srv.port) as conn:
            await conn.send(b"GET / HTTP/1.0\r\n\r\n")
            response = await conn.read_response()
            assert response.status == 200
            assert await conn.at_eof()
        async with raw_connection(srv.port) as conn:
            await conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            response = await conn.read_response()
            assert response.header(b"connection") == b"keep-alive"
            await conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert (await conn.read_response()).status == 200


async def test_streamed_response_is_chunked() -> None:
    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"a", b"bb", b"ccc"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with serve(stream) as srv:
        response = await exchange(srv.port, GET)
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.raw.endswith(b"1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n0\r\n\r\n")
    assert response.body == b"abbccc"


async def test_request_body_streams_in_chunks_with_more_body() -> None:
    seen: list[tuple[int, bool]] = []
    first = asyncio.Event()

    async def record(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append((len(message["body"]), message["more_body"]))
            first.set()
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async with serve(record) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        await conn.send(b"5\r\nhello\r\n")
        await asyncio.wait_for(first.wait(), 5)  # the app saw the first chunk on its own
        await conn.send(b"6\r\n world\r\n0\r\n\r\n")
        response = await conn.read_response()
    assert response.status == 204
    assert sum(n for n, _ in seen) == 11
    assert seen[-1][1] is False
    assert len(seen) >= 2 and seen[0] == (5, True)


async def test_large_upload_round_trips() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: crosses the read high-water mark
    async with serve(echo) as srv, httpx.AsyncClient() as client:
        response = await client.post(srv.url, content=payload)
    assert response.content == payload


async def test_scope_keys() -> None:
    async with serve(scope_json, root_path="/mount", lifespan_state={"k": "v"}) as srv:
        response = await exchange(
            srv.port,
            b"GET /a%20b/%E2%9C%93?x=1&y=%20 HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n",
        )
    scope = json.loads(response.body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/mount/a b/\u2713"
    assert scope["raw_path"] == "/a%20b/%E2%9C%93"
    assert scope["query_string"] == "x=1&y=%20"
    assert scope["root_path"] == "/mount"
    assert scope["headers"] == [["host", "h"], ["x-dup", "1"], ["x-dup", "2"]]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", srv.port]
    assert scope["state"] == {"k": "v"}
    assert set(scope["extensions"]) == {
        "http.response.pathsend",
        "http.response.zerocopysend",
        "http.response.early_hint",
        "http.response.trailers",
    }


async def test_state_and_extensions_are_fresh_per_request() -> None:
    seen: list[Any] = []

    async def mutate(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["state"].get("touched"), "mine" in scope["extensions"]))
        scope["state"]["touched"] = True
        scope["extensions"]["mine"] = {}
        await hello(scope, receive, send)

    async with serve(mutate, lifespan_state={}) as srv, raw_connection(srv.port) as conn:
        for _ in range(2):
            await conn.send(GET)
            await conn.read_response()
        assert srv.state.lifespan_state == {}
    assert seen == [(None, False), (None, False)]


async def test_query_and_fragment_split_on_origin_form_targets() -> None:
    # A fragment (which clients must not send) is dropped, with anything after it; a
    # query holding "://" is still an origin-form target, not an absolute one.
    targets = {
        b"/p?u=http://x/y": ("/p", "u=http://x/y"),
        b"/p?a=1#frag?b=2": ("/p", "a=1"),
        b"/p#f?x=1": ("/p", ""),
        b"/p?": ("/p", ""),
    }
    async with serve(scope_json) as srv:
        for target, (raw_path, query) in targets.items():
            response = await exchange(srv.port, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
            scope = json.loads(response.body)
            assert (scope["raw_path"], scope["query_string"]) == (raw_path, query), target
            assert scope["headers"] == [["host", "h"]]


async def test_absolute_form_target() -> None:
    async with serve(scope_json) as srv:
        response = await exchange(srv.port, b"GET http://h:1/p/q?z=1 HTTP/1.1\r\nHost: h:1\r\n\r\n")
    scope = json.loads(response.body)
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/p/q", "/p/q", "z=1")


async def test_absolute_form_authority_replaces_the_host_field() -> None:
    # RFC 9112 §3.2.2: the target's authority wins over the Host field.
    async with serve(scope_json) as srv:
        response = await exchange(
            srv.port,
            b"GET http://real.example:8080/p HTTP/1.1\r\nX-A: 1\r\nHost: other\r\n\r\n",
        )
        old = await exchange(srv.port, b"GET http://real.example/p HTTP/1.0\r\n\r\n")
    headers = json.loads(response.body)["headers"]
    assert headers == [["x-a", "1"], ["host", "real.example:8080"]]
    assert json.loads(old.body)["headers"] == [["host", "real.example"]]


async def test_absolute_form_without_a_host_is_400() -> None:
    async with serve(scope_json) as srv:
        response = await exchange(srv.port, b"GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n")
    assert response.status == 400


async def test_head_sends_no_body() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        response = await conn.read_response(head=True)
        assert response.header(b"content-length") == b"13"
        await conn.send(GET)  # the next response starts right after the head
        assert (await conn.read_response()).body == b"Hello, world!"


async def test_app_error_before_start_is_500_and_keeps_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="sluiceway.error"):
        async with serve(broken) as srv, raw_connection(srv.port) as conn:
            await conn.send(GET)
            response = await conn.read_response()
            assert response.status == 500
            assert b"boom" not in response.raw
            assert response.header(b"connection") is None
            await conn.send(GET)
            assert (await conn.read_response()).status == 500
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)


async def test_app_error_after_start_closes_connection() -> None:
    async def half(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("midway")

    async with serve(half) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        data = await conn.read_until_close()
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert not data.endswith(b"0\r\n\r\n")  # no clean end: the client sees a cut response


async def test_app_returning_without_response_is_500() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    async with serve(silent) as srv:
        response = await exchange(srv.port, GET)
    assert response.status == 500


async def test_asgi2_app_is_adapted() -> None:
    class App2:
        def __init__(self, scope: Any) -> None:
            self.scope = scope

        async def __call__(self, receive: Any, send: Any) -> None:
            await hello(self.scope, receive, send)

    async with serve(App2) as srv:
        response = await exchange(srv.port, GET)
    assert response.body == b"Hello, world!"


async def test_http10_streamed_response_is_close_delimited() -> None:
    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cd"})

    async with serve(stream) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        data = await conn.read_until_close()
    assert b"transfer-encoding" not in data.lower()
    assert data.endswith(b"\r\n\r\nabcd")


async def test_head_of_streamed_response_keeps_connection_usable() -> None:
    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": bytearray(b"cd")})

    async with serve(stream) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await conn.read_response(head=True)
        assert head.header(b"transfer-encoding") is None
        await conn.send(GET)
        assert (await conn.read_response()).body == b"abcd"


@pytest.mark.parametrize("more", [False, True])
async def test_large_first_body_is_framed_right(more: bool) -> None:
    big = bytes(range(256)) * 300  # 76800 bytes: above the join threshold

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": big, "more_body": more})
        if more:
            await send({"type": "http.response.body", "body": big})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        for _ in range(2):
            await conn.send(GET)
            response = await conn.read_response()
            assert response.body == (big * 2 if more else big)


async def test_pipelined_request_body_arriving_later_is_read() -> None:
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        # The second head is queued behind the first with its body incomplete.
        await conn.send(GET + b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        assert (await conn.read_response()).status == 200
        await conn.send(b"56789")
        assert (await conn.read_response()).body == b"0123456789"
