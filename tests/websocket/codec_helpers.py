"""Helpers for the sans-I/O codec tests: an independent frame builder/parser.

The builder masks with a byte loop and the parser decodes headers by hand, so a
bug in ``sluiceway.websocket.frames`` cannot hide itself in both directions.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sluiceway.websocket.connection import (
    Connection,
    ConnectionFailed,
    State,
)

MASK = b"\x37\xfa\x21\x3d"


def reference_mask(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
) -> bytes:
    """A frame as a client sends it; ``length`` overrides the declared length."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((b0, mask_bit | n))
    elif n < 65536:
        head = bytes((b0, mask_bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((b0, mask_bit | 127)) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    return head + mask + reference_mask(payload, mask)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass
class SentFrame:
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes


def parse_server_frames(data: bytes) -> list[SentFrame]:
    """Parse unmasked server frames; fails the test on anything else."""
    frames = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "server frames must not be masked (RFC 6455 §5.1)"
        assert not b0 & 0x30, "server set RSV2/RSV3"
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            assert n >= 126, "length not minimally encoded"
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            assert n >= 65536, "length not minimally encoded"
            pos += 8
        frames.append(SentFrame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, data[pos : pos + n]))
        pos += n
        assert pos <= len(data), "truncated frame"
    return frames


def sent_frames(conn: Connection) -> list[SentFrame]:
    return parse_server_frames(b"".join(conn.data_to_send()))


def assert_frame_sent(conn: Connection, opcode: int, payload: bytes) -> None:
    frames = sent_frames(conn)
    assert [(f.opcode, f.payload) for f in frames] == [(opcode, payload)], frames


def assert_failed(conn: Connection, code: int) -> None:
    """The connection failed with ``code``: one Close frame out, CLOSED, event."""
    frames = sent_frames(conn)
    assert len(frames) == 1 and frames[0].opcode == 0x8, frames
    assert struct.unpack("!H", frames[0].payload[:2])[0] == code
    events = conn.events_received()
    assert events and isinstance(events[-1], ConnectionFailed), events
    assert events[-1].code == code
    assert conn.state is State.CLOSED
    assert conn.close_transport
    assert conn.close_code == code


def feed(conn: Connection, data: bytes, chunk: int | None = None) -> None:
    if chunk is None:
        conn.receive_data(data)
        return
    for i in range(0, len(data), chunk):
        conn.receive_data(data[i : i + chunk])
