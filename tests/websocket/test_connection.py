"""connection.py: the sans-I/O state machine, rule by rule (RFC 6455, RFC 7692).

No event loop: bytes in, events and bytes out. Client frames are built by an
independent helper (``codec_helpers``) or by the ``websockets`` library's
sans-I/O ``ClientProtocol``.
"""

from __future__ import annotations

import itertools
import os
import random
import tracemalloc
import zlib

import pytest
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Close as WSClose
from websockets.frames import Frame as WSFrame
from websockets.frames import Opcode as WSOpcode
from websockets.protocol import State as WSState
from websockets.uri import parse_uri

from sluiceway.errors import InvalidState
from sluiceway.websocket.connection import (
    BytesMessage,
    CloseReceived,
    Connection,
    ConnectionFailed,
    Ping,
    Pong,
    State,
    TextMessage,
)
from sluiceway.websocket.deflate import DeflateParams, DeflateSettings
from sluiceway.websocket.handshake import Handshake, build_accept_response, validate_request

from .codec_helpers import (
    assert_failed,
    assert_frame_sent,
    client_frame,
    close_payload,
    feed,
    parse_server_frames,
    sent_frames,
)

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x40, 0x20, 0x10


def deflate_conn(**kwargs: object) -> Connection:
    return Connection(deflate=DeflateParams(), **kwargs)  # type: ignore[arg-type]


def raw_deflate(data: bytes) -> bytes:
    encoder = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH))[:-4]


# -- messages --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunk"),
    [
        (size, chunk)
        for size in (0, 1, 125, 126, 65535, 65536, 200_000)
        for chunk in (None, 1, 7, 4096)
        # byte-by-byte feeding of large frames would only repeat the small cases, slowly
        if not (chunk == 1 and size > 1000)
    ],
)
def test_messages_of_every_length_encoding_in_any_chunking(size: int, chunk: int | None) -> None:
    conn = Connection()
    text = ("é" * size)[:size]
    data = os.urandom(size)
    feed(conn, client_frame(TEXT, text.encode()) + client_frame(BINARY, data), chunk)
    assert conn.events_received() == [TextMessage(text), BytesMessage(data)]
    assert conn.data_to_send() == []
    assert conn.state is State.OPEN


def test_many_frames_in_one_read() -> None:
    conn = Connection()
    feed(conn, b"".join(client_frame(TEXT, f"m{i}".encode()) for i in range(100)))
    assert conn.events_received() == [TextMessage(f"m{i}") for i in range(100)]
    assert conn.events_received() == []


def test_a_partial_frame_waits_for_the_rest() -> None:
    conn = Connection()
    frame = client_frame(TEXT, b"hello")
    conn.receive_data(frame[:-1])
    assert conn.events_received() == []
    conn.receive_data(frame[-1:] + client_frame(TEXT, b"x")[:3])
    assert conn.events_received() == [TextMessage("hello")]


@pytest.mark.parametrize(
    "cuts",
    [
        (1, 5, 30_000, 70_020),  # header split, then the payload over three reads
        (70_020, 70_030, 70_040),  # the frame ends in the read that starts the next
        (3, 70_000),  # the last read completes one frame and holds two more
    ],
)
def test_a_binary_frame_held_across_reads_is_parsed_with_what_follows(
    cuts: tuple[int, ...],
) -> None:
    # A payload that spans reads is held read by read and joined once: the
    # frames before and after it, in the same reads, must come out intact.
    conn = Connection()
    data = os.urandom(70_000)
    stream = (
        client_frame(TEXT, b"before")
        + client_frame(BINARY, data)
        + client_frame(PING, b"p")
        + client_frame(BINARY, b"after")
    )
    start = 0
    for cut in (*cuts, len(stream)):
        conn.receive_data(stream[start:cut])
        start = cut
    assert conn.events_received() == [
        TextMessage("before"),
        BytesMessage(data),
        Ping(b"p"),
        BytesMessage(b"after"),
    ]
    assert_frame_sent(conn, PONG, b"p")


