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
