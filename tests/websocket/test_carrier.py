"""The WebSocket adapter over a carrier that is not HTTP/1.1 (the seam HTTP/2 will use, RFC 8441).

``FakeCarrier`` is an in-memory ``WebSocketCarrier``: it records what the
adapter asks (accept, deny, frame bytes, pause, close, abort) and feeds bytes
in as an HTTP/2 stream's DATA frames would. No socket, no HTTP/1.1 head: the
adapter must run the whole WebSocket (handshake answer, frames both ways,
the close handshake, denials, flow control, timers) through the seam alone.
The last tests check the seam from the other side: the websocket package
imports nothing of HTTP/1.1 or HTTP/2, and the HTTP/1.1 carrier's 503 at
shutdown is byte for byte HTTP/1's error reply.
"""

from __future__ import annotations

import ast
import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

import sluiceway.websocket
from sluiceway.asgi.types import HeaderList
from sluiceway.config import Config
from sluiceway.connection.state import ServerState
from sluiceway.http1 import wire
from sluiceway.websocket.carrier import WebSocketCarrier
from sluiceway.websocket.protocol import WebSocketAdapter
from tests.support import TIMEOUT_S, imported_modules, raw_connection, serve
from tests.websocket.codec_helpers import SentFrame, client_frame, close_payload
from tests.websocket.codec_helpers import parse_server_frames as parse

Scope = dict[str, Any]
SCOPE: Scope = {"type": "websocket", "path": "/", "headers": [], "subprotocols": ["chat"]}


class FakeCarrier:
    """An in-memory carrier: everything the adapter asks of it, recorded."""

    def __init__(self) -> None:
        self.accepted: list[tuple[str | None, HeaderList]] = []
        self.denial: list[tuple[Any, ...]] = []
        self.out = bytearray()
        self.reading_paused = False
        self.closed: list[bool] = []  # the await_peer of each close()
        self.aborted = False

    def accept(self, subprotocol: str | None, headers: HeaderList) -> None:
        self.accepted.append((subprotocol, headers))

    def deny(self, status: int, headers: HeaderList, body: bytes, more: bool) -> None:
        self.denial.append(("head", status, headers, body, more))

    def deny_body(self, body: bytes, more: bool) -> None:
        self.denial.append(("body", body, more))

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts: Iterable[bytes]) -> None:
        for part in parts:
            self.out += part

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def close(self, await_peer: bool) -> None:
        self.closed.append(await_peer)

    def abort(self) -> None:
        self.aborted = True

    def frames(self) -> list[SentFrame]:
        """The frames written so far, taken out."""
        frames = parse(bytes(self.out))
        self.out.clear()
        return frames


