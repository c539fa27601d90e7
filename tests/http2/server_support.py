"""Clients for the end-to-end HTTP/2 tests: a real ``Server`` on 127.0.0.1:0, real peers.

``H2Client`` is the ``h2`` library's client-side ``H2Connection`` over an
asyncio socket (cleartext with prior knowledge, or TLS with ALPN "h2"): the
reference implementation reads what the server sends, and it keeps its own
flow-control windows, so a test can hold its receive window shut or look at
its outbound window. What arrived is kept per stream (``Exchange``).

``FrameClient`` sends frames byte for byte (``h2_support.frame`` and an
``hpack`` encoder), for the attacks the ``h2`` library refuses to send, and
parses what comes back with ``h2_support.Client``'s hyperframe/hpack reader.

Every wait is bounded (``TIMEOUT_S``) and waits on bytes or server state,
never on a sleep. ``h2spec_binary`` finds h2spec for the conformance tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hyperframe.frame as hf
import pytest

from sluiceway.http2.protocol import H2Protocol
from sluiceway.server.runner import Server
from tests.server.serving import running

from .h2_support import PING, PREFACE, SETTINGS, Client, frame

TIMEOUT_S = 5.0
READ_SIZE = 1 << 16
REPO = Path(__file__).resolve().parents[2]


def h2spec_binary() -> Path:
    """Where h2spec is: ``$H2SPEC``, else the copy in ``tests/tools/h2spec/``.

    No registry CI reaches has h2spec (Debian has no package; building it
    needs its source from GitHub), so the repository carries the binary
    (README there). A missing one fails the test: a skip would let CI pass
    without the conformance run.
    """
    named = os.environ.get("H2SPEC")
    path = Path(named) if named else REPO / "tests" / "tools" / "h2spec" / "h2spec"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"h2spec not found at {path}: the conformance tests need it"
            " (tests/tools/h2spec/README.md; or set H2SPEC to another build)",
            pytrace=False,
        )
    return path


H2SPEC_SUMMARY = re.compile(r"(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed")


async def run_h2spec(port: int, *options: str) -> tuple[tuple[int, int, int, int], str]:
    """Run h2spec against 127.0.0.1:``port``; (total, passed, skipped, failed) and its output."""
    process = await asyncio.create_subprocess_exec(
        str(h2spec_binary()),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-o",
        "2",  # seconds per case at most; a passing run takes well under one in all
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 50)
    text = output.decode("utf-8", "replace")
    summary = H2SPEC_SUMMARY.search(text)
    assert summary is not None, text[-2000:]
    total, passed, skipped, failed = map(int, summary.groups())
    return (total, passed, skipped, failed), text[text.find("Failures:") :]


def serving(app: Any, **options: Any) -> contextlib.AbstractAsyncContextManager[Server]:
    """``tests.server.serving.running``: the real ``Server`` on 127.0.0.1:0; lifespan off
    unless asked, so a test app needs no lifespan branch."""
    options.setdefault("lifespan", "off")
    return running(app, **options)


def h2_connections(server: Server) -> list[H2Protocol]:
    """The server's live HTTP/2 connections (the HTTP/1.1 ones left out)."""
    return [c for c in server.state.connections if isinstance(c, H2Protocol)]


async def server_side(server: Server, client: H2Client | None = None) -> H2Protocol:
    """The server's side of ``client``'s connection (found by its port), or of its only one.

    Waits for the accept and the hand-over from HTTP/1.1, which run in later
    loop passes than the client's connect.
    """
    port = None if client is None else client.writer.get_extra_info("sockname")[1]

    def match() -> list[H2Protocol]:
        found = h2_connections(server)
        if port is None:
            return found if len(found) == 1 else []
        return [c for c in found if c.info.client[1] == port]

    async def wait() -> H2Protocol:
        while not match():
            await asyncio.sleep(0)
        return match()[0]

    return await asyncio.wait_for(wait(), TIMEOUT_S)


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Poll ``condition`` once per loop pass until it holds (server state, not bytes)."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout)


def start(status: int = 200, headers: Any = (), **extra: Any) -> dict[str, Any]:
    """An ``http.response.start`` message."""
    return {"type": "http.response.start", "status": status, "headers": list(headers), **extra}


def body(data: bytes = b"", more: bool = False) -> dict[str, Any]:
    """An ``http.response.body`` message."""
    return {"type": "http.response.body", "body": data, "more_body": more}


def request_fields(
    path: bytes = b"/", method: bytes = b"GET", scheme: bytes = b"http"
) -> list[tuple[bytes, bytes]]:
    """A request's pseudo-header fields, for ``FrameClient.headers``."""
    return [
        (b":method", method),
        (b":scheme", scheme),
        (b":authority", b"127.0.0.1"),
        (b":path", path),
    ]


def alpn_context(context: ssl.SSLContext, protocols: list[str]) -> ssl.SSLContext:
    context.set_alpn_protocols(protocols)
    return context


async def _read(reader: asyncio.StreamReader) -> bytes:
    """One read; ``b""`` once the server closed or reset the connection."""
    try:
        return await reader.read(READ_SIZE)
    except (ConnectionError, ssl.SSLError):
        return b""


