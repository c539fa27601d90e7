"""Test helpers for the sans-I/O HTTP/2 connection: a raw-frame client and frame assertions.

``Client`` drives an ``H2Connection`` with frames it builds itself (``frame``:
exact bytes, so malformed frames are easy) and header blocks from the
``hpack`` library, an encoder independent of ours. What the server sends is
parsed by ``hyperframe`` and its header blocks decoded by ``hpack``'s decoder:
the reference peer, not our own code, reads our output.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import hpack
import hyperframe.frame as hf

from sluiceway.http2 import events as ev
from sluiceway.http2.connection import H2Config, H2Connection

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE = 0, 1, 2, 3, 4, 5
PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 6, 7, 8, 9
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB

GET = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"example.com"),
    (b":path", b"/"),
]


def post(length: int | None = None) -> list[tuple[bytes, bytes]]:
    fields = [(b":method", b"POST"), *GET[1:]]
    if length is not None:
        fields.append((b"content-length", b"%d" % length))
    return fields


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, byte for byte (RFC 9113 §4.1), whatever its validity."""
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, frame_type, flags, stream_id) + payload


def settings_payload(**values: int) -> bytes:
    ids = {
        "header_table_size": 1,
        "enable_push": 2,
        "max_concurrent_streams": 3,
        "initial_window_size": 4,
        "max_frame_size": 5,
        "max_header_list_size": 6,
    }
    return b"".join(struct.pack(">HL", ids[name], value) for name, value in values.items())


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment))


def rst_stream(stream_id: int, code: int) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">L", code))


def priority(stream_id: int, depends_on: int, weight: int = 15) -> bytes:
    return frame(PRIORITY, 0, stream_id, struct.pack(">LB", depends_on, weight))


def ping(payload: bytes = b"12345678", flags: int = 0) -> bytes:
    return frame(PING, flags, 0, payload)


@dataclass
class Sent:
    """One frame the server sent; ``fields`` for HEADERS/PUSH_PROMISE (decoded by hpack)."""

    frame: Any
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def type(self) -> str:
        return str(self.frame.type)

    def __repr__(self) -> str:
        return f"Sent({self.frame!r}, {self.fields!r})"


class Client:
    """The test's side of one connection."""

    def __init__(self, config: H2Config | None = None, **kwargs: Any) -> None:
        self.server = H2Connection(config or H2Config(**kwargs))
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self._block: list[bytes] = []
        self._block_frame: Any = None
        self.sent: list[Sent] = []  # everything the server sent, in order

    # -- driving the server --------------------------------------------------------------

    def start(self, settings: bytes = b"", ack: bool = True) -> list[ev.Event]:
        """initiate(), the client preface with ``settings``, and the ACK of our SETTINGS."""
        self.server.initiate()
        events = self.send(PREFACE + frame(SETTINGS, 0, 0, settings))
        if ack:
            events += self.send(frame(SETTINGS, ACK, 0))
        return events

    def send(self, data: bytes) -> list[ev.Event]:
        events = self.server.receive_data(data)
        self.read()
        return events

    def block(self, fields: list[tuple[bytes, bytes]]) -> bytes:
        return self.encoder.encode(fields)

    def headers(
        self, stream_id: int, fields: list[tuple[bytes, bytes]], end_stream: bool = True
    ) -> bytes:
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream_id, self.block(fields))

    def request(
        self, stream_id: int, fields: list[tuple[bytes, bytes]] = GET, end_stream: bool = True
    ) -> list[ev.Event]:
        return self.send(self.headers(stream_id, fields, end_stream))

    def data(self, stream_id: int, payload: bytes, end_stream: bool = False) -> list[ev.Event]:
        return self.send(frame(DATA, END_STREAM if end_stream else 0, stream_id, payload))

    # -- what the server sent ------------------------------------------------------------

    def read(self) -> list[Sent]:
        """Parse everything the server queued; also kept in ``sent``."""
        data = self.server.data_to_send()
        out: list[Sent] = []
        if data.startswith(PREFACE):
            raise AssertionError("the server sent a client preface")
        pos = 0
        while pos < len(data):
            f, length = hf.Frame.parse_frame_header(memoryview(data[pos : pos + 9]))
            f.parse_body(memoryview(data[pos + 9 : pos + 9 + length]))
            pos += 9 + length
            sent = Sent(f)
            if isinstance(f, (hf.HeadersFrame, hf.PushPromiseFrame)):
                self._block = [f.data]
                self._block_frame = sent
            elif isinstance(f, hf.ContinuationFrame):
                self._block.append(f.data)
            block_frame = (hf.HeadersFrame, hf.PushPromiseFrame, hf.ContinuationFrame)
            if isinstance(f, block_frame) and "END_HEADERS" in f.flags:
                owner = self._block_frame
                owner.fields = [
                    (bytes(n), bytes(v))
                    for n, v in self.decoder.decode(b"".join(self._block), raw=True)
                ]
            out.append(sent)
        assert pos == len(data), "a partial frame in data_to_send()"
        self.sent += out
        return out

    def frames(self, kind: type) -> list[Any]:
        return [s.frame for s in self.sent if isinstance(s.frame, kind)]

    def goaway(self) -> tuple[int, int]:
        """The (last_stream_id, error_code) of the one GOAWAY sent."""
        frames = self.frames(hf.GoAwayFrame)
        assert len(frames) == 1, f"expected one GOAWAY, got {self.sent}"
        return frames[0].last_stream_id, frames[0].error_code

    def resets(self) -> dict[int, int]:
        """stream id -> error code of every RST_STREAM sent."""
        return {f.stream_id: f.error_code for f in self.frames(hf.RstStreamFrame)}

    def responses(self) -> dict[int, list[list[tuple[bytes, bytes]]]]:
        """stream id -> the field lists of its HEADERS frames, in order."""
        out: dict[int, list[list[tuple[bytes, bytes]]]] = {}
        for s in self.sent:
            if isinstance(s.frame, hf.HeadersFrame):
                out.setdefault(s.frame.stream_id, []).append(s.fields)
        return out

    def body(self, stream_id: int) -> bytes:
        return b"".join(f.data for f in self.frames(hf.DataFrame) if f.stream_id == stream_id)


def assert_connection_error(client: Client, events: list[ev.Event], code: int) -> None:
    """GOAWAY with ``code`` went out, ``ConnectionTerminated`` came, the connection is closed."""
    assert client.goaway()[1] == code, client.sent
    terminated = [e for e in events if isinstance(e, ev.ConnectionTerminated)]
    assert len(terminated) == 1 and terminated[0].error_code == code, events
    assert client.server.receive_data(ping()) == []  # reads nothing more
    assert client.server.data_to_send() == b""


def assert_stream_error(client: Client, stream_id: int, code: int) -> None:
    """RST_STREAM with ``code`` on ``stream_id`` went out, and no GOAWAY."""
    assert client.resets().get(stream_id) == code, client.sent
    assert not client.frames(hf.GoAwayFrame), client.sent