async def until(predicate: Callable[[], object]) -> None:
    """Let the app run until ``predicate`` holds (bounded)."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), TIMEOUT_S)


@pytest.fixture
async def state() -> AsyncIterator[ServerState]:
    state = ServerState(Config(ws_ping_interval_s=20.0, ws_ping_timeout_s=20.0))
    yield state
    state.stop_clock()
    for task in list(state.tasks):
        task.cancel()


def run(app: Any, state: ServerState, buffered: bytes = b"") -> tuple[Any, FakeCarrier]:
    adapter = WebSocketAdapter(app, dict(SCOPE), None, state.config, state)
    carrier = FakeCarrier()
    typed: WebSocketCarrier = carrier  # the fake fills the whole interface
    adapter.start(typed, buffered)
    return adapter, carrier


def text(payload: bytes) -> bytes:
    return client_frame(0x1, payload)


async def test_the_adapter_runs_a_websocket_over_a_carrier_with_no_http1(
    state: ServerState,
) -> None:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[dict[str, Any]] = loop.create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "chat", "headers": [(b"x-a", b"1")]})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"].upper()})
        ended.set_result(message)

    # A frame sent with the handshake waits for the accept, then is echoed.
    adapter, carrier = run(app, state, buffered=text(b"early"))
    await until(lambda: carrier.out)
    assert carrier.accepted == [("chat", [(b"x-a", b"1")])]
    # Nothing but frames went through write(): the accept is the carrier's to answer.
    assert [(f.opcode, f.payload) for f in carrier.frames()] == [(0x1, b"EARLY")]

    # Frames cut anywhere arrive whole.
    data = text(b"hello")
    adapter.receive_data(data[:3])
    adapter.receive_data(data[3:])
    await until(lambda: carrier.out)
    assert [(f.opcode, f.payload) for f in carrier.frames()] == [(0x1, b"HELLO")]

    # The peer's Close is echoed, then our side of the carrier ends, awaiting the peer's.
    adapter.receive_data(client_frame(0x8, close_payload(1000, b"bye")))
    assert [(f.opcode, f.payload) for f in carrier.frames()] == [(0x8, close_payload(1000))]
    assert carrier.closed == [True]
    assert (await asyncio.wait_for(ended, TIMEOUT_S))["code"] == 1000
    assert adapter.deadline is not None  # the close timeout bounds the wait for the peer
    adapter.connection_lost(None)
    assert adapter not in state.connections
    assert not carrier.aborted


async def test_a_denial_goes_to_the_carrier_which_ends_it(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[dict[str, Any]] = loop.create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})
        ended.set_result(await receive())

    adapter, carrier = run(app, state, buffered=text(b"ignored"))
    assert adapter in state.connections
    assert (await asyncio.wait_for(ended, TIMEOUT_S))["code"] == 1006
    assert carrier.denial == [("head", 401, [], b"who ", True), ("body", b"are you?", False)]
    assert carrier.accepted == [] and carrier.out == b""
    # The carrier ends itself after a complete denial: the adapter is out of the registry
    # and asks nothing more of it (no close, no abort).
    assert adapter not in state.connections
    assert carrier.closed == [] and not carrier.aborted


async def test_close_before_accept_is_a_403_denial(state: ServerState) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close", "code": 1008})

    _, carrier = run(app, state)
    await until(lambda: carrier.denial)
    assert carrier.denial == [("head", 403, [], b"", False)]


async def test_shutdown_during_the_handshake_denies_with_503(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    asked: asyncio.Future[None] = loop.create_future()
    ended: asyncio.Future[dict[str, Any]] = loop.create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        asked.set_result(None)
        ended.set_result(await receive())

    adapter, carrier = run(app, state)
    await asyncio.wait_for(asked, TIMEOUT_S)
    adapter.shutdown()
    content_type = (b"content-type", b"text/plain; charset=utf-8")
    assert carrier.denial == [("head", 503, [content_type], b"Service Unavailable", False)]
    assert (await asyncio.wait_for(ended, TIMEOUT_S))["code"] == 1001


async def test_flow_control_both_ways_through_the_carrier(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    sent: asyncio.Future[None] = loop.create_future()
    go: asyncio.Future[None] = loop.create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await go
        await send({"type": "websocket.send", "bytes": b"x"})
        sent.set_result(None)
        await receive()

    adapter, carrier = run(app, state)
    await until(lambda: carrier.accepted)
    # The carrier's buffer is high: the app's send waits, and reading pauses meanwhile.
    adapter.pause_writing()
    assert carrier.reading_paused
    go.set_result(None)
    await until(lambda: carrier.out)
    assert not sent.done()
    adapter.resume_writing()
    await asyncio.wait_for(sent, TIMEOUT_S)
    assert not carrier.reading_paused

    # The app falls behind: past ws_max_queue messages reading pauses on the carrier.
    for _ in range(state.config.ws_max_queue + 1):
        adapter.receive_data(text(b"m"))
    assert carrier.reading_paused


async def test_a_peer_that_never_answers_close_is_aborted(state: ServerState) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        await receive()

    adapter, carrier = run(app, state)
    await until(lambda: carrier.out)
    assert [f.opcode for f in carrier.frames()] == [0x8]
    # The tick finds the close timeout passed: RST_STREAM over HTTP/2, abort over TCP.
    adapter.on_deadline()
    assert carrier.aborted


async def test_a_keepalive_timeout_closes_without_awaiting_the_peer(state: ServerState) -> None:
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[dict[str, Any]] = loop.create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        ended.set_result(await receive())

    adapter, carrier = run(app, state)
    await until(lambda: carrier.accepted)
    adapter.on_deadline()  # the ping
    assert [f.opcode for f in carrier.frames()] == [0x9]
    adapter.on_deadline()  # no pong within the timeout
    close = carrier.frames()
    assert [f.opcode for f in close] == [0x8]
    assert struct.unpack("!H", close[0].payload[:2])[0] == 1011
    assert carrier.closed == [False]
    assert (await asyncio.wait_for(ended, TIMEOUT_S))["code"] == 1011


def test_the_websocket_package_imports_nothing_of_http1_or_http2() -> None:
    # The seam: HTTP versions implement WebSocketCarrier; the WebSocket side names none
    # (TYPE_CHECKING imports included).
    package = Path(sluiceway.websocket.__file__).parent
    bad = [
        f"{path.name}: {ast.unparse(node)}"
        for path in sorted(package.glob("*.py"))
        for module, node in imported_modules(ast.parse(path.read_text()), "sluiceway.websocket")
        if module.split(".")[:2] in (["sluiceway", "http1"], ["sluiceway", "http2"])
    ]
    assert bad == []


async def test_the_http1_carriers_503_at_shutdown_is_http1s_error_reply() -> None:
    # The adapter's 503 now goes through the carrier's deny(): over HTTP/1.1 it must
    # stay exactly the bytes HTTP/1 answers any request with at shutdown.
    loop = asyncio.get_running_loop()
    asked: asyncio.Future[None] = loop.create_future()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        asked.set_result(None)
        await receive()

    async with serve(app, date_header=False) as srv, raw_connection(srv.port) as conn:
        await conn.send(
            b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.wait_for(asked, TIMEOUT_S)
        for live in list(srv.state.connections):
            live.shutdown()
        raw = await conn.read_until_close()
        assert raw == wire.error_response(503, srv.state.default_headers)
