"""The WebSocket wire through the whole server: handshake failures, bad frames, size limits
(zip bomb included), permessage-deflate with the `websockets` client, keepalive, flow control
both ways, graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import tracemalloc
import zlib
from typing import Any

import pytest
from websockets.asyncio.client import connect

from sluiceway.websocket import protocol as ws_protocol
from tests.support import TIMEOUT_S, raw_connection, serve
from tests.websocket.test_ws_server import echo_app
from tests.websocket.ws_support import (
    frame,
    raw_websocket,
    read_frame,
    read_until_close_frame,
    upgrade_request,
)

Scope = dict[str, Any]
ZERO_MASK = b"\0\0\0\0"


async def wait(fut: asyncio.Future[Any]) -> Any:
    return await asyncio.wait_for(fut, TIMEOUT_S)


# -- handshake ---------------------------------------------------------------------------


def accept_then_report() -> tuple[Any, asyncio.Future[dict[str, Any]]]:
    """An app that accepts, then reports the first event it receives after that."""
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        got.set_result(await receive())

    return app, got


async def test_wrong_version_is_426_naming_13() -> None:
    async with serve(echo_app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request(version=b"8"))
        response = await conn.read_response()
        assert response.status == 426
        assert response.header(b"sec-websocket-version") == b"13"
        assert await conn.at_eof()


@pytest.mark.parametrize(
    "key", [b"short", b"!!!!!!!!!!!!!!!!!!!!!!!!", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
)
async def test_bad_key_is_400(key: bytes) -> None:
    async with serve(echo_app) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request(key=key))
        assert (await conn.read_response()).status == 400
        assert await conn.at_eof()


async def test_ws_none_serves_the_request_as_http() -> None:
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.set_result(scope["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"plain"})

    async with serve(app, ws="none") as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request())
        response = await conn.read_response()
        assert (response.status, response.body) == (200, b"plain")
        assert await wait(seen) == "http"


# -- frames and limits -------------------------------------------------------------------------


async def test_unmasked_client_frame_is_1002() -> None:
    async with serve(echo_app) as srv, raw_websocket(srv.port) as (conn, _):
        await conn.send(frame(0x1, b"hi", mask=None))
        assert (await read_frame(conn)).close_code == 1002
        assert await conn.at_eof()


async def test_message_over_max_size_is_1009_and_the_app_hears_it() -> None:
    app, got = accept_then_report()

    async with serve(app, ws_max_size_bytes=1000) as srv, raw_websocket(srv.port) as (conn, _):
        # Only the header of a 1 GiB frame is sent: the refusal must not wait for the payload.
        await conn.send(b"\x82\xff" + (1 << 30).to_bytes(8, "big") + ZERO_MASK)
        assert (await read_frame(conn)).close_code == 1009
        assert (await wait(got))["code"] == 1009


async def test_many_small_fragments_over_max_size_are_1009() -> None:
    async with serve(echo_app, ws_max_size_bytes=1000) as srv, raw_websocket(srv.port) as (conn, _):
        data = frame(0x2, b"x" * 100, fin=False, mask=ZERO_MASK)
        data += frame(0x0, b"x" * 100, fin=False, mask=ZERO_MASK) * 20
        await conn.send(data)
        assert (await read_until_close_frame(conn)).close_code == 1009


async def test_compressed_zip_bomb_is_1009() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    payload = bomb.compress(b"\0" * (64 * 1024 * 1024)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    payload = payload[:-4]  # RFC 7692 §7.2.1: drop the 00 00 ff ff tail
    assert len(payload) < 100_000
    extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    async with (
        serve(echo_app, ws_max_size_bytes=1024 * 1024) as srv,
        raw_websocket(srv.port, extra=extension) as (conn, response),
    ):
        assert b"permessage-deflate" in (response.header(b"sec-websocket-extensions") or b"")
        await conn.send(frame(0x2, payload, rsv1=True, mask=ZERO_MASK))
        assert (await read_until_close_frame(conn)).close_code == 1009


@pytest.mark.parametrize("enabled", [True, False])
async def test_permessage_deflate_with_the_websockets_client(enabled: bool) -> None:
    async with (
        serve(echo_app, ws_per_message_deflate=enabled) as srv,
        connect(f"ws://127.0.0.1:{srv.port}/") as ws,
    ):
        assert ws.response is not None
        agreed = ws.response.headers.get("sec-websocket-extensions", "")
        assert ("permessage-deflate" in agreed) is enabled
        text = "compress me " * 20_000
        for _ in range(3):  # context takeover across messages
            await ws.send(text)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == text
        await ws.send(b"\x01" * 300_000)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == b"\x01" * 300_000


# -- keepalive ---------------------------------------------------------------------------------


async def test_server_pings_and_drops_a_peer_that_never_pongs() -> None:
    app, got = accept_then_report()

    config = {"ws_ping_interval_s": 0.2, "ws_ping_timeout_s": 0.4}
    async with serve(app, **config) as srv, raw_websocket(srv.port) as (conn, _):
        ping = await read_frame(conn)
        assert ping.opcode == 0x9
        await conn.send(frame(0xA, ping.payload))
        # Answered: the connection lives on and the next ping comes.
        assert (await read_frame(conn)).opcode == 0x9
        # Unanswered: closed with 1011 after the ping timeout.
        closing = await read_frame(conn)
        assert closing.close_code == 1011
        assert await conn.at_eof()
        assert (await wait(got))["code"] == 1011


async def test_a_short_ping_interval_is_kept_even_with_long_http_timeouts() -> None:
    # The shared tick's period used to follow the HTTP timeouts alone (0.25 s
    # here): a 0.05 s interval then pinged every 0.25 s.
    config = {"ws_ping_interval_s": 0.05, "ws_ping_timeout_s": 0, "keep_alive_timeout_s": 5.0}
    async with serve(echo_app, **config) as srv, raw_websocket(srv.port) as (conn, _):
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(4):
            assert (await read_frame(conn)).opcode == 0x9
        # About 0.25 s now, 1 s with the old period; the margin is for a busy machine.
        assert loop.time() - start < 0.75


async def test_no_pings_when_the_interval_is_zero() -> None:
    async with (
        serve(echo_app, ws_ping_interval_s=0, ws_ping_timeout_s=0.1) as srv,
        raw_websocket(srv.port) as (conn, _),
    ):
        with pytest.raises(asyncio.TimeoutError):
            await read_frame(conn, timeout=0.8)


# -- flow control ------------------------------------------------------------------------------


async def test_reading_pauses_when_the_app_does_not_receive() -> None:
    release = asyncio.Event()
    received: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        count = 0
        while (await receive())["type"] == "websocket.receive":
            count += 1
        received.set_result(count)

    message = frame(0x2, b"m" * 65536, mask=ZERO_MASK)
    limit = 48 * 1024 * 1024 // len(message)
    async with serve(app, ws_max_queue=2) as srv, raw_websocket(srv.port) as (conn, _):
        sent = 0
        while sent < limit:
            conn.writer.write(message)
            sent += 1
            try:
                await asyncio.wait_for(conn.writer.drain(), 0.5)
            except asyncio.TimeoutError:
                break  # the server stopped reading: the kernel buffers are full
        # Bounded: queue (2) + one read + kernel buffers, far below 48 MiB.
        assert sent < limit, "the server kept reading without the app receiving"
        release.set()
        await asyncio.wait_for(conn.writer.drain(), TIMEOUT_S)
        await conn.send(frame(0x8, b"\x03\xe8"))
        assert await wait(received) == sent


async def test_send_blocks_while_the_client_does_not_read() -> None:
    blocked: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        chunk = b"s" * 65536
        for count in range(1, 48 * 16):
            try:
                await asyncio.wait_for(send({"type": "websocket.send", "bytes": chunk}), 1.0)
            except asyncio.TimeoutError:
                blocked.set_result(count)
                return
        blocked.set_result(-1)

    async with serve(app) as srv, raw_websocket(srv.port) as (conn, _):
        count = await asyncio.wait_for(blocked, 30)
        assert 0 < count < 48 * 16, "send never blocked on a client that does not read"
        # Everything the app sent (count messages) is still delivered once the client reads.
        for _ in range(count):
            got = await read_frame(conn)
            assert (got.opcode, len(got.payload)) == (0x2, 65536)


# -- shutdown ----------------------------------------------------------------------------------


async def test_graceful_shutdown_closes_with_1001() -> None:
    app, got = accept_then_report()

    async with serve(app) as srv:
        ws = await connect(f"ws://127.0.0.1:{srv.port}/")
    # serve() has shut down: the client saw a clean Close with 1001, never a bare drop (1006).
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
    assert ws.close_code == 1001
    assert (await wait(got))["code"] == 1001


async def test_a_peer_that_never_answers_close_is_dropped_after_the_close_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # RFC 6455 §7.1.1 leaves the wait for the peer's Close to us: it must end.
    monkeypatch.setattr(ws_protocol, "CLOSE_TIMEOUT_S", 0.3)
    got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        got.set_result(await receive())

    async with serve(app) as srv, raw_websocket(srv.port) as (conn, _):
        assert (await read_frame(conn)).close_code == 1000
        # No Close back and no FIN: the server gives up on its own.
        loop = asyncio.get_running_loop()
        start = loop.time()
        with contextlib.suppress(ConnectionResetError):  # abort() may reset, not close
            assert await conn.at_eof()
        assert loop.time() - start < 2.0
        assert (await wait(got))["code"] == 1006


async def test_shutdown_during_the_handshake_answers_503() -> None:
    loop = asyncio.get_running_loop()
    asked: asyncio.Future[None] = loop.create_future()
    outcome: asyncio.Future[BaseException] = loop.create_future()
    go_on = asyncio.Event()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        asked.set_result(None)
        await go_on.wait()
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:
            outcome.set_result(exc)

    async with serve(app) as srv:
        conn_cm = raw_connection(srv.port)
        conn = await conn_cm.__aenter__()
        await conn.send(upgrade_request())
        await wait(asked)
        for live in list(srv.state.connections):
            live.shutdown()
        response = await conn.read_response()
        assert response.status == 503
        go_on.set()
        assert isinstance(await wait(outcome), OSError)
        await conn_cm.__aexit__(None, None, None)


async def test_upgrade_at_the_concurrency_limit_gets_503() -> None:
    async with (
        serve(echo_app, limit_concurrency=1) as srv,
        raw_websocket(srv.port),
        raw_connection(srv.port) as conn,
    ):
        await conn.send(upgrade_request())
        assert (await conn.read_response()).status == 503


async def test_frames_held_before_accept_still_respect_the_queue_bound() -> None:
    accept_now = asyncio.Event()
    receive_now = asyncio.Event()
    received: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await accept_now.wait()
        await send({"type": "websocket.accept"})
        await receive_now.wait()
        count = 0
        while (await receive())["type"] == "websocket.receive":
            count += 1
        received.set_result(count)

    early = frame(0x2, b"e" * 4096, mask=ZERO_MASK) * 40  # 160 KiB: past the 64 KiB hold
    message = frame(0x2, b"m" * 65536, mask=ZERO_MASK)
    limit = 48 * 1024 * 1024 // len(message)
    async with serve(app, ws_max_queue=2) as srv, raw_connection(srv.port) as conn:
        await conn.send(upgrade_request() + early)
        accept_now.set()
        assert (await conn.read_response(head=True)).status == 101
        sent = 0
        while sent < limit:
            conn.writer.write(message)
            sent += 1
            try:
                await asyncio.wait_for(conn.writer.drain(), 0.5)
            except asyncio.TimeoutError:
                break
        assert sent < limit, "reading resumed past the queue bound after the accept"
        receive_now.set()
        await asyncio.wait_for(conn.writer.drain(), TIMEOUT_S)
        await conn.send(frame(0x8, b"\x03\xe8"))
        assert await wait(received) == 40 + sent


async def test_idle_connection_python_heap_is_small() -> None:
    """Guards the per-connection budget (target: < 14 KiB RSS per idle connection, bench/ws.py).

    Counts what sluiceway's own code allocates for each idle, accepted WebSocket: the
    protocol, cycle, codec, scope, app task and coroutine frames. The transport and the
    kernel buffers are outside the Python heap and measured by the benchmark instead.
    """
    count = 100
    async with serve(echo_app) as srv:
        clients: list[asyncio.StreamWriter] = []

        async def open_one() -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(upgrade_request())
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT_S)
            clients.append(writer)

        await open_one()  # first-connection allocations (caches, the tick) out of the count
        gc.collect()
        tracemalloc.start(1)
        try:
            before = tracemalloc.take_snapshot()
            for _ in range(count):
                await open_one()
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        only_ours = [tracemalloc.Filter(True, "*sluiceway*")]
        grown = sum(
            stat.size_diff
            for stat in after.filter_traces(only_ours).compare_to(
                before.filter_traces(only_ours), "lineno"
            )
        )
        assert len(srv.state.connections) == count + 1
        # Measured at about 3.8 KiB; the bound leaves room without hiding a new buffer.
        assert grown / count < 6 * 1024, f"{grown / count:.0f} bytes per idle connection"
        for writer in clients:
            writer.close()
