"""connection.py: every protocol error a peer can make, with its code and kind (RFC 9113 §5.4).

Each case opens a connection (preface, SETTINGS, ACK), sends the frames of
the case as a raw client would, and checks what went back: a connection
error is one GOAWAY with the code (and ``ConnectionTerminated``, and nothing
read after it); a stream error is a RST_STREAM with the code on that stream
and no GOAWAY. The ids in brackets are the h2spec cases that check the same.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import hyperframe.frame as hf
import pytest

from sluiceway.http2 import events as ev
from sluiceway.http2.connection import H2Config

from .h2_support import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GET,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    Client,
    assert_connection_error,
    assert_stream_error,
    frame,
    ping,
    post,
    priority,
    rst_stream,
    settings_payload,
    window_update,
)

Case = Callable[[Client], list[ev.Event]]


def _closed_by_both_ends(c: Client) -> None:
    c.request(1)
    c.server.send_headers(1, [(b":status", b"200")], end_stream=True)


def _open_block(c: Client) -> bytes:
    """HEADERS on stream 1 without END_HEADERS."""
    return frame(HEADERS, END_STREAM, 1, c.block(GET))


def _settings(payload: bytes) -> bytes:
    return frame(SETTINGS, 0, 0, payload)


# (case id, what the client does, the stream of a stream error or None for a connection
# error, the code)
ERRORS: list[tuple[str, Case, int | None, int]] = [
    # §4.2 frame size [4.2/2, 4.2/3]
    (
        "data-over-max-frame-size",
        lambda c: c.request(1, post(), False) + c.data(1, b"x" * 16385),
        None,
        FRAME_SIZE_ERROR,
    ),
    (
        "headers-over-max-frame-size",
        lambda c: c.send(frame(HEADERS, 5, 1, b"\x88" * 16385)),
        None,
        FRAME_SIZE_ERROR,
    ),
    # §4.3 field block errors [4.3/1]
    (
        "invalid-hpack-block",
        lambda c: c.send(frame(HEADERS, 5, 1, b"\x40")),
        None,
        COMPRESSION_ERROR,
    ),
    ("hpack-index-0", lambda c: c.send(frame(HEADERS, 5, 1, b"\x80")), None, COMPRESSION_ERROR),
    # §5.1.1 stream identifiers [5.1.1/1, 5.1.1/2]
    (
        "headers-on-stream-0",
        lambda c: c.send(frame(HEADERS, 5, 0, c.block(GET))),
        None,
        PROTOCOL_ERROR,
    ),
    ("headers-on-even-stream", lambda c: c.request(2), None, PROTOCOL_ERROR),
    ("stream-id-decreasing", lambda c: c.request(5) + c.request(3), None, PROTOCOL_ERROR),
    # §5.1 idle [5.1/1-4]
    ("data-on-idle", lambda c: c.data(1, b"test", True), None, PROTOCOL_ERROR),
    ("rst-on-idle", lambda c: c.send(rst_stream(1, 8)), None, PROTOCOL_ERROR),
    ("window-update-on-idle", lambda c: c.send(window_update(1, 100)), None, PROTOCOL_ERROR),
    (
        "continuation-on-idle",
        lambda c: c.send(frame(CONTINUATION, END_HEADERS, 1, c.block(GET))),
        None,
        PROTOCOL_ERROR,
    ),
    ("data-on-unpromised-even", lambda c: c.request(1) + c.data(2, b"x"), None, PROTOCOL_ERROR),
    # §5.1 half-closed (remote) [5.1/5-7, 6.1/2]
    (
        "half-closed-remote-data",
        lambda c: c.request(1) + c.data(1, b"test", True),
        1,
        STREAM_CLOSED,
    ),
    ("half-closed-remote-headers", lambda c: c.request(1) + c.request(1), 1, STREAM_CLOSED),
    (
        "half-closed-remote-continuation",
        lambda c: c.request(1) + c.send(frame(CONTINUATION, END_HEADERS, 1, c.block(GET))),
        None,
        PROTOCOL_ERROR,
    ),
    # §5.1 closed after the peer's RST_STREAM [5.1/8-10]
    (
        "closed-after-rst-data",
        lambda c: c.request(1, post(), False) + c.send(rst_stream(1, 8)) + c.data(1, b"test", True),
        1,
        STREAM_CLOSED,
    ),
    (
        "closed-after-rst-headers",
        lambda c: c.request(1, post(), False) + c.send(rst_stream(1, 8)) + c.request(1),
        1,
        STREAM_CLOSED,
    ),
    (
        "closed-after-rst-continuation",
        lambda c: (
            c.request(1, post(), False)
            + c.send(rst_stream(1, 8))
            + c.send(frame(CONTINUATION, END_HEADERS, 1, b"\x88"))
        ),
        None,
        PROTOCOL_ERROR,
    ),
    # §5.1 closed after END_STREAM both ways [5.1/11-13]
    (
        "closed-data",
        lambda c: (_closed_by_both_ends(c), c.data(1, b"test", True))[1],
        None,
        STREAM_CLOSED,
    ),
    ("closed-headers", lambda c: (_closed_by_both_ends(c), c.request(1))[1], None, STREAM_CLOSED),
    # §5.1.2 concurrency [5.1.2/1]
    (
        "over-max-concurrent-streams",
        lambda c: c.send(b"".join(c.headers(sid, GET) for sid in range(1, 203, 2))),
        201,
        REFUSED_STREAM,
    ),
    # §5.3.1 / §6.3 PRIORITY [5.3.1/1, 5.3.1/2, 6.3/1, 6.3/2]
    (
        "headers-depends-on-itself",
        lambda c: c.send(
            frame(
                HEADERS,
                END_HEADERS | END_STREAM | PRIORITY_FLAG,
                1,
                struct.pack(">LB", 1, 15) + c.block(GET),
            )
        ),
        1,
        PROTOCOL_ERROR,
    ),
    ("priority-depends-on-itself", lambda c: c.send(priority(1, 1)), 1, PROTOCOL_ERROR),
    ("priority-on-stream-0", lambda c: c.send(priority(0, 1)), None, PROTOCOL_ERROR),
    (
        "priority-length-4",
        lambda c: c.request(1) + c.send(frame(PRIORITY, 0, 1, b"\x80\x00\x00\x01")),
        1,
        FRAME_SIZE_ERROR,
    ),
    # §6.1 / §6.2 padding [6.1/3, 6.2/4]
    (
        "data-pad-length-too-long",
        lambda c: c.request(1, post(), False) + c.send(frame(DATA, PADDED, 1, b"\x06abcde")),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "data-padded-without-pad-length",
        lambda c: c.request(1, post(), False) + c.send(frame(DATA, PADDED, 1)),
        None,
        FRAME_SIZE_ERROR,
    ),
    (
        "headers-pad-length-too-long",
        lambda c: c.send(frame(HEADERS, END_HEADERS | PADDED, 1, b"\x10" + c.block(GET))),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "headers-priority-too-short",
        lambda c: c.send(frame(HEADERS, END_HEADERS | PRIORITY_FLAG, 1, b"\x00\x00")),
        None,
        FRAME_SIZE_ERROR,
    ),
    ("data-on-stream-0", lambda c: c.send(frame(DATA, 0, 0, b"x")), None, PROTOCOL_ERROR),
    # §4.3 / §6.10 CONTINUATION sequencing [4.3/2, 4.3/3, 5.5/2, 6.2/1, 6.2/2, 6.10/2-6]
    (
        "priority-inside-a-header-block",
        lambda c: c.send(_open_block(c) + priority(1, 0)),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "headers-other-stream-inside-block",
        lambda c: c.send(_open_block(c) + c.headers(3, GET)),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "data-inside-a-header-block",
        lambda c: c.send(_open_block(c) + frame(DATA, 0, 1, b"x")),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "unknown-frame-inside-a-header-block",
        lambda c: c.send(_open_block(c) + frame(0x16, 0, 0, b"x")),
        None,
        PROTOCOL_ERROR,
    ),
    ("ping-inside-a-header-block", lambda c: c.send(_open_block(c) + ping()), None, PROTOCOL_ERROR),
    (
        "continuation-other-stream",
        lambda c: c.send(_open_block(c) + frame(CONTINUATION, END_HEADERS, 3, b"")),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "continuation-stream-0",
        lambda c: c.send(_open_block(c) + frame(CONTINUATION, END_HEADERS, 0, b"")),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "continuation-after-end-headers",
        lambda c: c.request(1) + c.send(frame(CONTINUATION, END_HEADERS, 1, b"")),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "continuation-after-data",
        lambda c: (
            c.request(1, post(), False)
            + c.data(1, b"x")
            + c.send(frame(CONTINUATION, END_HEADERS, 1, b""))
        ),
        None,
        PROTOCOL_ERROR,
    ),
    # §6.5 SETTINGS [6.5/1-3, 6.5.2/1-4]
    (
        "settings-ack-with-payload",
        lambda c: c.send(frame(SETTINGS, ACK, 0, b"\x00" * 6)),
        None,
        FRAME_SIZE_ERROR,
    ),
    ("settings-on-a-stream", lambda c: c.send(frame(SETTINGS, 0, 1)), None, PROTOCOL_ERROR),
    (
        "settings-length-not-multiple-of-6",
        lambda c: c.send(frame(SETTINGS, 0, 0, b"\x00\x03\x00")),
        None,
        FRAME_SIZE_ERROR,
    ),
    (
        "enable-push-2",
        lambda c: c.send(_settings(settings_payload(enable_push=2))),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "initial-window-above-max",
        lambda c: c.send(_settings(settings_payload(initial_window_size=2**31))),
        None,
        FLOW_CONTROL_ERROR,
    ),
    (
        "max-frame-size-below-16384",
        lambda c: c.send(_settings(settings_payload(max_frame_size=16383))),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "max-frame-size-above-2^24-1",
        lambda c: c.send(_settings(settings_payload(max_frame_size=2**24))),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "enable-connect-protocol-2",
        lambda c: c.send(_settings(struct.pack(">HL", 8, 2))),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "initial-window-change-overflows-a-stream",
        lambda c: (
            c.request(1)
            + c.send(
                window_update(1, 2**31 - 1 - 65535)
                + _settings(settings_payload(initial_window_size=65536))
            )
        ),
        None,
        FLOW_CONTROL_ERROR,
    ),
    # §6.9 WINDOW_UPDATE [6.9/1-3, 6.9.1/2-3]
    ("window-update-0-on-connection", lambda c: c.send(window_update(0, 0)), None, PROTOCOL_ERROR),
    (
        "window-update-0-on-stream",
        lambda c: c.request(1) + c.send(window_update(1, 0)),
        1,
        PROTOCOL_ERROR,
    ),
    (
        "window-update-length-3",
        lambda c: c.send(frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")),
        None,
        FRAME_SIZE_ERROR,
    ),
    (
        "connection-window-above-max",
        lambda c: c.send(window_update(0, 2**31 - 1) + window_update(0, 2**31 - 1)),
        None,
        FLOW_CONTROL_ERROR,
    ),
    (
        "stream-window-above-max",
        lambda c: (
            c.request(1, post(), False)
            + c.send(window_update(1, 2**31 - 1) + window_update(1, 2**31 - 1))
        ),
        1,
        FLOW_CONTROL_ERROR,
    ),
    # §6.7 PING [5.4.1/1, 6.7/3, 6.7/4]
    ("ping-length-6", lambda c: c.send(frame(PING, 0, 0, b"123456")), None, FRAME_SIZE_ERROR),
    ("ping-on-a-stream", lambda c: c.send(frame(PING, 0, 1, b"12345678")), None, PROTOCOL_ERROR),
    # §6.8 GOAWAY [6.8/1], §6.4 RST_STREAM [6.4/1, 6.4/3]
    (
        "goaway-on-a-stream",
        lambda c: c.send(frame(GOAWAY, 0, 1, b"\x00" * 8)),
        None,
        PROTOCOL_ERROR,
    ),
    (
        "goaway-too-short",
        lambda c: c.send(frame(GOAWAY, 0, 0, b"\x00" * 7)),
        None,
        FRAME_SIZE_ERROR,
    ),
    ("rst-on-stream-0", lambda c: c.send(rst_stream(0, 8)), None, PROTOCOL_ERROR),
    (
        "rst-length-3",
        lambda c: c.request(1) + c.send(frame(RST_STREAM, 0, 1, b"\x00\x00\x08")),
        None,
        FRAME_SIZE_ERROR,
    ),
    # §8.4 a client cannot push [8.2/1]
    (
        "push-promise-from-client",
        lambda c: (
            c.request(1)
            + c.send(frame(PUSH_PROMISE, END_HEADERS, 1, b"\x00\x00\x00\x02" + c.block(GET)))
        ),
        None,
        PROTOCOL_ERROR,
    ),
    # §6.9.1 flow control of what we receive
    (
        "data-beyond-stream-window",
        lambda c: (
            c.request(1, post(), False)
            + c.send(
                b"".join(frame(DATA, 0, 1, b"x" * 16384) for _ in range(4))
                + frame(DATA, 0, 1, b"x" * 16384)
            )
        ),
        1,
        FLOW_CONTROL_ERROR,
    ),
    # §8.1 trailers and §8.1.1 content-length [8.1/1, 8.1.2.1/3, 8.1.2.6/1-2]
    (
        "trailers-without-end-stream",
        lambda c: (
            c.request(1, post(), False)
            + c.data(1, b"x")
            + c.send(c.headers(1, [(b"x-t", b"1")], False))
        ),
        1,
        PROTOCOL_ERROR,
    ),
    (
        "pseudo-header-in-trailers",
        lambda c: c.request(1, post(), False) + c.send(c.headers(1, [(b":method", b"POST")], True)),
        1,
        PROTOCOL_ERROR,
    ),
    (
        "content-length-exceeded",
        lambda c: c.request(1, post(1), False) + c.data(1, b"test", True),
        1,
        PROTOCOL_ERROR,
    ),
    (
        "content-length-exceeded-over-frames",
        lambda c: c.request(1, post(5), False) + c.data(1, b"test") + c.data(1, b"test", True),
        1,
        PROTOCOL_ERROR,
    ),
    (
        "content-length-not-reached",
        lambda c: c.request(1, post(10), False) + c.data(1, b"test", True),
        1,
        PROTOCOL_ERROR,
    ),
    (
        "content-length-not-reached-at-trailers",
        lambda c: (
            c.request(1, post(10), False)
            + c.data(1, b"test")
            + c.send(c.headers(1, [(b"x-t", b"1")]))
        ),
        1,
        PROTOCOL_ERROR,
    ),
    ("content-length-without-body", lambda c: c.request(1, post(10), True), 1, PROTOCOL_ERROR),
]


@pytest.mark.parametrize(
    ("case", "stream_id", "code"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_protocol_error_has_its_code(case: Case, stream_id: int | None, code: int) -> None:
    client = Client()
    client.start()
    events = case(client)
    if stream_id is None:
        assert_connection_error(client, events, code)
    else:
        assert_stream_error(client, stream_id, code)
        # The connection goes on.
        assert client.send(ping(b"pingpong")) == []
        assert client.frames(hf.PingFrame)[-1].opaque_data == b"pingpong"


def test_stream_error_on_a_started_stream_reports_stream_reset() -> None:
    client = Client()
    client.start()
    events = client.request(1, post(1), False) + client.data(1, b"too long")
    assert events == [ev.RequestReceived(1, post(1), False), ev.StreamReset(1, PROTOCOL_ERROR)]


def test_stream_error_before_the_app_started_reports_nothing() -> None:
    client = Client()
    client.start()
    assert client.request(1, [*GET, (b"connection", b"close")]) == []
    assert_stream_error(client, 1, PROTOCOL_ERROR)


def test_connection_error_reports_the_last_stream_processed() -> None:
    client = Client()
    client.start()
    client.request(1)
    client.request(3)
    events = client.send(ping(b"short"))
    assert client.goaway() == (3, FRAME_SIZE_ERROR)
    assert events == [ev.ConnectionTerminated(FRAME_SIZE_ERROR, 3, "PING length is not 8")]
    assert client.frames(hf.GoAwayFrame)[0].additional_data == b"PING length is not 8"


@pytest.mark.parametrize(
    "wire",
    [
        b"INVALID CONNECTION PREFACE\r\n\r\n",  # [3.5/2]
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + ping(),  # the first frame is not SETTINGS
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(SETTINGS, ACK, 0),
        b"GET / HTTP/1.1\r\n\r\n",
    ],
    ids=["garbage", "ping-first", "settings-ack-first", "http1"],
)
def test_invalid_preface_is_a_protocol_error_after_our_settings(wire: bytes) -> None:
    client = Client()
    client.server.initiate()
    events = client.send(wire)
    assert isinstance(client.sent[0].frame, hf.SettingsFrame)  # our preface still goes first
    assert_connection_error(client, events, PROTOCOL_ERROR)


# -- what must be accepted (h2spec's "generic" and "ignore" cases) -------------------------


ACCEPTED: list[tuple[str, Case]] = [
    ("unknown-frame-type", lambda c: c.send(frame(0x16, 0, 0, b"\x00" * 8))),  # [4.1/1]
    ("undefined-flags", lambda c: c.send(frame(PING, 0x16, 0, b"\x00" * 8))),  # [4.1/2]
    ("reserved-bit", lambda c: c.send(frame(PING, 0, 0x80000000, b"\x00" * 8))),  # [4.1/3]
    (
        "data-of-16384",
        lambda c: c.request(1, post(), False) + c.data(1, b"x" * 16384, True),
    ),  # [4.2/1]
    ("priority-on-idle", lambda c: c.send(priority(1, 0))),  # [generic 2/1]
    (
        "priority-on-idle-then-lower-stream",
        lambda c: c.send(priority(3, 0)) + c.request(1),
    ),  # [3.3/5]
    ("window-update-half-closed-remote", lambda c: c.request(1) + c.send(window_update(1, 1))),
    ("priority-half-closed-remote", lambda c: c.request(1) + c.send(priority(1, 0))),
    ("rst-half-closed-remote", lambda c: c.request(1) + c.send(rst_stream(1, 8))),
    ("priority-on-closed", lambda c: (_closed_by_both_ends(c), c.send(priority(1, 0)))[1]),
    (
        "window-update-after-our-end-stream",
        lambda c: (_closed_by_both_ends(c), c.send(window_update(1, 9)))[1],
    ),
    ("rst-after-our-end-stream", lambda c: (_closed_by_both_ends(c), c.send(rst_stream(1, 0)))[1]),
    ("unknown-setting", lambda c: c.send(_settings(struct.pack(">HL", 0xFF, 1)))),  # [6.5.2/5]
    (
        "goaway-unknown-code",
        lambda c: c.send(frame(GOAWAY, 0, 0, struct.pack(">LL", 0, 0xFF))),
    ),  # [7/1]
    ("rst-unknown-code", lambda c: c.request(1) + c.send(rst_stream(1, 0xFF))),  # [7/2]
    ("ping-ack-not-answered", lambda c: c.send(ping(flags=ACK))),  # [6.7/2]
    ("get-with-content-length-0", lambda c: c.request(1, [*GET, (b"content-length", b"0")])),
    (
        "empty-continuation-then-end",
        lambda c: c.send(
            _open_block(c) + frame(CONTINUATION, 0, 1) + frame(CONTINUATION, END_HEADERS, 1)
        ),
    ),
]


@pytest.mark.parametrize("case", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepted_without_error(case: Case) -> None:
    client = Client()
    client.start()
    case(client)
    client.send(ping(b"pingpong"))
    assert not client.frames(hf.GoAwayFrame), client.sent
    assert client.resets() == {}, client.sent
    assert client.frames(hf.PingFrame)[-1].opaque_data == b"pingpong"


def test_ping_ack_is_not_answered() -> None:
    client = Client()
    client.start()
    client.sent.clear()
    client.send(ping(flags=ACK))
    assert client.sent == []


def test_ping_is_answered_with_its_payload_exact_bytes() -> None:
    client = Client()
    client.start()
    client.server.data_to_send()
    client.server.receive_data(ping(b"\x01\x02\x03\x04\x05\x06\x07\x08"))
    assert (
        client.server.data_to_send()
        == b"\x00\x00\x08\x06\x01\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08"
    )


def test_data_beyond_the_connection_window_is_a_connection_error() -> None:
    client = Client(connection_window_size=65535, initial_window_size=100000)
    client.start()
    client.request(1, post(), False)
    client.request(3, post(), False)
    events = client.send(b"".join(frame(DATA, 0, 1, b"x" * 16384) for _ in range(2)))
    events += client.send(b"".join(frame(DATA, 0, 3, b"x" * 16384) for _ in range(2)))
    assert_connection_error(client, events, FLOW_CONTROL_ERROR)


def test_data_after_our_reset_still_gives_the_connection_window_back() -> None:
    client = Client(connection_window_size=65535)
    client.start()
    client.request(1, post(), False)
    client.server.reset_stream(1, 8)
    client.sent.clear()
    for _ in range(3):
        assert client.data(1, b"x" * 16000) == []
    assert [(f.stream_id, f.window_increment) for f in client.frames(hf.WindowUpdateFrame)] == [
        (0, 48000)
    ]


def test_preface_alone_is_not_an_error() -> None:
    client = Client(H2Config())
    client.server.initiate()
    assert client.send(PREFACE) == []
    assert not client.frames(hf.GoAwayFrame)
