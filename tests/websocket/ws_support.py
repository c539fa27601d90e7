"""Raw-socket WebSocket helpers for the server tests: exact bytes out, frames back.

The frames are built here by hand (not with sluiceway's codec) so a codec bug
cannot hide itself in the tests. Every read is bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tests.support import TIMEOUT_S, RawConnection, Response, raw_connection

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(hashlib.sha1(KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())


def upgrade_request(
    path: bytes = b"/", extra: bytes = b"", *, version: bytes = b"13", key: bytes = KEY
) -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n"
    )


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    mask: bytes | None = b"\x12\x34\x56\x78",
) -> bytes:
    """A client frame (masked unless ``mask`` is None), RFC 6455 §5.2."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, mask_bit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, n)
    if mask is None:
        return head + payload
    if mask == b"\0\0\0\0":  # XOR with zero: big payloads without a per-byte loop
        return head + mask + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return frame(0x8, struct.pack("!H", code) + reason)


@dataclass
class Frame:
    opcode: int
    payload: bytes
    fin: bool
    rsv1: bool

    @property
    def close_code(self) -> int | None:
        if self.opcode != 0x8 or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


async def read_frame(conn: RawConnection, timeout: float = TIMEOUT_S) -> Frame:
    """One server frame; servers never mask (RFC 6455 §5.1)."""

    async def read() -> Frame:
        b0, b1 = await conn.reader.readexactly(2)
        assert not b1 & 0x80, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", await conn.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", await conn.reader.readexactly(8))
        payload = await conn.reader.readexactly(n)
        return Frame(b0 & 0x0F, payload, bool(b0 & 0x80), bool(b0 & 0x40))

    return await asyncio.wait_for(read(), timeout)


async def read_until_close_frame(conn: RawConnection, timeout: float = TIMEOUT_S) -> Frame:
    """Skip data and ping frames until the server's Close frame."""
    while True:
        got = await read_frame(conn, timeout)
        if got.opcode == 0x8:
            return got


@contextlib.asynccontextmanager
async def raw_websocket(
    port: int, path: bytes = b"/", extra: bytes = b""
) -> AsyncIterator[tuple[RawConnection, Response]]:
    """A raw connection past a successful handshake (asserts the 101)."""
    async with raw_connection(port) as conn:
        await conn.send(upgrade_request(path, extra))
        response = await conn.read_response(head=True)
        assert response.status == 101, response.raw
        yield conn, response
