"""The app's mistakes: bad messages, response splitting, wrong lengths, disconnects."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.http1.apps import read_body
from tests.support import exchange, raw_connection, serve

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


def start(status: Any = 200, headers: Any = ()) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


BAD_STARTS: dict[str, dict[str, Any]] = {
    "crlf_in_value": start(headers=[(b"x", b"a\r\nSet-Cookie: evil=1")]),
    "lf_in_value": start(headers=[(b"x", b"a\nb")]),
    "nul_in_value": start(headers=[(b"x", b"a\x00b")]),
    "crlf_in_name": start(headers=[(b"x\r\nevil", b"1")]),
    "space_in_name": start(headers=[(b"x y", b"1")]),
    "str_name": start(headers=[("x", b"1")]),
    "str_value": start(headers=[(b"x", "1")]),
    "triple": start(headers=[(b"x", b"1", b"2")]),
    "status_600": start(status=600),
    "status_99": start(status=99),
    "status_str": start(status="200"),
    "status_missing": {"type": "http.response.start"},
    "bad_content_length": start(headers=[(b"content-length", b"+5")]),
}


@pytest.mark.parametrize("name", list(BAD_STARTS))
async def test_invalid_response_head_is_500_and_never_on_the_wire(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(BAD_STARTS[name])
        await send({"type": "http.response.body", "body": b"secret"})

    with caplog.at_level(logging.ERROR, logger="sluiceway.error"):
        async with serve(app) as srv:
            response = await exchange(srv.port, GET)
    assert response.status == 500
    assert b"evil" not in response.raw and b"secret" not in response.raw
    assert any("Exception in ASGI application" in r.getMessage() for r in caplog.records)


BAD_SEQUENCES: dict[str, list[dict[str, Any]]] = {
    "body_before_start": [{"type": "http.response.body", "body": b"x"}],
    "start_twice": [start(), start()],
    "unknown_type": [{"type": "http.response.nonsense"}],
    "no_type": [{"status": 200}],
    "str_body": [start(), {"type": "http.response.body", "body": "text"}],
    "trailers_unannounced": [start(), {"type": "http.response.trailers", "headers": []}],
}


@pytest.mark.parametrize("name", list(BAD_SEQUENCES))
async def test_out_of_order_message_names_the_problem(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            for message in BAD_SEQUENCES[name]:
                await send(message)
        except Exception as exc:
            errors.append(exc)
            raise

    with caplog.at_level(logging.ERROR, logger="sluiceway.error"):
        async with serve(app) as srv:
            response = await exchange(srv.port, GET)
    assert response.status == 500
    assert len(errors) == 1
    text = str(errors[0])
    assert any(word in text for word in ("unexpected", "unknown", "must")), text


async def test_response_longer_than_content_length_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"content-length", b"5")]))
        await send({"type": "http.response.body", "body": b"12", "more_body": True})
        await send({"type": "http.response.body", "body": b"3456789"})

    with caplog.at_level(logging.ERROR, logger="sluiceway.error"):
        async with serve(app) as srv, raw_connection(srv.port) as conn:
            await conn.send(GET)
            data = await conn.read_until_close()
    assert data.endswith(b"\r\n\r\n12")
    assert any("Content-Length" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_response_shorter_than_content_length_closes() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"content-length", b"10")]))
        await send({"type": "http.response.body", "body": b"12", "more_body": True})
        await send({"type": "http.response.body", "body": b"34"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        data = await conn.read_until_close()
    assert data.endswith(b"\r\n\r\n12")


async def test_first_body_not_matching_content_length_is_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"content-length", b"10")]))
        await send({"type": "http.response.body", "body": b"short"})

    async with serve(app) as srv:
        response = await exchange(srv.port, GET)
    assert response.status == 500


async def test_transfer_encoding_from_app_is_ignored() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"transfer-encoding", b"gzip")]))
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app) as srv:
        response = await exchange(srv.port, GET)
    assert response.header_values(b"transfer-encoding") == []
    assert response.body == b"ok"


async def test_app_connection_close_is_honoured() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"connection", b"close")]))
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        response = await conn.read_response()
        assert response.header_values(b"connection") == [b"close"]
        assert await conn.at_eof()


async def test_app_date_and_server_override_defaults() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"server", b"mine"), (b"date", b"then")]))
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app, headers=(("x-extra", "1"),)) as srv:
        response = await exchange(srv.port, GET)
    assert response.header_values(b"server") == [b"mine"]
    assert response.header_values(b"date") == [b"then"]
    assert response.header(b"x-extra") == b"1"


async def test_server_and_date_headers_can_be_switched_off() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app, server_header=False, date_header=False) as srv:
        response = await exchange(srv.port, GET)
    assert response.header(b"server") is None and response.header(b"date") is None


async def test_disconnect_after_response_and_send_after_client_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    after: list[Any] = []
    raised: list[BaseException] = []
    gone = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send(start())
        await send({"type": "http.response.body", "body": b"x", "more_body": True})
        message = await receive()  # blocks until the client goes away
        after.append(message)
        # Its FIN could be a half-close (RFC 9112 §9.6: the client may still be
        # reading), so sends go on until the reset its kernel answers them with
        # reaches us; from then on send raises. A few passes, never a hundred.
        try:
            for _ in range(100):
                await send({"type": "http.response.body", "body": b"y", "more_body": True})
                await asyncio.sleep(0)
        except OSError as exc:
            raised.append(exc)
            gone.set()
            raise

    with caplog.at_level(logging.DEBUG, logger="sluiceway"):
        async with serve(app) as srv:
            async with raw_connection(srv.port) as conn:
                await conn.send(GET)
                await conn.reader.readuntil(b"\r\n\r\n")
            await asyncio.wait_for(gone.wait(), 5)
            await asyncio.sleep(0)  # let _run_app finish its handling
    assert after == [{"type": "http.disconnect"}]
    assert raised and isinstance(raised[0], OSError)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_receive_after_complete_response_is_disconnect() -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send(start())
        await send({"type": "http.response.body", "body": b"ok"})
        got.append(await asyncio.wait_for(receive(), 5))

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        await conn.read_response()
        await conn.send(GET)  # the connection stays usable meanwhile
        await conn.read_response()
    assert got[0] == {"type": "http.disconnect"}


async def test_an_app_that_is_not_async_is_500_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def app(scope: Any, receive: Any, send: Any) -> None:  # "async" forgotten
        return None

    with caplog.at_level(logging.ERROR, logger="sluiceway.error"):
        async with serve(app) as srv:
            response = await exchange(srv.port, GET)
            after = await exchange(srv.port, GET)  # and the server goes on serving
    assert (response.status, after.status) == (500, 500)
    assert "object NoneType can't be used in 'await' expression" in caplog.text
