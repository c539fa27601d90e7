"""frames.py: every frame we build, read back by ``hyperframe`` (an independent parser)."""

from __future__ import annotations

import hyperframe.frame as hf
import pytest

from sluiceway.http2.frames import (
    FrameType,
    H2ConnectionError,
    build_data,
    build_field_block,
    build_goaway,
    build_ping_ack,
    build_rst_stream,
    build_settings,
    build_settings_ack,
    build_window_update,
    data_without_padding,
    headers_fragment,
    parse_frame_header,
    parse_settings,
)


def parse(wire: bytes) -> list[hf.Frame]:
    frames = []
    pos = 0
    while pos < len(wire):
        f, length = hf.Frame.parse_frame_header(memoryview(wire[pos : pos + 9]))
        f.parse_body(memoryview(wire[pos + 9 : pos + 9 + length]))
        frames.append(f)
        pos += 9 + length
    return frames


def test_control_frames_read_back() -> None:
    (data,) = parse(build_data(3, b"abc", True))
    assert (data.stream_id, data.data, data.flags) == (3, b"abc", {"END_STREAM"})
    (goaway,) = parse(build_goaway(7, 0xB, b"calm"))
    assert (goaway.last_stream_id, goaway.error_code, goaway.additional_data) == (7, 0xB, b"calm")
    (rst,) = parse(build_rst_stream(5, 0x8))
    assert (rst.stream_id, rst.error_code) == (5, 0x8)
    (update,) = parse(build_window_update(0, 2**31 - 1))
    assert update.window_increment == 2**31 - 1
    (settings,) = parse(build_settings([(3, 100), (4, 1)]))
    assert settings.settings == {3: 100, 4: 1}
    (ack,) = parse(build_settings_ack())
    assert ack.flags == {"ACK"} and ack.settings == {}
    (pong,) = parse(build_ping_ack(b"12345678"))
    assert pong.flags == {"ACK"} and pong.opaque_data == b"12345678"


def test_field_block_is_split_into_continuation_frames() -> None:
    block = bytes(range(256)) * 100  # 25,600 bytes
    frames = parse(b"".join(build_field_block(FrameType.HEADERS, 1, block, True, 16384)))
    assert [type(f) for f in frames] == [hf.HeadersFrame, hf.ContinuationFrame]
    assert frames[0].flags == {"END_STREAM"} and frames[1].flags == {"END_HEADERS"}
    assert frames[0].data + frames[1].data == block
    promise = build_field_block(
        FrameType.PUSH_PROMISE, 1, b"\x82", False, 16384, b"\x00\x00\x00\x02"
    )
    (push,) = parse(b"".join(promise))
    assert (push.promised_stream_id, push.data, push.flags) == (2, b"\x82", {"END_HEADERS"})


def test_frame_header_ignores_the_reserved_bit() -> None:
    assert parse_frame_header(b"\x00\x01\x00\x01\x04\x80\x00\x00\x03", 0) == (256, 1, 4, 3)


def test_payload_parsers() -> None:
    # PADDED (2 bytes of padding) and PRIORITY on stream 3, depending on 3.
    payload = b"\x02" + b"\x80\x00\x00\x03\x0f" + b"block" + b"\x00\x00"
    assert headers_fragment(0x28, 3, payload) == (b"block", True)
    assert headers_fragment(0x20, 5, payload[1:-2]) == (b"block", False)
    assert data_without_padding(b"\x01ab\x00") == b"ab"
    assert parse_settings(b"\x00\x03\x00\x00\x00\x64") == [(3, 100)]
    for bad in (
        lambda: headers_fragment(0x08, 1, b""),
        lambda: headers_fragment(0x08, 1, b"\x09block"),
        lambda: headers_fragment(0x20, 1, b"\x00\x00"),
        lambda: data_without_padding(b""),
        lambda: data_without_padding(b"\x03ab"),
        lambda: parse_settings(b"\x00\x03\x00"),
    ):
        with pytest.raises(H2ConnectionError):
            bad()
