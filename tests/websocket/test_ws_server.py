"""The ASGI WebSocket rules over real sockets: the `websockets` client, and raw bytes where exact.

Covers www.rst (spec 2.5) and the websocket.http.response extension: scope keys, connect/accept
with subprotocol and headers, text/binary both ways, close codes both ways, disconnect events,
send after close, app failures before and after accepting, the 403 and custom denials.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sluiceway.errors import ClientDisconnected
from tests.support import TIMEOUT_S, local_tls, raw_connection, serve
from tests.websocket.ws_support import (
    ACCEPT,
    close_frame,
    frame,
    raw_websocket,
    read_frame,
    read_until_close_frame,
    upgrade_request,
)

Scope = dict[str, Any]


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        await send(
            {"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")}
        )


async def wait(fut: asyncio.Future[Any] | asyncio.Event) -> Any:
    if isinstance(fut, asyncio.Event):
        return await asyncio.wait_for(fut.wait(), TIMEOUT_S)
    return await asyncio.wait_for(fut, TIMEOUT_S)


async def test_scope_has_every_key() -> None:
    seen: asyncio.Future[Scope] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        seen.set_result(scope)
        await send({"type": "websocket.close"})

    async with serve(app, root_path="/mnt", lifespan_state={"db": 1}) as srv:
        url = f"ws://127.0.0.1:{srv.port}/caf%C3%A9/x?a=1&b=%20"
        with pytest.raises(InvalidStatus):
            async with connect(url, subprotocols=["chat", "json"]):  # type: ignore[list-item]
                pass
        scope = await wait(seen)
    assert scope["type"] == "websocket"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["scheme"] == "ws"
    assert scope["path"] == "/mnt/café/x"
    assert scope["raw_path"] == b"/caf%C3%A9/x"
    assert scope["query_string"] == b"a=1&b=%20"
    assert scope["root_path"] == "/mnt"
    assert (b"sec-websocket-protocol", b"chat, json") in scope["headers"]
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ("127.0.0.1", srv.port)
    assert scope["subprotocols"] == ["chat", "json"]
    assert scope["state"] == {"db": 1}
    assert "websocket.http.response" in scope["extensions"]
    assert "method" not in scope


async def test_echo_text_and_binary_both_ways() -> None:
    async with serve(echo_app) as srv, connect(f"ws://127.0.0.1:{srv.port}/") as ws:
        await ws.send("héllo")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == "héllo"
        await ws.send(b"\x00\xff" * 50_000)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == b"\x00\xff" * 50_000


async def test_accept_with_subprotocol_and_headers() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.accept",
                "subprotocol": "json",
                "headers": [(b"x-trace", b"abc"), (b"set-cookie", b"a=1")],
            }
        )
        await send({"type": "websocket.close"})

    async with (
        serve(app) as srv,
        connect(
            f"ws://127.0.0.1:{srv.port}/",
            subprotocols=["chat", "json"],  # type: ignore[list-item]
        ) as ws,
    ):
        assert ws.subprotocol == "json"
        assert ws.response is not None
        assert ws.response.headers["x-trace"] == "abc"
        assert ws.response.headers["set-cookie"] == "a=1"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT_S)


async def test_accept_answer_is_exact() -> None:
    async with serve(echo_app) as srv, raw_websocket(srv.port) as (_, response):
        assert response.raw.startswith(b"HTTP/1.1 101 ")
        assert response.header(b"sec-websocket-accept") == ACCEPT
        assert response.header(b"upgrade") == b"websocket"
        assert b"upgrade" in (response.header(b"connection") or b"").lower()


async def test_app_close_code_and_reason_reach_the_client() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4321, "reason": "done here"})

    async with serve(app) as srv, raw_websocket(srv.port) as (conn, _):
        got = await read_frame(conn)
        assert got.close_code == 4321
        assert got.payload[2:] == b"done here"
        await conn.send(close_frame(4321))
        assert await conn.at_eof()


async def test_client_close_reaches_the_app_with_code_and_reason() -> None:
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await events.put(await receive())
        with pytest.raises(ClientDisconnected):
            await send({"type": "websocket.send", "text": "too late"})
        await events.put({"type": "send raised"})

    async with serve(app) as srv, raw_websocket(srv.port) as (conn, _):
        await conn.send(close_frame(4001, b"bye now"))
        echo = await read_frame(conn)
        assert echo.close_code == 4001  # RFC 6455 §5.5.1: the code is echoed
        assert await conn.at_eof()
        assert await wait(asyncio.ensure_future(events.get())) == {
            "type": "websocket.disconnect",
            "code": 4001,
            "reason": "bye now",
        }
        assert (await wait(asyncio.ensure_future(events.get())))["type"] == "send raised"


async def test_close_frame_without_code_is_1005() -> None:
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.set_result(await receive())

    async with serve(app) as srv, raw_websocket(srv.port) as (conn, _):
        await conn.send(frame(0x8))
        assert (await wait(got))["code"] == 1005


async def test_dropped_connection_is_1006_and_send_after_raises_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[dict[str, Any]] = loop.create_future()
    raised: asyncio.Future[BaseException] = loop.create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.set_result(await receive())
        try:
            await send({"type": "websocket.send", "bytes": b"x"})
        except OSError as exc:
            raised.set_result(exc)
            raise  # the server must swallow its own OSError without logging it

    with caplog.at_level(logging.ERROR):
        async with serve(app) as srv:
            async with raw_websocket(srv.port) as (_conn, _):
                pass  # closes TCP with no Close frame
            assert await wait(got) == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
            assert isinstance(await wait(raised), ClientDisconnected)
    assert not [r for r in caplog.records if r.name.startswith("sluiceway")]


async def test_close_before_accept_is_403() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request())
        response = await conn.read_response()
        assert response.status == 403
        assert response.header(b"sec-websocket-accept") is None
        assert await conn.at_eof()


@pytest.mark.parametrize("more", [False, True])
async def test_denial_response_with_any_status_headers_and_body(more: bool) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"www-authenticate", b"Bearer"), (b"content-type", b"text/plain")],
            }
        )
        if more:
            await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
            await send({"type": "websocket.http.response.body", "body": b"are you?"})
        else:
            await send({"type": "websocket.http.response.body", "body": b"who are you?"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request())
        response = await conn.read_response()
        assert response.status == 401
        assert response.header(b"www-authenticate") == b"Bearer"
        assert response.body == b"who are you?"
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()


async def test_denial_with_the_websockets_client() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 404, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"nothing here"})

    async with serve(app) as srv:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{srv.port}/"):
                pass
        assert info.value.response.status_code == 404
        assert info.value.response.body == b"nothing here"


@pytest.mark.parametrize("fail", ["raise", "return"])
async def test_app_failing_before_accept_is_500_and_logged(
    fail: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        if fail == "raise":
            raise RuntimeError("secret detail")

    with caplog.at_level(logging.ERROR, logger="sluiceway.error"):
        async with serve(app) as srv, raw_connection(srv.port) as conn:
            await conn.send(upgrade_request())
            response = await conn.read_response()
            assert response.status == 500
            assert b"secret" not in response.raw
            assert await conn.at_eof()
    assert any(r.name == "sluiceway.error" for r in caplog.records)


@pytest.mark.parametrize(
    "bad",
    [
        RuntimeError("boom"),
        {"type": "websocket.send", "bytes": b"x", "text": "x"},
        {"type": "websocket.send"},
        {"type": "websocket.accept"},
    ],
)
async def test_app_failing_after_accept_is_1011_and_logged(
    bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        if isinstance(bad, Exception):
            raise bad
        await send(bad)

    with caplog.at_level(logging.ERROR, logger="sluiceway.error"):
        async with serve(app) as srv, raw_websocket(srv.port) as (conn, _):
            got = await read_until_close_frame(conn)
            assert got.close_code == 1011
            assert got.payload[2:] == b""  # no exception text on the wire
    assert any(r.name == "sluiceway.error" for r in caplog.records)


async def test_app_returning_after_accept_closes_1000() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async with serve(app) as srv, raw_websocket(srv.port) as (conn, _):
        assert (await read_frame(conn)).close_code == 1000


async def test_subprotocol_not_offered_is_an_app_error_500() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "mqtt"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request(extra=b"Sec-WebSocket-Protocol: chat\r\n"))
        assert (await conn.read_response()).status == 500


async def test_frames_sent_right_behind_the_handshake_are_kept() -> None:
    async with serve(echo_app) as srv, raw_connection(srv.port) as conn:
        # One write: the handshake and two frames; the app accepts afterwards.
        await conn.send(upgrade_request() + frame(0x1, b"first") + frame(0x2, b"second"))
        response = await conn.read_response(head=True)
        assert response.status == 101
        assert (await read_frame(conn)).payload == b"first"
        got = await read_frame(conn)
        assert (got.opcode, got.payload) == (0x2, b"second")


async def test_fragmented_message_with_interleaved_ping_is_one_receive() -> None:
    async with serve(echo_app) as srv, raw_websocket(srv.port) as (conn, _):
        await conn.send(
            frame(0x1, b"hel", fin=False) + frame(0x9, b"p!") + frame(0x0, "lo é".encode())
        )
        pong = await read_frame(conn)
        assert (pong.opcode, pong.payload) == (0xA, b"p!")
        got = await read_frame(conn)
        assert (got.opcode, got.payload) == (0x1, "hello é".encode())


async def test_wss_scope_scheme_and_tls_extension_and_close(tmp_path: Any) -> None:
    tls = local_tls(tmp_path)
    seen: asyncio.Future[Scope] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.set_result(scope)
        await echo_app(scope, receive, send)

    async with (
        serve(app, ssl_context=tls.server_context, **tls.options) as srv,
        connect(f"wss://127.0.0.1:{srv.port}/", ssl=tls.client_context) as ws,
    ):
        await ws.send("over tls")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == "over tls"
        await ws.close(4000)
        scope = await wait(seen)
    assert scope["scheme"] == "wss"
    assert "tls" in scope["extensions"]
    assert ws.close_code == 4000