def test_fragmented_messages_are_reassembled_with_control_frames_between() -> None:
    conn = Connection()
    feed(
        conn,
        client_frame(TEXT, b"Hel", fin=False)
        + client_frame(PING, b"p1")
        + client_frame(CONT, b"lo ", fin=False)
        + client_frame(PONG, b"q")
        + client_frame(CONT, b"", fin=False)
        + client_frame(CONT, b"world")
        + client_frame(BINARY, b"\x00", fin=False)
        + client_frame(CONT, b"\x01"),
    )
    assert conn.events_received() == [
        Ping(b"p1"),
        Pong(b"q"),
        TextMessage("Hello world"),
        BytesMessage(b"\x00\x01"),
    ]
    # §5.5.2: the ping is answered with its payload.
    assert_frame_sent(conn, PONG, b"p1")


def test_utf8_code_points_may_span_fragments() -> None:
    conn = Connection()
    encoded = "κόσμε €𝄞".encode()
    feed(
        conn,
        b"".join(
            client_frame(CONT if i else TEXT, encoded[i : i + 1], fin=i == len(encoded) - 1)
            for i in range(len(encoded))
        ),
    )
    assert conn.events_received() == [TextMessage("κόσμε €𝄞")]


# -- framing errors: 1002 ----------------------------------------------------------


def test_unmasked_client_frame_fails_1002() -> None:
    conn = Connection()
    conn.receive_data(client_frame(TEXT, b"hi", mask=None))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3])
def test_reserved_bits_without_an_extension_fail_1002(rsv: int) -> None:
    conn = Connection()
    conn.receive_data(client_frame(TEXT, b"hi", rsv=rsv))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("rsv", [RSV2, RSV3])
def test_rsv2_and_rsv3_fail_even_with_deflate(rsv: int) -> None:
    conn = deflate_conn()
    conn.receive_data(client_frame(BINARY, b"hi", rsv=rsv))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_fail_1002(opcode: int) -> None:
    conn = Connection()
    conn.receive_data(client_frame(opcode, b""))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frames_over_125_bytes_fail_1002_from_the_header(opcode: int) -> None:
    conn = Connection()
    frame = client_frame(opcode, b"\x03\xe8" + b"x" * 124)
    conn.receive_data(frame[:8])  # header and mask only
    assert_failed(conn, 1002)


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_fragmented_control_frames_fail_1002(opcode: int) -> None:
    conn = Connection()
    conn.receive_data(client_frame(opcode, b"", fin=False))
    assert_failed(conn, 1002)


def test_control_frames_may_not_be_compressed() -> None:
    conn = deflate_conn()
    conn.receive_data(client_frame(PING, b"", rsv=RSV1))
    assert_failed(conn, 1002)


def test_continuation_without_a_message_fails_1002() -> None:
    conn = Connection()
    conn.receive_data(client_frame(CONT, b"orphan"))
    assert_failed(conn, 1002)


@pytest.mark.parametrize("second", [TEXT, BINARY])
def test_new_message_inside_a_fragmented_one_fails_1002(second: int) -> None:
    conn = Connection()
    conn.receive_data(client_frame(TEXT, b"a", fin=False) + client_frame(second, b"b"))
    assert_failed(conn, 1002)


def test_rsv1_on_a_continuation_fails_1002() -> None:
    conn = deflate_conn()
    conn.receive_data(client_frame(BINARY, raw_deflate(b"ab"), fin=False, rsv=RSV1))
    conn.receive_data(client_frame(CONT, b"", rsv=RSV1))
    assert_failed(conn, 1002)


def test_64_bit_length_with_the_top_bit_fails_1002() -> None:
    conn = Connection()
    conn.receive_data(b"\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00")
    assert_failed(conn, 1002)


# -- UTF-8: 1007 -------------------------------------------------------------------


def test_invalid_utf8_text_fails_1007() -> None:
    conn = Connection()
    conn.receive_data(
        client_frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80")
    )
    assert_failed(conn, 1007)


def test_invalid_utf8_fails_at_the_bad_fragment_before_the_message_ends() -> None:
    conn = Connection()
    conn.receive_data(client_frame(TEXT, "κόσμε".encode(), fin=False))
    assert conn.events_received() == [] and conn.state is State.OPEN
    conn.receive_data(client_frame(CONT, b"\xf4\x90\x80\x80", fin=False))  # > U+10FFFF
    assert_failed(conn, 1007)


