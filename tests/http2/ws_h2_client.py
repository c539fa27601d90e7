"""An RFC 8441 client for tests: the ``h2`` library over a raw socket, WebSocket frames by hand.

``async with h2_client(port) as client:`` opens a connection (cleartext with
prior knowledge, or TLS with ALPN h2), and waits for the server's SETTINGS
(extended CONNECT needs SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 first, RFC 8441
§3). ``client.open(path, ...)`` sends an extended CONNECT; ``response``,
``send_frame``, ``recv_frame``, ``end``, ``reset`` and ``ack`` drive one
stream. Everything the server sends is read by a background task that feeds
``h2`` and records it per stream; every wait (``until``) is bounded and
wakes on the server's next frame or the client's own send, never on a timer.

Flow control is the test's to steer: with ``auto_ack=False`` the client
opens its receive windows only when the test calls ``ack``; ``send`` waits
for the server's WINDOW_UPDATEs as a real client must.

WebSocket frames are built by ``tests/websocket/codec_helpers.client_frame``
(masked, by a byte loop) and parsed here by hand: nothing of sluiceway's own
codec reads its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from tests.support import TIMEOUT_S
from tests.websocket.codec_helpers import SentFrame, client_frame, close_payload

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


@dataclass
class Stream:
    """What the server sent on one stream."""

    headers: list[tuple[bytes, bytes]] | None = None
    data: bytearray = field(default_factory=bytearray)
    received: int = 0  # DATA payload bytes, all told
    unacked: int = 0  # flow-controlled bytes not yet acknowledged (auto_ack=False)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        assert self.headers is not None
        return int(dict(self.headers)[b":status"])

    def header(self, name: bytes) -> bytes | None:
        assert self.headers is not None
        return dict(self.headers).get(name)


class H2WebSocketClient:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, auto_ack: bool
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.auto_ack = auto_ack
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.streams: dict[int, Stream] = {}
        self.settings_received = False
        self.goaway: tuple[int, int] | None = None  # (error code, last stream id)
        self.closed = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- the connection --------------------------------------------------------------

    def start(self, initial_window: int | None) -> None:
        if initial_window is not None:
            # In the preface's SETTINGS (update_settings before it would send a frame first).
            self.conn.local_settings = h2.settings.Settings(
                client=True,
                initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: initial_window},
            )
        self.conn.initiate_connection()
        self.flush()
        self._task = asyncio.ensure_future(self._read())

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.transport.is_closing():
            self.writer.write(data)
        self._changed.set()  # our own sends change what ``until`` may be waiting for

    async def _read(self) -> None:
        buffer = bytearray()
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                buffer += data
                self._handle(self._receive(buffer))
                self.flush()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            self._changed.set()

    def _receive(self, buffer: bytearray) -> list[Any]:
        """Feed ``h2`` the whole frames in ``buffer``, all but GOAWAY.

        ``h2`` takes any GOAWAY as the end of the connection and refuses to
        send after it; a browser, as RFC 9113 §6.8 means, finishes the streams
        the GOAWAY leaves open. This client does the same: it records the
        GOAWAY and goes on with the open streams.
        """
        events: list[Any] = []
        while len(buffer) >= 9:
            size = int.from_bytes(buffer[:3], "big")
            if len(buffer) < 9 + size:
                break
            frame, buffer[: 9 + size] = bytes(buffer[: 9 + size]), b""
            if frame[3] == 0x7:  # GOAWAY
                last_stream_id, code = struct.unpack_from("!LL", frame, 9)
                self.goaway = (code, last_stream_id & 0x7FFFFFFF)
            else:
                events += self.conn.receive_data(frame)
        return events

    def _handle(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settings_received = True
            elif isinstance(event, h2.events.ResponseReceived):
                self.streams[event.stream_id].headers = list(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                stream = self.streams[event.stream_id]
                stream.data += event.data
                stream.received += len(event.data)
                if self.auto_ack:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                else:
                    stream.unacked += event.flow_controlled_length
            elif isinstance(event, h2.events.StreamEnded):
                self.streams[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                self.streams[event.stream_id].reset = event.error_code

    async def until(self, condition: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
        """Wait until ``condition()`` is truthy (re-checked after every read); return it."""

        async def wait() -> Any:
            while True:
                self._changed.clear()
                value = condition()
                if value:
                    return value
                if self.closed:
                    raise AssertionError("the server closed the connection")
                await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(OSError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT_S)

    # -- one stream ------------------------------------------------------------------

    def open(
        self,
        path: bytes = b"/",
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        protocol: bytes = b"websocket",
        scheme: bytes = b"http",
        authority: bytes = b"example.test",
        version: bytes = b"13",
        end_stream: bool = False,
    ) -> int:
        """Send an extended CONNECT (RFC 8441 §4); returns its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", b"CONNECT"),
            (b":protocol", protocol),
            (b":scheme", scheme),
            (b":path", path),
            (b":authority", authority),
            (b"sec-websocket-version", version),
            *(headers or []),
        ]
        self.streams[stream_id] = Stream()
        self.conn.send_headers(stream_id, fields, end_stream=end_stream)
        self.flush()
        return stream_id

    def request(self, path: bytes = b"/") -> int:
        """A plain GET on a new stream."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"example.test"),
        ]
        self.streams[stream_id] = Stream()
        self.conn.send_headers(stream_id, fields, end_stream=True)
        self.flush()
        return stream_id

    async def response(self, stream_id: int) -> Stream:
        stream = self.streams[stream_id]
        await self.until(lambda: stream.headers is not None or stream.reset is not None)
        return stream

    async def body(self, stream_id: int) -> bytes:
        """The whole body of a response that ends the stream."""
        stream = self.streams[stream_id]
        await self.until(lambda: stream.ended or stream.reset is not None)
        return bytes(stream.data)

    async def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        """Send ``data`` as the windows allow, waiting for the server's WINDOW_UPDATEs."""
        view = memoryview(data)
        while view:
            window = await self.until(
                lambda: (
                    self.conn.local_flow_control_window(stream_id)
                    if self.streams[stream_id].reset is None
                    else -1
                )
            )
            if window < 0:
                raise AssertionError(f"stream {stream_id} was reset while sending")
            n = min(window, self.conn.max_outbound_frame_size, len(view))
            self.conn.send_data(stream_id, bytes(view[:n]), end_stream=end and n == len(view))
            view = view[n:]
            self.flush()
        if end and not data:
            self.end(stream_id)

    async def send_frame(
        self, stream_id: int, opcode: int, payload: bytes = b"", *, rsv: int = 0, fin: bool = True
    ) -> None:
        await self.send(stream_id, client_frame(opcode, payload, rsv=rsv, fin=fin))

    async def send_close(self, stream_id: int, code: int = 1000, reason: bytes = b"") -> None:
        await self.send_frame(stream_id, CLOSE, close_payload(code, reason))

    def end(self, stream_id: int) -> None:
        self.conn.end_stream(stream_id)
        self.flush()

    def reset(self, stream_id: int, code: int = 0x8) -> None:
        self.conn.reset_stream(stream_id, code)
        self.flush()

    def ack(self, stream_id: int, n: int | None = None) -> None:
        """Open the receive windows by ``n`` bytes (all that is unacknowledged by default)."""
        stream = self.streams[stream_id]
        n = stream.unacked if n is None else min(n, stream.unacked)
        if n:
            stream.unacked -= n
            self.conn.acknowledge_received_data(n, stream_id)
            self.flush()

    async def recv_frame(self, stream_id: int, timeout: float = TIMEOUT_S) -> SentFrame:
        """The next whole WebSocket frame the server sent on ``stream_id``."""
        stream = self.streams[stream_id]

        def parsed() -> SentFrame | None:
            frame, used = parse_frame(stream.data)
            if frame is not None:
                del stream.data[:used]
            return frame

        frame = parsed()
        if frame is not None:
            return frame
        result: SentFrame = await self.until(
            lambda: parsed() or self._gone(stream, stream_id), timeout
        )
        return result

    def _gone(self, stream: Stream, stream_id: int) -> bool:
        if stream.reset is not None or (stream.ended and not stream.data):
            raise AssertionError(f"stream {stream_id} ended with no frame (reset={stream.reset})")
        return False


