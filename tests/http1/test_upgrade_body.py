"""A WebSocket handshake that carries a request body is refused (RFC 9110 §7.8).

The protocol switch comes only after the whole request message; switching at the
end of the head would read the body as frames, a request smuggled past a proxy
that saw one HTTP request. Over raw sockets: the exact bytes matter.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import raw_connection, serve
from tests.websocket.ws_support import frame, upgrade_request

SMUGGLED = frame(0x1, b"smuggled")  # 14 bytes: 2 head + 4 mask + 8 payload
received: list[dict[str, Any]] = []  # what the app was given, per test


async def recording_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    received.append(await receive())
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        received.append(message)
        if message["type"] == "websocket.disconnect":
            return


@pytest.mark.parametrize(
    "framing, body",
    [
        pytest.param(b"Content-Length: 14\r\n", SMUGGLED, id="content_length"),
        pytest.param(
            b"Transfer-Encoding: chunked\r\n",
            b"e\r\n" + SMUGGLED + b"\r\n0\r\n\r\n",
            id="chunked",
        ),
    ],
)
async def test_websocket_handshake_with_a_body_is_400(framing: bytes, body: bytes) -> None:
    received.clear()
    async with serve(recording_app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request(extra=framing) + body)
        response = await conn.read_response()
        assert response.status == 400, response.raw
        assert await conn.at_eof()
    assert not any(m.get("text") == "smuggled" for m in received), received
    assert not received  # the app never saw a websocket.connect


async def test_websocket_handshake_with_content_length_zero_is_accepted() -> None:
    received.clear()
    async with serve(recording_app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request(extra=b"Content-Length: 0\r\n") + SMUGGLED)
        response = await conn.read_response(head=True)
        assert response.status == 101, response.raw


# -- an Upgrade that is not taken: the body is still this request's -------------------------

SMUGGLED_REQUEST = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
seen_by_app: list[tuple[str, bytes]] = []


async def body_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen_by_app.append((scope["path"], body))
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("token", [b"foo", b"h2c", b"websocket"])
@pytest.mark.parametrize("http2", [True, False])
async def test_a_declined_upgrade_reads_its_body_and_smuggles_nothing(
    token: bytes, http2: bool
) -> None:
    # httptools has llhttp skip the body of any Upgrade request; a declined one
    # used to have its body parsed as the next request (GET /smuggled answered).
    seen_by_app.clear()
    body = SMUGGLED_REQUEST + b"x" * 3
    request = (
        b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: %s\r\n"
        b"Content-Length: %d\r\n\r\n" % (token, len(body))
    ) + body
    async with serve(body_echo, http2=http2, ws="none") as srv, raw_connection(srv.port) as conn:
        await conn.send(request)
        response = await conn.read_response()
        assert response.status == 200, response.raw
        assert response.body == body
        await conn.send(b"GET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        after = await conn.read_until_close()
    assert after.startswith(b"HTTP/1.1 200")
    assert [path for path, _ in seen_by_app] == ["/up", "/next"]


async def test_a_declined_upgrade_with_a_chunked_body_is_400() -> None:
    seen_by_app.clear()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED_REQUEST), SMUGGLED_REQUEST)
    request = (
        b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    ) + chunked
    async with serve(body_echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(request)
        response = await conn.read_response()
        assert response.status == 400, response.raw
        assert await conn.at_eof()
    assert seen_by_app == []