def test_invalid_utf8_fails_inside_a_frame_that_is_still_arriving() -> None:
    # §8.1 fail fast, Autobahn 6.4.3: one frame, sent in chops.
    conn = Connection()
    frame = client_frame(TEXT, "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"x" * 1000)
    conn.receive_data(frame[:12])
    assert conn.state is State.OPEN
    conn.receive_data(frame[12:24])  # the invalid sequence is in; 1000 bytes to come
    assert_failed(conn, 1007)


def test_invalid_utf8_fails_inside_a_continuation_that_is_still_arriving() -> None:
    conn = Connection()
    conn.receive_data(client_frame(TEXT, b"ok \xe2", fin=False))  # ends mid code point
    frame = client_frame(CONT, b"\x82\xac fine" + b"\xc0\xaf" + b"y" * 500)
    conn.receive_data(frame[:10])
    assert conn.state is State.OPEN  # U+20AC completed across the frames
    conn.receive_data(frame[10:20])
    assert_failed(conn, 1007)


def test_early_utf8_check_also_after_a_compressed_message() -> None:
    conn = deflate_conn()
    conn.receive_data(client_frame(TEXT, raw_deflate(b"a" * 50), fin=False, rsv=RSV1))
    conn.receive_data(client_frame(CONT, b""))
    assert conn.events_received() == [TextMessage("a" * 50)]
    frame = client_frame(TEXT, b"\xff" + b"z" * 300)
    conn.receive_data(frame[:12])
    assert_failed(conn, 1007)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7])
def test_valid_text_in_any_chunking_and_fragmentation(chunk: int) -> None:
    conn = Connection()
    encoded = "aé€𝄞κόσμε".encode() * 7
    cut1, cut2 = 5, 41  # both split multi-byte sequences
    data = (
        client_frame(TEXT, encoded[:cut1], fin=False)
        + client_frame(PING, b"x")
        + client_frame(CONT, encoded[cut1:cut2], fin=False)
        + client_frame(CONT, encoded[cut2:])
        + client_frame(TEXT, encoded)
    )
    feed(conn, data, chunk)
    message = TextMessage("aé€𝄞κόσμε" * 7)
    assert conn.events_received() == [Ping(b"x"), message, message]


def test_a_truncated_code_point_at_the_end_of_a_message_fails_1007() -> None:
    conn = Connection()
    conn.receive_data(client_frame(TEXT, b"ok\xe2\x82", fin=False))
    assert conn.events_received() == []  # an incomplete sequence may continue
    conn.receive_data(client_frame(CONT, b""))
    assert_failed(conn, 1007)


def test_binary_messages_are_not_checked_for_utf8() -> None:
    conn = Connection()
    conn.receive_data(client_frame(BINARY, b"\xff\xfe"))
    assert conn.events_received() == [BytesMessage(b"\xff\xfe")]


# -- sizes: 1009 (CVE classes: unbounded frame, unbounded fragmented message) ------


def test_a_message_of_exactly_max_size_is_accepted() -> None:
    conn = Connection(max_size_bytes=1000)
    conn.receive_data(client_frame(BINARY, b"a" * 1000))
    conn.receive_data(client_frame(TEXT, b"a" * 600, fin=False) + client_frame(CONT, b"a" * 400))
    assert conn.events_received() == [BytesMessage(b"a" * 1000), TextMessage("a" * 1000)]


def test_an_oversized_frame_fails_1009_from_its_header_alone() -> None:
    # CVE class: a frame header announcing a huge length made servers buffer
    # (or allocate) it whole. We refuse on the 14-byte header.
    conn = Connection(max_size_bytes=1 << 20)
    conn.receive_data(client_frame(BINARY, length=(1 << 62))[:14])
    assert_failed(conn, 1009)
    conn = Connection(max_size_bytes=1000)
    conn.receive_data(client_frame(TEXT, length=1001)[:8])
    assert_failed(conn, 1009)


def test_an_oversized_fragmented_message_fails_1009_at_the_overflowing_header() -> None:
    # CVE class: per-frame limits but no per-message limit let a peer send an
    # endless stream of small fragments.
    conn = Connection(max_size_bytes=1000)
    for _ in range(99):
        conn.receive_data(client_frame(BINARY if not _ else CONT, b"x" * 10, fin=False))
    assert conn.state is State.OPEN
    conn.receive_data(client_frame(CONT, b"x" * 10, fin=False))  # 1000 so far: fine
    assert conn.state is State.OPEN
    conn.receive_data(client_frame(CONT, length=1)[:6])  # header of byte 1001
    assert_failed(conn, 1009)