@contextlib.asynccontextmanager
async def h2_client(
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    auto_ack: bool = True,
    initial_window: int | None = None,
) -> AsyncIterator[H2WebSocketClient]:
    if ssl_context is not None:
        ssl_context.set_alpn_protocols(["h2"])
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=ssl_context,
            server_hostname="127.0.0.1" if ssl_context is not None else None,
        ),
        TIMEOUT_S,
    )
    client = H2WebSocketClient(reader, writer, auto_ack)
    client.start(initial_window)
    try:
        await client.until(lambda: client.settings_received)
        yield client
    finally:
        await client.close()


def parse_frame(data: bytearray) -> tuple[SentFrame | None, int]:
    """One unmasked server frame from the front of ``data``, or (None, 0) if it is not all there."""
    if len(data) < 2:
        return None, 0
    b0, b1 = data[0], data[1]
    assert not b1 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        if len(data) < 4:
            return None, 0
        (n,) = struct.unpack_from("!H", data, 2)
        pos = 4
    elif n == 127:
        if len(data) < 10:
            return None, 0
        (n,) = struct.unpack_from("!Q", data, 2)
        pos = 10
    if len(data) < pos + n:
        return None, 0
    frame = SentFrame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, bytes(data[pos : pos + n]))
    return frame, pos + n


def close_code(frame: SentFrame) -> int:
    assert frame.opcode == CLOSE, frame
    code: int = struct.unpack("!H", frame.payload[:2])[0]
    return code


def deflate_message(payload: bytes, window_bits: int = 15) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1: the trailing 00 00 ff ff removed)."""
    compressor = zlib.compressobj(wbits=-window_bits)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def inflate_message(payload: bytes) -> bytes:
    return zlib.decompressobj(wbits=-15).decompress(payload + b"\x00\x00\xff\xff")