async def alpn_selected(port: int, context: ssl.SSLContext, offered: list[str]) -> str | None:
    """The protocol the server picks by ALPN when the client offers ``offered``."""
    _, writer = await _open(port, alpn_context(context, offered))
    try:
        protocol: str | None = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        return protocol
    finally:
        writer.close()


async def _open(
    port: int, ssl_context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_context, server_hostname="127.0.0.1" if ssl_context else None
        ),
        TIMEOUT_S,
    )


@dataclass
class Exchange:
    """What one stream received: every HEADERS block (1xx first), DATA, trailers, the end."""

    heads: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] | None = None
    ended: bool = False
    reset: int | None = None  # the RST_STREAM error code
    data_frames: int = 0

    @property
    def done(self) -> bool:
        return self.ended or self.reset is not None

    @property
    def status(self) -> int:
        return int(dict(self.heads[-1])[b":status"])

    def header(self, name: bytes) -> bytes | None:
        return dict(self.heads[-1]).get(name)


class H2Client:
    """The ``h2`` library's client over one socket; see the module docstring.

    One task reads the socket and applies what arrives (``_pump``); tests
    wait on conditions over that state (``wait``). ``auto_ack``: acknowledge
    received DATA at once (a normal client); off, the receive windows stay
    as the server's DATA left them (a client that never opens them).
    ``pause_reading`` stops reading the socket (a client that never reads).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        auto_ack: bool = True,
        settings: dict[int, int] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.auto_ack = auto_ack
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.streams: dict[int, Exchange] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False  # the server closed the socket
        self._pings = 0
        self._acked = 0
        self._changed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reading.set()
        self._pump_task: asyncio.Task[None] | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        port: int,
        ssl_context: ssl.SSLContext | None = None,
        *,
        auto_ack: bool = True,
        settings: dict[int, int] | None = None,
    ) -> AsyncIterator[H2Client]:
        if ssl_context is not None:
            alpn_context(ssl_context, ["h2"])
        reader, writer = await _open(port, ssl_context)
        client = cls(reader, writer, auto_ack=auto_ack, settings=settings)
        client.conn.initiate_connection()
        client._pump_task = asyncio.ensure_future(client._pump())
        try:
            await client.flush()
            yield client
        finally:
            client._pump_task.cancel()
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), TIMEOUT_S)

    @property
    def ssl_object(self) -> Any:
        return self.writer.get_extra_info("ssl_object")

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(self.writer.drain(), TIMEOUT_S)

    async def request(
        self,
        method: bytes = b"GET",
        path: bytes = b"/",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        *,
        end: bool = True,
        authority: bytes = b"127.0.0.1",
    ) -> int:
        """Open a stream; send ``body`` (as the windows allow: see ``send_body``) if given."""
        scheme = b"https" if self.ssl_object is not None else b"http"
        stream_id = self.conn.get_next_available_stream_id()
        fields = [(b":method", method), (b":scheme", scheme), (b":authority", authority)]
        fields += [(b":path", path), *(headers or [])]
        self.streams[stream_id] = Exchange()
        self.conn.send_headers(stream_id, fields, end_stream=end and body is None)
        await self.flush()
        if body is not None:
            await self.send_body(stream_id, body, end=end)
        return stream_id

    async def send_body(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        """All of ``body``, each frame as the windows allow (waits for WINDOW_UPDATE)."""
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                await self.wait(lambda: self.conn.local_flow_control_window(stream_id) > 0, 10)
                continue
            self.conn.send_data(stream_id, bytes(view[:window]))
            view = view[window:]
            await self.flush()
        if end:
            self.conn.end_stream(stream_id)
            await self.flush()

    async def get(self, path: bytes = b"/", **kwargs: Any) -> Exchange:
        """One whole GET and its whole response."""
        stream_id = await self.request(b"GET", path, **kwargs)
        return await self.response(stream_id)

    async def response(self, stream_id: int, timeout: float = TIMEOUT_S) -> Exchange:
        exchange = self.streams[stream_id]
        await self.wait(lambda: exchange.done, timeout)
        return exchange

    async def reset(self, stream_id: int, code: int = 0x8) -> None:
        self.conn.reset_stream(stream_id, code)
        await self.flush()

    async def ping(self) -> None:
        """A round trip: everything the server sent before its PING ACK has been read.

        The server answers frames in order and writes in order, so what it
        owed for the frames sent before the PING (a WINDOW_UPDATE, a
        response already queued) arrives before the ACK.
        """
        self._pings += 1
        wanted = self._pings
        self.conn.ping(b"%08d" % wanted)
        await self.flush()
        await self.wait(lambda: self._acked >= wanted)

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    async def wait(self, condition: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
        """Wait until ``condition()`` holds over what was read.

        Raises:
            ConnectionError: the server closed the connection first.
            TimeoutError: ``timeout`` passed first.
        """

        async def loop() -> None:
            while not condition():
                pump = self._pump_task
                if pump is not None and pump.done():
                    pump.result()  # the h2 library refused what it read: raise that
                if self.closed:
                    raise ConnectionError(f"the server closed the connection: {self.terminated}")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_closed(self, timeout: float = TIMEOUT_S) -> None:
        """Wait until the server closes the socket."""
        await self.wait(lambda: self.closed, timeout)

    async def _pump(self) -> None:
        try:
            await self._read_forever()
        finally:
            self._changed.set()  # a waiter sees the end, or the exception

    async def _read_forever(self) -> None:
        while not self.closed:
            await self._reading.wait()
            data = await _read(self.reader)
            if not data:
                self.closed = True
            else:
                for event in self.conn.receive_data(data):
                    self._apply(event)
                await self.flush()  # our ACKs and WINDOW_UPDATEs
            self._changed.set()

    def _apply(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        exchange = self.streams.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
        elif isinstance(event, h2.events.PingAckReceived):
            self._acked = int(event.ping_data)
        elif exchange is None:
            return
        elif isinstance(
            event, (h2.events.ResponseReceived, h2.events.InformationalResponseReceived)
        ):
            exchange.heads.append(list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            exchange.body += event.data
            exchange.data_frames += 1
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            exchange.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            exchange.ended = True
        elif isinstance(event, h2.events.StreamReset):
            exchange.reset = event.error_code


class _Inbox:
    """Stands in for ``h2_support.Client``'s server: hands it the whole frames read so far."""

    def __init__(self) -> None:
        self.buffer = b""

    def data_to_send(self) -> bytes:
        data, end = self.buffer, 0
        while len(data) - end >= 9:
            length = int.from_bytes(data[end : end + 3], "big")
            if len(data) - end - 9 < length:
                break
            end += 9 + length
        self.buffer = data[end:]
        return data[:end]