def test_many_fragments_stay_bounded_in_memory() -> None:
    max_size = 256 * 1024
    conn = Connection(max_size_bytes=max_size)
    tracemalloc.start()
    try:
        conn.receive_data(client_frame(TEXT, b"", fin=False))
        fragment = client_frame(CONT, b"y" * 1024, fin=False)
        for _ in range(10_000):  # 10 MiB offered against a 256 KiB limit
            conn.receive_data(fragment)
            if conn.state is State.CLOSED:
                break
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert_failed(conn, 1009)
    assert peak < 3 * max_size


def test_compressed_message_limit_applies_after_inflation() -> None:
    conn = deflate_conn(max_size_bytes=64 * 1024)
    bomb = raw_deflate(bytes(32 * 1024 * 1024))
    assert len(bomb) < 64 * 1024  # small on the wire
    conn.receive_data(client_frame(BINARY, bomb, rsv=RSV1))
    assert_failed(conn, 1009)


def test_compressed_fragmented_message_limit_counts_inflated_bytes() -> None:
    conn = deflate_conn(max_size_bytes=10_000)
    wire = raw_deflate(bytes(20_000))
    conn.receive_data(client_frame(BINARY, wire[:10], fin=False, rsv=RSV1))
    assert conn.state is State.OPEN
    conn.receive_data(client_frame(CONT, wire[10:]))
    assert_failed(conn, 1009)


def test_compressed_frame_too_large_on_the_wire_fails_from_its_header() -> None:
    conn = deflate_conn(max_size_bytes=1000)
    conn.receive_data(client_frame(BINARY, length=100_000, rsv=RSV1)[:14])
    assert_failed(conn, 1009)


# -- permessage-deflate ------------------------------------------------------------


def test_compressed_messages_whole_and_fragmented() -> None:
    conn = deflate_conn()
    encoder = zlib.compressobj(6, zlib.DEFLATED, -15)

    def compress(data: bytes) -> bytes:
        return (encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH))[:-4]

    first = compress("héllo wörld ".encode() * 10)
    second = compress(b"\x00\x01" * 300)  # uses the window of the first (context takeover)
    conn.receive_data(client_frame(TEXT, first, rsv=RSV1))
    conn.receive_data(
        client_frame(BINARY, second[:5], fin=False, rsv=RSV1)
        + client_frame(PING, b"")
        + client_frame(CONT, second[5:])
    )
    conn.receive_data(client_frame(TEXT, b"plain"))  # uncompressed message, same connection
    assert conn.events_received() == [
        TextMessage("héllo wörld " * 10),
        Ping(b""),
        BytesMessage(b"\x00\x01" * 300),
        TextMessage("plain"),
    ]


def test_invalid_utf8_inside_compressed_text_fails_1007() -> None:
    conn = deflate_conn()
    conn.receive_data(client_frame(TEXT, raw_deflate(b"ok \xff"), rsv=RSV1))
    assert_failed(conn, 1007)


def test_corrupt_compressed_data_fails_1007() -> None:
    conn = deflate_conn()
    conn.receive_data(client_frame(BINARY, b"\xff" * 8, rsv=RSV1))
    assert_failed(conn, 1007)


def test_outgoing_messages_are_compressed_when_worth_it() -> None:
    conn = Connection(deflate=DeflateParams(), deflate_settings=DeflateSettings(min_size_bytes=64))
    conn.send_text("a" * 63)
    conn.send_text("b" * 1000)
    small, big = sent_frames(conn)
    assert (small.rsv1, small.payload) == (False, b"a" * 63)
    assert big.rsv1 and len(big.payload) < 100
    assert zlib.decompressobj(-15).decompress(big.payload + b"\x00\x00\xff\xff") == b"b" * 1000


