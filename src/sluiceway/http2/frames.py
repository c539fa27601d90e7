"""HTTP/2 frame format (RFC 9113 §4, §6): codes, the 9-byte frame header, and frame builders.

This module knows the bytes of one frame and nothing about a connection: the
frame types, flags, error codes and settings identifiers; parsing a frame
header at an offset of a buffer; and building every frame a server sends.
The rules that need connection or stream state live in ``connection.py``.

It also holds the two exceptions the connection raises internally and maps
to the wire in one place: ``H2ConnectionError`` (GOAWAY) and
``H2StreamError`` (RST_STREAM). Each carries its RFC 9113 §7 error code.

Imports only the standard library and ``sluiceway.errors``.

Invariants: every function is pure; nothing copies a receive buffer (headers
are read with ``struct.unpack_from`` at offsets); builders return ``bytes``
ready to join into one write.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from typing import Final

from sluiceway.errors import RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_WINDOW_SIZE",
    "FLAG_ACK",
    "FLAG_END_HEADERS",
    "FLAG_END_STREAM",
    "FLAG_PADDED",
    "FLAG_PRIORITY",
    "FRAME_HEADER_SIZE",
    "MAX_FRAME_SIZE_LIMIT",
    "MAX_WINDOW_SIZE",
    "PREFACE",
    "ErrorCode",
    "FrameType",
    "H2ConnectionError",
    "H2StreamError",
    "SettingCode",
    "build_data",
    "build_field_block",
    "build_goaway",
    "build_ping_ack",
    "build_rst_stream",
    "build_settings",
    "build_settings_ack",
    "build_window_update",
    "data_without_padding",
    "decode_http2_settings",
    "frame_header",
    "headers_fragment",
    "parse_frame_header",
    "parse_settings",
]


class FrameType(enum.IntEnum):
    """Frame types, RFC 9113 §6 and §11.2."""

    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9


class ErrorCode(enum.IntEnum):
    """Error codes for RST_STREAM and GOAWAY, RFC 9113 §7."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


class SettingCode(enum.IntEnum):
    """SETTINGS identifiers: RFC 9113 §6.5.2, RFC 8441 §3, RFC 9218 §2.1."""

    HEADER_TABLE_SIZE = 0x1
    ENABLE_PUSH = 0x2
    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6
    ENABLE_CONNECT_PROTOCOL = 0x8
    NO_RFC7540_PRIORITIES = 0x9


# Flags (RFC 9113 §6): one bit can mean different things per frame type.
FLAG_END_STREAM: Final = 0x1  # DATA, HEADERS
FLAG_ACK: Final = 0x1  # SETTINGS, PING
FLAG_END_HEADERS: Final = 0x4  # HEADERS, PUSH_PROMISE, CONTINUATION
FLAG_PADDED: Final = 0x8  # DATA, HEADERS, PUSH_PROMISE
FLAG_PRIORITY: Final = 0x20  # HEADERS

# RFC 9113 §3.4: the client connection preface starts with these 24 octets.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE: Final = 9
# RFC 9113 §6.9.1: no flow-control window may exceed 2^31-1.
MAX_WINDOW_SIZE: Final = 2**31 - 1
# RFC 9113 §6.5.2: the initial values, and the largest SETTINGS_MAX_FRAME_SIZE.
DEFAULT_WINDOW_SIZE: Final = 65535
DEFAULT_MAX_FRAME_SIZE: Final = 16384
MAX_FRAME_SIZE_LIMIT: Final = 2**24 - 1

# Length (24 bits, as 16 + 8), type, flags, stream id (R bit and 31 bits).
_HEADER: Final = struct.Struct(">HBBBL")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from
_pack_u32 = struct.Struct(">L").pack
_unpack_u32 = struct.Struct(">L").unpack_from
_pack_u32x2 = struct.Struct(">LL").pack
_pack_setting = struct.Struct(">HL").pack
_unpack_setting = struct.Struct(">HL").unpack_from

_SETTINGS_ACK: Final = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"


class H2ConnectionError(RemoteProtocolError):
    """The peer broke a connection-wide rule: GOAWAY with ``h2_error`` (RFC 9113 §5.4.1)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.h2_error = code
        self.reason = reason


class H2StreamError(RemoteProtocolError):
    """The peer broke a rule of one stream: RST_STREAM with ``h2_error`` (RFC 9113 §5.4.2)."""

    def __init__(self, stream_id: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.stream_id = stream_id
        self.h2_error = code
        self.reason = reason


def parse_frame_header(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """The frame header at ``data[pos:pos + 9]``: ``(length, type, flags, stream_id)``.

    The caller checks that 9 bytes are there. The reserved bit of the stream
    id is ignored, as RFC 9113 §4.1 requires.
    """
    high, low, frame_type, flags, stream_id = _unpack_header(data, pos)
    return (high << 8) | low, frame_type, flags, stream_id & 0x7FFFFFFF


def headers_fragment(flags: int, stream_id: int, payload: bytes) -> tuple[bytes, bool]:
    """The field block fragment of a HEADERS payload with PADDED or PRIORITY (§6.2).

    Returns:
        ``(fragment, self_dependent)``: ``self_dependent`` is a priority on
        the stream itself, a stream error PROTOCOL_ERROR (§5.3.1) that the
        caller raises once the block is decoded.

    Raises:
        H2ConnectionError: FRAME_SIZE_ERROR, too short for its fields;
            PROTOCOL_ERROR, padding longer than what is left (§6.2).
    """
    length = len(payload)
    start = padding = 0
    if flags & FLAG_PADDED:
        if not length:
            raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its padding")
        padding = payload[0]
        start = 1
    self_dependent = False
    if flags & FLAG_PRIORITY:
        if length - start < 5:
            raise H2ConnectionError(
                ErrorCode.FRAME_SIZE_ERROR, "HEADERS too short for its priority"
            )
        self_dependent = _unpack_u32(payload, start)[0] & 0x7FFFFFFF == stream_id
        start += 5
    end = length - padding
    if end < start:
        raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "HEADERS padding exceeds the payload")
    return payload[start:end], self_dependent


def data_without_padding(payload: bytes) -> bytes:
    """The data of a DATA payload with PADDED (§6.1).

    Raises:
        H2ConnectionError: FRAME_SIZE_ERROR, no pad length; PROTOCOL_ERROR,
            padding as long as the payload or longer.
    """
    length = len(payload)
    if not length:
        raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "DATA too short for its padding")
    padding = payload[0]
    if padding >= length:
        raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "DATA padding exceeds the payload")
    return payload[1 : length - padding]


def frame_header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte header of a frame (RFC 9113 §4.1)."""
    return _pack_header(length >> 8, length & 0xFF, frame_type, flags, stream_id)


