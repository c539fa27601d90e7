"""What a response writes goes out at the end of the loop pass: one write per connection.

The wire tests use real sockets; the write-count tests drive ``HTTP1Protocol``
through a recording transport, since how many writes carried the bytes is not
visible from the client's side of a socket.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sluiceway.config import Config
from sluiceway.connection.state import ServerState
from sluiceway.server.listener import make_protocol_factory
from tests.support import raw_connection, serve

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
CHUNK = b"c" * 65536


class RecordingTransport(asyncio.Transport):
    """Records each write and writelines call as the list of byte strings it carried."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[bytes]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append([bytes(data)])

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append([bytes(d) for d in list_of_data])

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def wire(self) -> bytes:
        return b"".join(b"".join(call) for call in self.calls)


async def drive(
    app: Any, done: asyncio.Event, transport: RecordingTransport | None = None
) -> RecordingTransport:
    """One GET through a real HTTP1Protocol; returns once ``done`` is set and a pass more ran."""
    config = Config(access_log=False)
    protocol: Any = make_protocol_factory(config, app, ServerState(config))()
    transport = transport or RecordingTransport()
    protocol.connection_made(transport)
    protocol.data_received(GET)
    await asyncio.wait_for(done.wait(), 5)
    for _ in range(3):
        await asyncio.sleep(0)  # let a flush scheduled for the end of the pass run
    protocol.connection_lost(None)
    return transport


async def test_chunks_sent_in_one_pass_go_out_in_one_vectored_write() -> None:
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", str(16 * len(CHUNK)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(16):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": i != 15})
        done.set()

    transport = await drive(app, done)
    assert len(transport.calls) == 1, [len(c) for c in transport.calls]
    head, _, body = transport.wire().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == CHUNK * 16


async def test_chunks_sent_in_separate_passes_go_out_in_their_pass() -> None:
    done = asyncio.Event()
    transport = RecordingTransport()
    seen: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(3):
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            for _ in range(3):
                await asyncio.sleep(0)  # a later pass: what was held went out before it
            seen.append(len(transport.calls))
        await send({"type": "http.response.body", "body": b""})
        done.set()

    await drive(app, done, transport)
    assert seen == [1, 2, 3]
    assert transport.wire().endswith(b"4\r\npart\r\n0\r\n\r\n")


async def test_what_is_held_is_bounded_within_one_pass() -> None:
    done = asyncio.Event()
    total = 48  # 3 MiB sent without yielding once

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-length", str(total * len(CHUNK)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(total):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": i != total - 1})
        done.set()

    transport = await drive(app, done)
    sizes = [sum(map(len, call)) for call in transport.calls]
    assert len(sizes) >= 3
    assert max(sizes) <= 1024 * 1024 + len(CHUNK) + 200  # the cap, one chunk and the head
    assert transport.wire().endswith(CHUNK * 2)


async def test_client_reads_a_chunk_before_the_app_sends_the_next() -> None:
    # The app waits for the client to have the first chunk: held parts must go out at
    # the end of the loop pass, or this waits forever.
    got_first = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.wait_for(got_first.wait(), 5)
        await send({"type": "http.response.body", "body": b"second"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), 5)
        assert b"transfer-encoding: chunked" in head.lower()
        first = await asyncio.wait_for(conn.reader.readuntil(b"first\r\n"), 5)
        assert first == b"5\r\nfirst\r\n"
        got_first.set()
        rest = await asyncio.wait_for(conn.reader.readuntil(b"0\r\n\r\n"), 5)
        assert rest == b"6\r\nsecond\r\n0\r\n\r\n"