def test_an_idle_connection_holds_no_zlib_state() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        conns = [deflate_conn() for _ in range(1000)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per_connection = sum(s.size_diff for s in after.compare_to(before, "filename")) / len(conns)
    assert per_connection < 1024, per_connection


# -- close handshake ---------------------------------------------------------------


def test_peer_close_is_echoed_and_closes() -> None:
    conn = Connection()
    conn.receive_data(client_frame(CLOSE, close_payload(1001, b"going")))
    assert conn.events_received() == [CloseReceived(1001, "going")]
    assert_frame_sent(conn, CLOSE, close_payload(1001))
    assert conn.state is State.CLOSED
    assert conn.close_transport and conn.close_expected()
    assert (conn.close_code, conn.close_reason) == (1001, "going")


def test_peer_close_without_a_code_is_1005_and_echoed_empty() -> None:
    conn = Connection()
    conn.receive_data(client_frame(CLOSE, b""))
    assert conn.events_received() == [CloseReceived(1005, "")]
    assert_frame_sent(conn, CLOSE, b"")


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
)
def test_valid_close_codes_are_echoed(code: int) -> None:
    conn = Connection()
    conn.receive_data(client_frame(CLOSE, close_payload(code, b"r")))
    assert conn.events_received() == [CloseReceived(code, "r")]
    assert_frame_sent(conn, CLOSE, close_payload(code))


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1012, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_invalid_close_codes_fail_1002(code: int) -> None:
    conn = Connection()
    conn.receive_data(client_frame(CLOSE, close_payload(code)))
    assert_failed(conn, 1002)


def test_one_byte_close_payload_fails_1002() -> None:
    conn = Connection()
    conn.receive_data(client_frame(CLOSE, b"\x03"))
    assert_failed(conn, 1002)


def test_close_reason_not_utf8_fails_1007() -> None:
    conn = Connection()
    conn.receive_data(client_frame(CLOSE, close_payload(1000, b"\xff\xfe")))
    assert_failed(conn, 1007)


def test_data_after_close_is_ignored() -> None:
    conn = Connection()
    conn.receive_data(
        client_frame(CLOSE, close_payload(1000)) + client_frame(TEXT, b"late") + b"\xff\x00garbage"
    )
    conn.receive_data(client_frame(PING, b"late"))
    assert conn.events_received() == [CloseReceived(1000, "")]
    assert_frame_sent(conn, CLOSE, close_payload(1000))
    assert conn.data_to_send() == []


def test_server_initiated_close() -> None:
    conn = Connection()
    conn.send_close(4001, "bye")
    assert_frame_sent(conn, CLOSE, close_payload(4001, b"bye"))
    assert conn.state is State.CLOSING
    assert conn.close_expected() and not conn.close_transport
    # Messages still arrive while the peer finishes; pings are not answered
    # because nothing may follow our Close (§5.5.1).
    conn.receive_data(client_frame(TEXT, b"in flight") + client_frame(PING, b"p"))
    assert conn.events_received() == [TextMessage("in flight"), Ping(b"p")]
    assert conn.data_to_send() == []
    conn.receive_data(client_frame(CLOSE, close_payload(4001)))
    assert conn.events_received() == [CloseReceived(4001, "")]
    assert conn.data_to_send() == []  # no second Close
    assert conn.state is State.CLOSED and conn.close_transport


def test_protocol_error_while_closing_sends_no_second_close() -> None:
    conn = Connection()
    conn.send_close()
    conn.data_to_send()
    conn.receive_data(client_frame(TEXT, b"x", mask=None))
    assert conn.data_to_send() == []
    assert isinstance(conn.events_received()[-1], ConnectionFailed)
    assert conn.state is State.CLOSED and conn.close_transport


def test_eof_without_close_is_1006() -> None:
    conn = Connection()
    conn.receive_data(client_frame(TEXT, b"partial")[:5])
    conn.receive_eof()
    assert conn.state is State.CLOSED
    assert conn.close_code == 1006 and conn.close_transport
    assert conn.events_received() == [] and conn.data_to_send() == []
    conn.receive_data(client_frame(TEXT, b"ignored"))
    assert conn.events_received() == []


def test_eof_after_close_keeps_the_close_code() -> None:
    conn = Connection()
    conn.receive_data(client_frame(CLOSE, close_payload(1000)))
    conn.receive_eof()
    assert conn.close_code == 1000