def build_data(stream_id: int, data: bytes, end_stream: bool) -> bytes:
    """One DATA frame, unpadded (RFC 9113 §6.1); ``data`` fits the peer's frame size."""
    length = len(data)
    return _pack_header(length >> 8, length & 0xFF, 0x0, end_stream, stream_id) + data


def build_field_block(
    frame_type: int,
    stream_id: int,
    block: bytes,
    end_stream: bool,
    max_frame_size: int,
    prefix: bytes = b"",
) -> list[bytes]:
    """A field block as HEADERS or PUSH_PROMISE plus CONTINUATION frames (RFC 9113 §4.3).

    ``prefix`` goes before the block in the first frame (the promised stream
    id of a PUSH_PROMISE, §6.6). Frames carry at most ``max_frame_size``
    bytes of payload; the last one has END_HEADERS.

    Returns:
        The frames' pieces (headers and payloads), in order, to join.
    """
    flags = FLAG_END_STREAM if end_stream else 0
    payload = prefix + block if prefix else block
    length = len(payload)
    if length <= max_frame_size:
        return [
            _pack_header(
                length >> 8, length & 0xFF, frame_type, flags | FLAG_END_HEADERS, stream_id
            ),
            payload,
        ]
    first = payload[:max_frame_size]
    parts = [_pack_header(max_frame_size >> 8, max_frame_size & 0xFF, frame_type, flags, stream_id)]
    parts.append(first)
    pos = max_frame_size
    while pos < length:
        piece = payload[pos : pos + max_frame_size]
        pos += len(piece)
        end = FLAG_END_HEADERS if pos >= length else 0
        n = len(piece)
        parts.append(_pack_header(n >> 8, n & 0xFF, FrameType.CONTINUATION, end, stream_id))
        parts.append(piece)
    return parts


def build_settings(settings: list[tuple[int, int]]) -> bytes:
    """A SETTINGS frame with ``(identifier, value)`` pairs (RFC 9113 §6.5)."""
    payload = b"".join([_pack_setting(ident, value) for ident, value in settings])
    return frame_header(len(payload), FrameType.SETTINGS, 0, 0) + payload


def build_settings_ack() -> bytes:
    """The SETTINGS frame with ACK and no payload (RFC 9113 §6.5.3)."""
    return _SETTINGS_ACK


def build_ping_ack(payload: bytes) -> bytes:
    """The PING ACK that echoes ``payload`` (8 bytes, RFC 9113 §6.7)."""
    return b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload


def build_rst_stream(stream_id: int, code: int) -> bytes:
    """A RST_STREAM frame (RFC 9113 §6.4)."""
    return _pack_header(0, 4, FrameType.RST_STREAM, 0, stream_id) + _pack_u32(code)


def build_window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame; 0 < ``increment`` <= 2^31-1 (RFC 9113 §6.9)."""
    return _pack_header(0, 4, FrameType.WINDOW_UPDATE, 0, stream_id) + _pack_u32(increment)


def build_goaway(last_stream_id: int, code: int, debug: bytes = b"") -> bytes:
    """A GOAWAY frame (RFC 9113 §6.8); ``debug`` is opaque diagnostic data."""
    length = 8 + len(debug)
    return (
        _pack_header(length >> 8, length & 0xFF, FrameType.GOAWAY, 0, 0)
        + _pack_u32x2(last_stream_id, code)
        + debug
    )


def parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """The ``(identifier, value)`` pairs of a SETTINGS payload, in order.

    Raises:
        H2ConnectionError: FRAME_SIZE_ERROR, a length that is not a multiple of 6 (§6.5).
    """
    length = len(payload)
    if length % 6:
        raise H2ConnectionError(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    return [_unpack_setting(payload, pos) for pos in range(0, length, 6)]


def decode_http2_settings(value: bytes) -> bytes:
    """The SETTINGS payload carried by an ``HTTP2-Settings`` header (RFC 7540 §3.2.1).

    The value is base64url without padding (RFC 4648 §5).

    Raises:
        H2ConnectionError: PROTOCOL_ERROR, a value that is not base64url or
            not a whole number of settings; the server must then not upgrade.
    """
    text = value.strip()
    try:
        payload = base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise H2ConnectionError(
            ErrorCode.PROTOCOL_ERROR, "HTTP2-Settings is not base64url"
        ) from exc
    if len(payload) % 6:
        raise H2ConnectionError(
            ErrorCode.PROTOCOL_ERROR, "HTTP2-Settings length not a multiple of 6"
        )
    return payload
