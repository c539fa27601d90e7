"""Flow control, timeouts, 100-continue, limit-concurrency, graceful shutdown, access log."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from sluiceway.accesslog import escape
from sluiceway.asgi.http import BODY_HIGH_WATER_BYTES
from sluiceway.transport.flow import FlowControl, direct_fd, unsent
from tests.http1.apps import echo, hello, read_body
from tests.support import exchange, raw_connection, serve

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"


@contextlib.asynccontextmanager
async def connected() -> AsyncIterator[tuple[asyncio.Transport, socket.socket]]:
    """A client transport on the running loop, and the accepted socket at the other end."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        peer, _ = listener.accept()  # the handshake is done: accept returns at once
        try:
            yield cast(asyncio.Transport, transport), peer
        finally:
            transport.abort()
            peer.close()


async def read_to_eof(peer: socket.socket) -> bytes:
    peer.settimeout(10)
    received = bytearray()
    loop = asyncio.get_running_loop()
    while chunk := await loop.run_in_executor(None, peer.recv, 1 << 20):
        received += chunk
    return bytes(received)


async def test_send_blocks_while_the_client_does_not_read() -> None:
    chunk = b"x" * 65536
    total = 400  # 25 MiB: far beyond any socket + transport buffer
    progress = [0]
    blocked = asyncio.Event()

    async def producer(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(total):
            step = asyncio.ensure_future(
                send({"type": "http.response.body", "body": chunk, "more_body": True})
            )
            done, _ = await asyncio.wait({step}, timeout=0.2)
            if not done:
                blocked.set()  # send() is waiting on the slow client
                await step
            progress[0] += 1
        await send({"type": "http.response.body", "body": b""})

    async with serve(producer) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        await asyncio.wait_for(blocked.wait(), 10)
        assert progress[0] < total
        response = await conn.read_response(timeout=30)
    assert len(response.body) == total * len(chunk)


async def test_vectored_writes_past_the_high_water_mark_pause_the_protocol() -> None:
    # FlowControl.writelines (transport/flow.py) on a peer that reads nothing: the buffer
    # crosses the high-water mark and pause_writing comes, on every Python. asyncio's own
    # writelines never pauses on CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 (CVE-2024-12254).
    piece = b"v" * 65536
    limit = 64 * 1024 * 1024  # far beyond the socket buffers: without a pause, buffered here
    paused = asyncio.Event()

    class Writer(asyncio.Protocol):
        def pause_writing(self) -> None:
            paused.set()

    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        transport, _ = await loop.create_connection(Writer, "127.0.0.1", port)
        peer, _ = listener.accept()  # the handshake is done: accept returns at once
        try:
            flow = FlowControl(cast(asyncio.Transport, transport))
            written = 0
            while not paused.is_set() and written < limit:
                flow.writelines((piece, piece))
                written += 2 * len(piece)
            assert paused.is_set(), f"{written} bytes buffered and no pause_writing"
            high = transport.get_write_buffer_limits()[1]
            assert transport.get_write_buffer_size() <= high + 2 * len(piece)
        finally:
            transport.abort()
            peer.close()


async def test_vectored_writes_with_an_empty_part_still_end_with_the_eof() -> None:
    # asyncio's selector transport from CPython 3.12 on sends writelines() with sendmsg and
    # keeps an empty last part in its buffer: the buffer never looks empty, write_eof()
    # never shuts the socket and the loop polls for writability forever.
    # FlowControl.writelines drops empty parts there.
    async with connected() as (transport, peer):
        flow = FlowControl(transport)
        flow.writelines((b"head", b"body", b""))
        transport.write_eof()
        assert await read_to_eof(peer) == b"headbody"  # and the EOF came


async def test_write_parts_keeps_order_past_a_full_socket() -> None:
    # FlowControl.write_parts: on uvloop's TCP transport straight to os.writev while the
    # transport holds nothing, the kernel's leftovers to the transport (unsent); on asyncio's,
    # the transport's writelines. Random parts, views among them, far past the socket
    # buffers, with the peer reading only at the end: every byte arrives, in order.
    rng = random.Random(7)
    source = rng.randbytes(1 << 20)
    async with connected() as (transport, peer):
        flow = FlowControl(transport)
        assert (direct_fd(transport) >= 0) == (type(transport).__module__ == "uvloop.loop")
        expected = bytearray()
        while len(expected) < 16 << 20:
            parts: list[bytes | memoryview] = []
            for _ in range(rng.randrange(1, 200)):
                start = rng.randrange(len(source))
                piece = memoryview(source)[start : start + rng.randrange(1, 40000)]
                parts.append(piece if rng.random() < 0.7 else bytes(piece))
            flow.write_parts(parts, sum(map(len, parts)))
            expected += b"".join(parts)
        assert transport.get_write_buffer_size() > 0  # the kernel took only part of it
        transport.write_eof()
        assert await read_to_eof(peer) == expected


def test_unsent_is_the_tail_of_the_joined_parts() -> None:
    rng = random.Random(11)
    for _ in range(2000):
        parts: list[bytes | memoryview] = [
            rng.randbytes(rng.randrange(0, 50)) for _ in range(rng.randrange(1, 8))
        ]
        whole = b"".join(parts)
        sent = rng.randrange(len(whole) + 1)
        assert b"".join(unsent(parts, sent)) == whole[sent:]


async def test_write_parts_after_close_never_writes_to_a_reused_descriptor() -> None:
    # After close() uvloop frees the descriptor, and the next socket may get its number:
    # a direct write then would land in another connection.
    loop = asyncio.get_running_loop()
    lost: asyncio.Future[None] = loop.create_future()

    class Watcher(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(None)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        transport, _ = await loop.create_connection(Watcher, "127.0.0.1", port)
        first_peer, _ = listener.accept()
        flow = FlowControl(cast(asyncio.Transport, transport))
        fd = direct_fd(transport)
        if fd < 0:
            transport.close()
            first_peer.close()
            pytest.skip("this loop's transports are never written to directly")
        transport.close()
        await asyncio.wait_for(lost, 5)
        other = socket.create_connection(("127.0.0.1", port))
        other_peer, _ = listener.accept()
        try:
            assert other.fileno() == fd  # the number came back: the hazard is real here
            with contextlib.suppress(RuntimeError):  # a closed transport may refuse writes
                flow.write_parts([b"not ", b"yours"], 9)
            other_peer.setblocking(False)
            with pytest.raises(BlockingIOError):
                other_peer.recv(16)  # nothing arrived on the other connection
        finally:
            other.close()
            other_peer.close()
            first_peer.close()


async def test_reading_pauses_while_the_app_does_not_consume() -> None:
    release = asyncio.Event()

    async def lazy(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        body = await read_body(receive)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    size = 8 * 1024 * 1024
    async with serve(lazy) as srv, raw_connection(srv.port) as conn:
        conn.writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        conn.writer.write(b"z" * size)  # no drain: the kernel and our buffer fill up
        (protocol,) = srv.state.connections
        flow = protocol._flow  # type: ignore[attr-defined]

        async def paused() -> None:
            while not flow.read_paused:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(paused(), 10)
        await asyncio.sleep(0.1)  # paused means no further reads: the buffer stays put
        buffered = protocol._parsing.buffered_bytes  # type: ignore[attr-defined]
        # bounded by the high-water mark plus one read from the socket
        assert buffered <= BODY_HIGH_WATER_BYTES + 256 * 1024
        assert flow.read_paused
        release.set()
        response = await conn.read_response(timeout=30)
    assert response.body == b"%d" % size


async def test_keep_alive_timeout_closes_idle_connection() -> None:
    async with serve(hello, keep_alive_timeout_s=0.2) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        await conn.read_response()
        assert await conn.at_eof(timeout=3)


async def test_slowloris_head_is_cut_off_by_header_timeout() -> None:
    async with serve(hello, request_headers_timeout_s=0.3) as srv, raw_connection(srv.port) as conn:
        closed = False
        loop = asyncio.get_running_loop()
        begin = loop.time()
        for byte in b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 200:
            try:
                await conn.send(bytes([byte]))
            except ConnectionError:
                closed = True
                break
            if conn.reader.at_eof():
                closed = True
                break
            await asyncio.sleep(0.01)  # a byte every 10 ms keeps the socket busy
        closed = closed or await conn.at_eof(timeout=3)
        assert closed
        assert loop.time() - begin < 3


async def test_idle_new_connection_is_closed_by_header_timeout() -> None:
    async with serve(hello, request_headers_timeout_s=0.2) as srv, raw_connection(srv.port) as conn:
        assert await conn.at_eof(timeout=3)


async def test_expect_100_continue_sent_when_app_reads_body() -> None:
    async with serve(echo) as srv, raw_connection(srv.port) as conn:
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await conn.read_response()
        assert interim.status == 100
        await conn.send(b"hello")
        response = await conn.read_response()
        assert response.body == b"hello"


async def test_expect_100_continue_not_sent_when_app_answers_without_body() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        await conn.send(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        response = await conn.read_response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        assert await conn.at_eof()


async def test_limit_concurrency_answers_503() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def blocking(scope: Any, receive: Any, send: Any) -> None:
        entered.set()
        await release.wait()
        await hello(scope, receive, send)

    async with serve(blocking, limit_concurrency=1) as srv, raw_connection(srv.port) as first:
        await first.send(GET)
        await asyncio.wait_for(entered.wait(), 5)
        second = await exchange(srv.port, GET)
        assert second.status == 503
        release.set()
        assert (await first.read_response()).status == 200


async def test_shutdown_closes_idle_and_finishes_in_flight() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def blocking(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            entered.set()
            await release.wait()
        await hello(scope, receive, send)

    srv_ctx = serve(blocking)
    async with srv_ctx as srv, raw_connection(srv.port) as idle, raw_connection(srv.port) as busy:
        await idle.send(GET)
        await idle.read_response()
        await busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(entered.wait(), 5)
        srv.state.shutting_down = True
        for conn in list(srv.state.connections):
            conn.shutdown()
        assert await idle.at_eof()
        release.set()
        response = await busy.read_response()
        assert response.status == 200
        assert response.header(b"connection") == b"close"
        assert await busy.at_eof()
        await asyncio.wait_for(srv.state.wait_connections_closed(), 5)


async def test_access_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sluiceway.access"):
        async with serve(hello) as srv:
            await exchange(srv.port, b"GET /p%0d%0aX?q=%1b[31m HTTP/1.1\r\nHost: a\r\n\r\n")
    (record,) = [r for r in caplog.records if r.name == "sluiceway.access"]
    line = record.getMessage()
    assert '"GET /p%0d%0aX?q=%1b[31m HTTP/1.1" 200 13' in line
    assert line.startswith("127.0.0.1:")
    assert "\n" not in line and "\x1b" not in line


async def test_access_log_off_formats_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sluiceway.access"):
        async with serve(hello, access_log=False) as srv:
            await exchange(srv.port, GET)
    assert not [r for r in caplog.records if r.name == "sluiceway.access"]


def test_escape_neutralises_control_and_ansi() -> None:
    assert escape("ok /path") == "ok /path"
    assert escape("a\nb") == "a\\x0ab"
    assert escape("\x1b[31mred") == "\\x1b[31mred"
    assert escape('say "hi"') == 'say \\"hi\\"'
    assert escape("\u202e") == "\\u202e"


async def test_unread_large_body_does_not_stall_keep_alive() -> None:
    async with serve(hello) as srv, raw_connection(srv.port) as conn:
        size = 1024 * 1024
        await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        await conn.send(b"q" * size)  # the app answers without reading any of it
        assert (await conn.read_response()).status == 200
        await conn.send(GET)
        assert (await conn.read_response()).body == b"Hello, world!"


async def test_partial_pipelined_head_times_out_after_the_response() -> None:
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await hello(scope, receive, send)

    async with serve(slow, request_headers_timeout_s=0.2) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET + b"GET /never-finished HTTP/1.1\r\nHost: a\r\n")
        await asyncio.sleep(0.5)  # the second head's deadline passes while the first runs
        release.set()
        assert (await conn.read_response()).status == 200
        assert await conn.at_eof(timeout=3)


async def test_unix_socket_server_key(tmp_path: Any) -> None:
    from sluiceway.config import Config
    from sluiceway.connection.state import ServerState
    from sluiceway.server.listener import make_protocol_factory

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["server"], scope["client"]))
        await hello(scope, receive, send)

    path = str(tmp_path / "s.sock")
    config = Config(uds=path)
    state = ServerState(config)
    loop = asyncio.get_running_loop()
    server = await loop.create_unix_server(make_protocol_factory(config, app, state), path)
    try:
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(GET)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()
    finally:
        server.close()
        for conn in list(state.connections):
            conn.abort()
        state.stop_clock()
    assert seen == [((path, None), None)]


async def test_stalled_upload_is_cut_off_and_app_sees_disconnect() -> None:
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message["type"])
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                return

    async with serve(app, request_body_timeout_s=0.2) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly-part")
        assert (await conn.read_response(timeout=3)).status == 408  # issue 16
        assert await conn.at_eof(timeout=3)
    assert got[-1] == "http.disconnect"


def test_bad_default_header_is_a_config_error() -> None:
    from sluiceway.config import Config
    from sluiceway.connection.state import ServerState
    from sluiceway.errors import ConfigError

    with pytest.raises(ConfigError):
        ServerState(Config(headers=(("x-evil", "a\r\nset-cookie: b"),)))


async def test_closed_connection_is_freed_without_the_cyclic_gc() -> None:
    # A connection per request (scenario (e)) must not leave a reference cycle
    # behind each time: the protocol is freed as soon as the connection is lost.
    gc.disable()
    try:
        async with serve(hello) as srv:
            async with raw_connection(srv.port) as conn:
                await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                assert (await conn.read_response()).status == 200
                (protocol,) = srv.state.connections
                protocol_type, protocol_id = type(protocol), id(protocol)
                del protocol
                await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                assert (await conn.read_response()).status == 200
                assert await conn.at_eof()
            await asyncio.wait_for(srv.state.wait_connections_closed(), 5)
            for _ in range(3):
                await asyncio.sleep(0)  # let the loop drop its last handle on the transport
            # Freed by reference counting, with the cyclic GC off. (Looked for among
            # live objects, not with a weakref: the compiled protocol class does not
            # take weak references. No protocol is made after it, so no other one
            # can reuse its address.)
            assert not [
                obj
                for obj in gc.get_objects()
                if type(obj) is protocol_type and id(obj) == protocol_id
            ]
    finally:
        gc.enable()
