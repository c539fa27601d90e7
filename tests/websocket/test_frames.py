"""frames.py: header parsing, frame building, masking and Close payloads."""

from __future__ import annotations

import os
import struct

import pytest

from sluiceway.errors import InvalidPayload, WebSocketProtocolError
from sluiceway.websocket import frames
from sluiceway.websocket.frames import (
    Opcode,
    apply_mask,
    apply_mask_python,
    build_close_payload,
    build_frame,
    build_frame_header,
    is_valid_received_close_code,
    is_valid_sent_close_code,
    parse_close_payload,
    parse_header,
)

from .codec_helpers import MASK, client_frame, parse_server_frames, reference_mask

SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 100, 125, 126, 127, 1000, 4097, 65535, 65536, 70001]


@pytest.mark.parametrize("mask_fn", [apply_mask, apply_mask_python], ids=["default", "python"])
@pytest.mark.parametrize("size", SIZES)
def test_apply_mask_matches_the_byte_loop(mask_fn: frames.MaskFunction, size: int) -> None:
    data = os.urandom(size)
    mask = os.urandom(4)
    assert mask_fn(data, mask) == reference_mask(data, mask)
    assert mask_fn(bytearray(data), bytearray(mask)) == reference_mask(data, mask)
    assert mask_fn(memoryview(data), mask) == reference_mask(data, mask)
    # Masking is its own inverse (RFC 6455 §5.3).
    assert mask_fn(mask_fn(data, mask), mask) == data


@pytest.mark.parametrize("size", SIZES)
def test_parse_header_reads_every_length_encoding(size: int) -> None:
    frame = client_frame(Opcode.BINARY, b"x" * size)
    header = parse_header(frame, 0)
    assert header is not None
    b0, b1, length, offset = header
    assert b0 == 0x82 and b1 & 0x80
    assert length == size
    assert offset == len(frame) - size
    assert frame[offset - 4 : offset] == MASK


@pytest.mark.parametrize("size", [0, 125, 126, 65536])
def test_parse_header_wants_more_data_on_every_partial_header(size: int) -> None:
    frame = client_frame(Opcode.TEXT, b"a" * size)
    header_len = len(frame) - size - 4
    for cut in range(header_len):
        assert parse_header(frame[:cut], 0) is None
    # The header is complete before the masking key arrives: the offset
    # still accounts for it.
    header = parse_header(frame[:header_len], 0)
    assert header is not None and header[3] == header_len + 4


def test_parse_header_at_an_offset_in_a_bytearray() -> None:
    buf = bytearray(b"junk" + client_frame(Opcode.PING, b"hi"))
    assert parse_header(buf, 4) == (0x89, 0x82, 2, 4 + 2 + 4)


def test_parse_header_refuses_a_64_bit_length_with_its_top_bit_set() -> None:
    frame = bytes((0x82, 0xFF)) + struct.pack("!Q", 1 << 63)
    with pytest.raises(WebSocketProtocolError):
        parse_header(frame, 0)


@pytest.mark.parametrize("size", SIZES)
def test_build_frame_is_minimal_and_unmasked(size: int) -> None:
    payload = os.urandom(size)
    (frame,) = parse_server_frames(build_frame(Opcode.BINARY, payload))
    assert (frame.fin, frame.rsv1, frame.opcode, frame.payload) == (True, False, 2, payload)
    header = build_frame_header(Opcode.TEXT, size, fin=False, rsv1=True)
    assert header[0] == 0x41
    assert len(header) == (2 if size < 126 else 4 if size < 65536 else 10)


def test_build_frame_with_a_mask_is_what_a_client_sends() -> None:
    payload = b"Hello"
    assert build_frame(Opcode.TEXT, payload, mask=MASK) == client_frame(Opcode.TEXT, payload)
    # RFC 6455 §5.7: a single-frame masked text message.
    assert build_frame(Opcode.TEXT, payload, mask=b"\x37\xfa\x21\x3d") == bytes.fromhex(
        "818537fa213d7f9f4d5158"
    )
    with pytest.raises(ValueError):
        build_frame(Opcode.TEXT, payload, mask=b"abc")


def test_rfc_examples_of_unmasked_frames() -> None:
    # RFC 6455 §5.7.
    assert build_frame(Opcode.TEXT, b"Hello") == bytes.fromhex("810548656c6c6f")
    assert build_frame(Opcode.TEXT, b"Hel", fin=False) == bytes.fromhex("010348656c")
    assert build_frame(Opcode.CONTINUATION, b"lo") == bytes.fromhex("80026c6f")
    assert build_frame(Opcode.BINARY, bytes(256))[:4] == bytes.fromhex("827e0100")
    assert build_frame(Opcode.BINARY, bytes(65536))[:10] == bytes.fromhex("827f0000000000010000")


VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
INVALID_CODES = [
    0,
    999,
    1004,
    1005,
    1006,
    1012,
    1013,
    1014,
    1015,
    1016,
    1100,
    2000,
    2999,
    5000,
    65535,
]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_codes_parse(code: int) -> None:
    assert is_valid_received_close_code(code)
    assert parse_close_payload(struct.pack("!H", code) + "ok ✓".encode()) == (code, "ok ✓")


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_codes_are_a_protocol_error(code: int) -> None:
    assert not is_valid_received_close_code(code)
    with pytest.raises(WebSocketProtocolError):
        parse_close_payload(struct.pack("!H", code))


def test_the_server_may_send_the_iana_codes_a_client_may_not() -> None:
    for code in (1012, 1013, 1014):
        assert is_valid_sent_close_code(code) and not is_valid_received_close_code(code)
    for code in (1004, 1005, 1006, 1015, 2000, 999, 5000):
        assert not is_valid_sent_close_code(code)


def test_close_payload_edge_cases() -> None:
    assert parse_close_payload(b"") == (frames.CLOSE_CODE_NO_STATUS, "")
    with pytest.raises(WebSocketProtocolError):
        parse_close_payload(b"\x03")
    with pytest.raises(InvalidPayload):
        parse_close_payload(b"\x03\xe8\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")


def test_build_close_payload() -> None:
    assert build_close_payload(1000) == b"\x03\xe8"
    assert build_close_payload(4000, "bye") == b"\x0f\xa0bye"
    assert build_close_payload(frames.CLOSE_CODE_NO_STATUS, "ignored") == b""
    # A long reason is cut to fit 125 bytes, at a character boundary.
    payload = build_close_payload(1000, "é" * 100)
    assert len(payload) <= 125
    assert payload[2:].decode("utf-8") == "é" * 61


def test_the_c_masking_helper_is_built_and_used() -> None:
    # `pip install .` builds src/sluiceway/_speedups.c wherever a compiler exists
    # (it does on every machine we ship to); without it 64 KiB echo is ~200x slower.
    from sluiceway import _speedups

    assert apply_mask is _speedups.apply_mask
    with pytest.raises(ValueError, match="4 bytes"):
        _speedups.apply_mask(b"data", b"abc")
    with pytest.raises(TypeError):
        _speedups.apply_mask("text", b"abcd")  # type: ignore[arg-type]  # str has no buffer