class FrameClient:
    """Exact frames over a socket; what the server sends is parsed by ``h2_support.Client``.

    ``parser.sent`` holds every frame received, with decoded fields for
    HEADERS; ``parser.goaway()``, ``.resets()``, ``.responses()``,
    ``.body(stream_id)`` read them. ``headers(...)``/``block(...)`` encode
    with the parser's own hpack encoder, so the dynamic tables stay in step.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = Client()
        self._inbox = _Inbox()
        self.parser.server = self._inbox  # type: ignore[assignment]  # read() needs data_to_send
        self.closed = False
        self.headers = self.parser.headers
        self.block = self.parser.block

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, port: int, ssl_context: ssl.SSLContext | None = None, settings: bytes = b""
    ) -> AsyncIterator[FrameClient]:
        """Connect and send the preface, our SETTINGS and the ACK of the server's."""
        if ssl_context is not None:
            alpn_context(ssl_context, ["h2"])
        reader, writer = await _open(port, ssl_context)
        client = cls(reader, writer)
        try:
            await client.send(PREFACE + frame(SETTINGS, 0, 0, settings) + frame(SETTINGS, 1, 0))
            yield client
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await asyncio.wait_for(writer.wait_closed(), TIMEOUT_S)

    async def send(self, data: bytes) -> None:
        """Write ``data``; a server that already closed is not an error here."""
        if self.writer.is_closing():
            return
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(self.writer.drain(), TIMEOUT_S)

    async def read(self) -> None:
        data = await _read(self.reader)
        if not data:
            self.closed = True
            return
        self._inbox.buffer += data
        self.parser.read()

    async def wait(self, condition: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
        """Read until ``condition()`` holds or the server closes (then it must hold)."""

        async def loop() -> None:
            while not condition() and not self.closed:
                await self.read()

        await asyncio.wait_for(loop(), timeout)
        assert condition(), self.parser.sent[-5:]

    async def wait_closed(self, timeout: float = TIMEOUT_S) -> None:
        await self.wait(lambda: self.closed, timeout)

    async def goaway(self, timeout: float = TIMEOUT_S) -> tuple[int, int]:
        """Wait for the server's GOAWAY and its close; (last_stream_id, error_code)."""
        await self.wait_closed(timeout)
        return self.parser.goaway()

    async def reset_of(self, stream_id: int, timeout: float = TIMEOUT_S) -> int:
        """Wait for RST_STREAM on ``stream_id``; its error code."""
        await self.wait(lambda: stream_id in self.parser.resets(), timeout)
        return self.parser.resets()[stream_id]

    async def ping(self) -> None:
        """A round trip (see ``H2Client.ping``)."""
        before = len(self.parser.sent)
        await self.send(frame(PING, 0, 0, b"barrier!"))

        def acked() -> bool:
            return any(
                isinstance(s.frame, hf.PingFrame) and "ACK" in s.frame.flags
                for s in self.parser.sent[before:]
            )

        await self.wait(acked)


@contextlib.asynccontextmanager
async def under_attack(
    app: Any, **options: Any
) -> AsyncIterator[tuple[Server, H2Client, FrameClient]]:
    """The server, a connection opened beside the attack (before it), and the attacker's."""
    async with (
        serving(app, **options) as server,
        H2Client.connect(server.port) as beside,
        FrameClient.connect(server.port) as attacker,
    ):
        yield server, beside, attacker