# -- sending -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 125, 126, 16 * 1024, 16 * 1024 + 1, 65536, 100_000])
def test_sent_frames_are_whole_unmasked_and_minimal(size: int) -> None:
    conn = Connection()
    data = os.urandom(size)
    conn.send_binary(data)
    conn.send_text("t")
    assert [(f.fin, f.rsv1, f.opcode, f.payload) for f in sent_frames(conn)] == [
        (True, False, BINARY, data),
        (True, False, TEXT, b"t"),
    ]


def test_send_control_frames() -> None:
    conn = Connection()
    conn.send_ping(b"keepalive")
    conn.send_pong(b"")
    assert [(f.opcode, f.payload) for f in sent_frames(conn)] == [(PING, b"keepalive"), (PONG, b"")]
    with pytest.raises(ValueError):
        conn.send_ping(b"x" * 126)


def test_send_close_validates_the_code_and_cuts_the_reason() -> None:
    conn = Connection()
    for code in (999, 1004, 1005 + 1, 1015, 2000, 5000):
        with pytest.raises(ValueError):
            conn.send_close(code)
    assert conn.state is State.OPEN
    conn.send_close(1013, "x" * 200)
    (frame,) = sent_frames(conn)
    assert len(frame.payload) == 125 and frame.payload[:2] == b"\x03\xf5"


def test_send_close_1005_sends_an_empty_close() -> None:
    conn = Connection()
    conn.send_close(1005)
    assert_frame_sent(conn, CLOSE, b"")


@pytest.mark.parametrize("closer", ["peer", "us", "error", "eof"])
def test_nothing_can_be_sent_once_closing(closer: str) -> None:
    conn = Connection()
    if closer == "peer":
        conn.receive_data(client_frame(CLOSE, b""))
    elif closer == "us":
        conn.send_close()
    elif closer == "error":
        conn.receive_data(client_frame(TEXT, b"", mask=None))
    else:
        conn.receive_eof()
    for send in (
        lambda: conn.send_text("x"),
        lambda: conn.send_binary(b"x"),
        lambda: conn.send_ping(),
        lambda: conn.send_pong(),
        lambda: conn.send_close(),
    ):
        with pytest.raises(InvalidState):
            send()


# -- against an independent implementation: the websockets client -----------------


def ws_pair(extensions: bool = False) -> tuple[ClientProtocol, Connection]:
    """A websockets client and our connection, joined by a real handshake."""
    factories = [ClientPerMessageDeflateFactory(client_max_window_bits=True)] if extensions else []
    client = ClientProtocol(parse_uri("ws://example.com/"), extensions=factories, max_size=None)
    client.send_request(client.connect())
    head = b"".join(client.data_to_send()).partition(b"\r\n\r\n")[0].split(b"\r\n")
    headers = [tuple(p.strip() for p in line.split(b":", 1)) for line in head[1:]]
    handshake = validate_request("GET", "1.1", headers)  # type: ignore[arg-type]
    assert isinstance(handshake, Handshake)
    response = build_accept_response(handshake)
    assert isinstance(response, bytes)
    client.receive_data(response)
    client.events_received()
    assert client.state is WSState.OPEN
    assert (handshake.deflate is not None) == extensions
    conn = Connection(max_size_bytes=1 << 24, deflate=handshake.deflate)
    return client, conn


def pump_to_server(client: ClientProtocol, conn: Connection) -> None:
    for data in client.data_to_send():
        conn.receive_data(data)


def pump_to_client(conn: Connection, client: ClientProtocol) -> None:
    for data in conn.data_to_send():
        client.receive_data(data)