async def test_pipelined_streamed_responses_keep_their_order() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        tag = scope["path"].encode()
        headers = [(b"content-length", str(3 * len(tag)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": tag, "more_body": True})
        await send({"type": "http.response.body", "body": tag, "more_body": True})
        await send({"type": "http.response.body", "body": tag})

    requests = b"".join(
        b"%s /%d HTTP/1.1\r\nHost: a\r\n\r\n" % (method, i)
        for i, method in enumerate((b"GET", b"HEAD", b"GET", b"GET"))
    )
    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(requests)
        bodies = [(await conn.read_response(head=i == 1)).body for i in range(4)]
    assert bodies == [b"/0/0/0", b"", b"/2/2/2", b"/3/3/3"]


async def test_many_tiny_chunks_are_held_only_in_bounded_numbers() -> None:
    done = asyncio.Event()
    total = 2000

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(total):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        done.set()

    transport = await drive(app, done)
    assert len(transport.calls) >= total // 256  # a flush every 256 parts at least
    assert max(len(call) for call in transport.calls) <= 256 + 3
    assert transport.wire().count(b"1\r\nx\r\n") == total


async def test_the_apps_of_one_pass_run_before_any_of_their_answers_is_written() -> None:
    # The answers of a loop pass go out together after it, so the apps run back to back
    # with no socket write between them (their code stays in the CPU's caches).
    transports = [RecordingTransport() for _ in range(3)]
    writes_seen: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hello"})
        writes_seen.append(sum(len(t.calls) for t in transports))

    config = Config(access_log=False)
    factory = make_protocol_factory(config, app, ServerState(config))
    protocols: list[Any] = [factory() for _ in transports]
    for protocol, transport in zip(protocols, transports, strict=True):
        protocol.connection_made(transport)
        protocol.data_received(GET)
    for _ in range(5):
        await asyncio.sleep(0)
    assert writes_seen == [0, 0, 0]
    assert [len(t.calls) for t in transports] == [1, 1, 1]  # one write each
    assert all(t.wire().endswith(b"\r\n\r\nhello") for t in transports)
    for protocol in protocols:
        protocol.connection_lost(None)


async def test_a_held_answer_goes_out_before_a_503_for_the_request_behind_it() -> None:
    # With --limit-concurrency 1 the pipelined second request is refused at once, from
    # inside the first app's send: the 503 must not overtake the held 200.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        # A task, then, even where it starts eagerly (3.12+): it counts toward the limit.
        await asyncio.sleep(0)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first"})

    async with serve(app, limit_concurrency=1) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET + GET)
        first = await conn.read_response()
        second = await conn.read_response()
    assert (first.status, first.body) == (200, b"first")
    assert second.status == 503


class ClosingTransport(RecordingTransport):
    """Raises on a write once closed, as uvloop's transport does."""

    def write(self, data: Any) -> None:
        if self.closing:
            raise RuntimeError("unable to perform operation: the handler is closed")
        super().write(data)

    def writelines(self, list_of_data: Any) -> None:
        if self.closing:
            raise RuntimeError("unable to perform operation: the handler is closed")
        super().writelines(list_of_data)


async def test_a_connection_closed_in_the_pass_does_not_stop_the_others_answers() -> None:
    # The pass-end flush writes every connection's output in one callback: one whose
    # transport closed meanwhile must neither raise there nor hold the others back.
    closing = ClosingTransport()
    other = RecordingTransport()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/closing":
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            closing.closing = True  # the connection went away before the pass ended
        else:
            await send({"type": "http.response.body", "body": b"hello"})

    config = Config(access_log=False)
    factory = make_protocol_factory(config, app, ServerState(config))
    dying: Any = factory()
    living: Any = factory()  # the same server: both share the pass-end flush
    dying.connection_made(closing)
    dying.data_received(b"GET /closing HTTP/1.1\r\nHost: a\r\n\r\n")
    living.connection_made(other)
    living.data_received(GET)
    for _ in range(5):
        await asyncio.sleep(0)
    assert closing.calls == []
    assert other.wire().endswith(b"\r\n\r\nhello")
    for protocol in (dying, living):
        protocol.connection_lost(None)
