"""Telling HTTP/2 with prior knowledge from HTTP/1.1 on a fresh cleartext connection.

Over a raw socket, with the first bytes in separate reads (``read_by``): a
preface cut anywhere still becomes HTTP/2, a request whose first read is just
"P" (a POST or a PUT) is still HTTP/1.1, and a first line of neither protocol
closes the connection while a merely bad HTTP/1.1 line keeps its 400.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest

from tests.support import accepted, raw_connection, read_by, serve

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    text = f"{scope['http_version']} {scope['method']} {body.decode()}"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": text.encode()})


@pytest.mark.parametrize("cut", [1, 3, 14, 23])
async def test_a_preface_cut_across_reads_is_http2(cut: int) -> None:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    client.send_headers(
        1, [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "a")], True
    )
    first = client.data_to_send()
    assert first.startswith(PREFACE)
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await conn.send(first[:cut])
        await read_by(await accepted(srv))
        await conn.send(first[cut:])
        body = b""
        ended = False
        while not ended:
            data = await conn.reader.read(65536)
            assert data, "the server closed the connection"
            for event in client.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                ended = ended or isinstance(event, h2.events.StreamEnded)
    assert body == b"2 GET "


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"PATCH"])
async def test_a_first_read_of_p_is_still_http11(method: bytes) -> None:
    request = method + b" / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await conn.send(request[:1])
        await read_by(await accepted(srv))
        await conn.send(request[1:])
        response = await conn.read_response()
    assert response.status == 200
    assert response.body == b"1.1 " + method + b" hi"


async def test_a_first_line_of_neither_protocol_closes_without_an_answer() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
        assert await conn.read_until_close() == b""


@pytest.mark.parametrize(
    "first", [b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", b"GET /\r\n\r\n", b"G@T / HTTP/1.1\r\n\r\n"]
)
async def test_a_bad_http11_first_line_keeps_its_answer(first: bytes) -> None:
    # An HTTP/1 line llhttp refuses (a bad version, HTTP/0.9 style, a bad
    # method) is answered as before: only a line of neither protocol is not.
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await conn.send(first)
        response = await conn.read_response()
    assert response.status in (400, 505)


async def test_without_http2_the_preface_is_an_http11_error() -> None:
    async with serve(hello, http2=False) as srv, raw_connection(srv.port) as conn:
        await conn.send(PREFACE)
        response = await conn.read_response()
    assert response.status in (400, 505)