@pytest.mark.parametrize("extensions", [False, True], ids=["plain", "deflate"])
def test_random_traffic_against_the_websockets_client(extensions: bool) -> None:
    rng = random.Random(6455)
    client, conn = ws_pair(extensions)
    expected = []
    for _ in range(200):
        size = rng.choice([0, 1, 50, 125, 126, 1000, 65535, 65536, 150_000])
        if rng.random() < 0.5:
            text = "".join(rng.choice("aé€𝄞 ") for _ in range(size // 3))
            pieces = rng.randint(1, 4)
            encoded = text.encode()
            cuts = sorted(rng.sample(range(len(encoded) + 1), min(pieces, len(encoded) + 1)))
            if len(cuts) < 2 or cuts[0] != 0:
                cuts = [0, *cuts]
            if cuts[-1] != len(encoded):
                cuts.append(len(encoded))
            parts = [encoded[a:b] for a, b in itertools.pairwise(cuts)] or [b""]
            client.send_text(parts[0], fin=len(parts) == 1)
            for i, part in enumerate(parts[1:], 2):
                if rng.random() < 0.3:
                    client.send_ping(b"between")
                    expected.append(Ping(b"between"))
                client.send_continuation(part, fin=i == len(parts))
            expected.append(TextMessage(text))
        else:
            data = rng.randbytes(size)
            client.send_binary(data)
            expected.append(BytesMessage(data))
    pump_to_server(client, conn)
    assert conn.events_received() == expected
    pings = sum(isinstance(e, Ping) for e in expected)
    pump_to_client(conn, client)
    assert [(f.opcode, f.data) for f in client.events_received()] == [
        (WSOpcode.PONG, b"between")
    ] * pings

    # And back: the client decodes everything we send.
    messages = [("é" * n) for n in (0, 10, 200, 30_000)] + [
        rng.randbytes(n) for n in (0, 1, 70_000)
    ]
    for message in messages:
        if isinstance(message, str):
            conn.send_text(message)
        else:
            conn.send_binary(message)
    conn.send_ping(b"hb")
    pump_to_client(conn, client)
    received = [(f.opcode, f.data) for f in client.events_received()]
    assert received[: len(messages)] == [
        (WSOpcode.TEXT, m.encode()) if isinstance(m, str) else (WSOpcode.BINARY, m)
        for m in messages
    ]
    assert received[-1] == (WSOpcode.PING, b"hb")
    assert client.state is WSState.OPEN


def test_close_handshake_against_the_websockets_client() -> None:
    client, conn = ws_pair()
    client.send_close(1000, "done")
    pump_to_server(client, conn)
    assert conn.events_received() == [CloseReceived(1000, "done")]
    pump_to_client(conn, client)
    assert client.state is WSState.CLOSING or client.state is WSState.CLOSED
    assert client.close_rcvd == WSClose(1000, "")


def test_websockets_client_sees_our_protocol_error_close() -> None:
    client, conn = ws_pair()
    conn.receive_data(WSFrame(WSOpcode.TEXT, b"\xff").serialize(mask=True))
    pump_to_client(conn, client)
    assert client.close_rcvd is not None and client.close_rcvd.code == 1007


def test_parse_server_frames_helper_sanity() -> None:
    assert [f.payload for f in parse_server_frames(b"\x81\x02hi")] == [b"hi"]


# -- robustness --------------------------------------------------------------------


@pytest.mark.parametrize("use_deflate", [False, True], ids=["plain", "deflate"])
def test_mutated_traffic_never_raises_and_always_ends_in_a_known_state(use_deflate: bool) -> None:
    # Bad input gets a close code, never an exception out of receive_data.
    rng = random.Random(7692)
    valid = [
        client_frame(TEXT, "héllo".encode()),
        client_frame(BINARY, bytes(300)),
        client_frame(TEXT, b"frag", fin=False),
        client_frame(CONT, b"ment"),
        client_frame(PING, b"p"),
        client_frame(CLOSE, close_payload(1000)),
        client_frame(BINARY, raw_deflate(b"z" * 500), rsv=RSV1),
    ]
    for _ in range(2000):
        stream = bytearray(b"".join(rng.choice(valid) for _ in range(rng.randint(1, 6))))
        for _ in range(rng.randint(0, 4)):
            stream[rng.randrange(len(stream))] = rng.randrange(256)
        conn = Connection(max_size_bytes=4096, deflate=DeflateParams() if use_deflate else None)
        pos = 0
        while pos < len(stream):
            step = rng.randint(1, 64)
            conn.receive_data(bytes(stream[pos : pos + step]))
            pos += step
        events = conn.events_received()
        out = parse_server_frames(b"".join(conn.data_to_send()))
        if conn.state is State.CLOSED:
            assert conn.close_transport
            assert isinstance(events[-1], (CloseReceived, ConnectionFailed))
            closes = [f for f in out if f.opcode == CLOSE]
            assert len(closes) == 1
        else:
            assert conn.state is State.OPEN
            assert all(not isinstance(e, (CloseReceived, ConnectionFailed)) for e in events)
            assert all(f.opcode == PONG for f in out)
