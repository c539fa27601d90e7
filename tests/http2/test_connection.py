"""connection.py: the sans-I/O HTTP/2 server connection, exchange by exchange (RFC 9113).

No event loop: bytes in, events and bytes out. The peer is the ``h2``
library's client (a complete, independent implementation) where the exchange
is ordinary, and ``h2_support.Client`` (raw frames, ``hpack`` and
``hyperframe`` to read ours) where exact bytes or frames matter.
"""

from __future__ import annotations

import struct

import h2.config
import h2.connection
import h2.events
import h2.settings
import hyperframe.frame as hf
import pytest

from sluiceway.errors import InvalidState
from sluiceway.http2 import events as ev
from sluiceway.http2.connection import (
    ConnectionState,
    H2Config,
    H2Connection,
    StreamClosedError,
)
from sluiceway.http2.frames import decode_http2_settings

from .h2_support import (
    ACK,
    CONTINUATION,
    END_HEADERS,
    GET,
    HEADERS,
    NO_ERROR,
    PREFACE,
    SETTINGS,
    Client,
    frame,
    post,
    rst_stream,
    settings_payload,
    window_update,
)

OK = [(b":status", b"200")]


class H2Client:
    """The h2 library as the client, wired to one of our connections."""

    def __init__(self, config: H2Config | None = None, **client_settings: int) -> None:
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(cfg)
        codes = {name: getattr(h2.settings.SettingCodes, name.upper()) for name in client_settings}
        self.h2.local_settings = h2.settings.Settings(
            client=True, initial_values={codes[k]: v for k, v in client_settings.items()}
        )
        self.h2.initiate_connection()
        self.server = H2Connection(config or H2Config())
        self.server.initiate()
        self.events = self.to_server()
        self.client_events = self.to_client()

    def to_server(self) -> list[ev.Event]:
        return self.server.receive_data(self.h2.data_to_send())

    def to_client(self) -> list[h2.events.Event]:
        return self.h2.receive_data(self.server.data_to_send())

    def exchange(self) -> tuple[list[ev.Event], list[h2.events.Event]]:
        """Run both ways until neither side has anything to send."""
        server_events: list[ev.Event] = []
        client_events: list[h2.events.Event] = []
        while True:
            client_events += self.to_client()
            if not self.h2.data_to_send(0) and not self.server._out:
                return server_events, client_events
            server_events += self.to_server()


def of(kind: type, events: list) -> list:
    return [e for e in events if isinstance(e, kind)]


# -- the start of a connection -----------------------------------------------------------


def test_server_preface_is_settings_then_connection_window_update_exact_bytes() -> None:
    conn = H2Connection(H2Config())
    conn.initiate()
    assert conn.data_to_send() == (
        # SETTINGS: MAX_CONCURRENT_STREAMS 100, MAX_HEADER_LIST_SIZE 65536,
        # ENABLE_CONNECT_PROTOCOL 1
        b"\x00\x00\x12\x04\x00\x00\x00\x00\x00"
        b"\x00\x03\x00\x00\x00\x64"
        b"\x00\x06\x00\x01\x00\x00"
        b"\x00\x08\x00\x00\x00\x01"
        # WINDOW_UPDATE stream 0: 1 MiB - 65535
        b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + struct.pack(">L", (1 << 20) - 65535)
    )
    assert conn.state is ConnectionState.AWAITING_PREFACE


def test_non_default_settings_are_announced() -> None:
    conn = H2Connection(
        H2Config(
            initial_window_size=1000,
            max_frame_size=32768,
            header_table_size=0,
            enable_connect_protocol=False,
            connection_window_size=65535,
        )
    )
    conn.initiate()
    sent = conn.data_to_send()
    f, length = hf.Frame.parse_frame_header(memoryview(sent[:9]))
    f.parse_body(memoryview(sent[9 : 9 + length]))
    assert f.settings == {3: 100, 4: 1000, 5: 32768, 1: 0, 6: 65536}
    assert len(sent) == 9 + length  # no WINDOW_UPDATE for a 65,535 window


def test_preface_and_first_frames_may_arrive_byte_by_byte() -> None:
    client = Client()
    client.server.initiate()
    wire = PREFACE + frame(SETTINGS, 0, 0) + client.headers(1, GET)
    events = []
    for i in range(len(wire)):
        events += client.server.receive_data(wire[i : i + 1])
    assert events == [ev.RequestReceived(1, GET, True)]
    assert client.server.state is ConnectionState.OPEN


def test_preface_received_by_the_caller_is_not_expected_again() -> None:
    client = Client()
    client.server.initiate(preface_received=PREFACE[:16])
    events = client.server.receive_data(
        PREFACE[16:] + frame(SETTINGS, 0, 0) + client.headers(1, GET)
    )
    assert events == [ev.RequestReceived(1, GET, True)]
    with pytest.raises(ValueError):
        H2Connection(H2Config()).initiate(preface_received=b"GET / HTTP/1.1")


def test_initiate_once_and_before_receiving() -> None:
    conn = H2Connection(H2Config())
    with pytest.raises(InvalidState):
        conn.receive_data(PREFACE)
    conn.initiate()
    with pytest.raises(InvalidState):
        conn.initiate()


def test_each_settings_frame_is_acknowledged() -> None:
    client = Client()
    client.start(settings_payload(max_concurrent_streams=10))
    client.send(frame(SETTINGS, 0, 0, settings_payload(initial_window_size=1)))
    acks = [f for f in client.frames(hf.SettingsFrame) if "ACK" in f.flags]
    assert len(acks) == 2


# -- requests and responses ----------------------------------------------------------------


def test_get_request_and_response_with_the_h2_library() -> None:
    pair = H2Client()
    pair.h2.send_headers(1, GET, end_stream=True)
    events = pair.to_server()
    assert events == [ev.RequestReceived(1, GET, True)]
    pair.server.send_headers(1, [*OK, (b"content-type", b"text/plain")])
    assert pair.server.send_data(1, b"hello", end_stream=True) == 5
    client_events = pair.to_client()
    response = of(h2.events.ResponseReceived, client_events)[0]
    assert response.headers == [(b":status", b"200"), (b"content-type", b"text/plain")]
    assert of(h2.events.DataReceived, client_events)[0].data == b"hello"
    assert of(h2.events.StreamEnded, client_events)[0].stream_id == 1
    assert pair.server.open_stream_count == 0
    assert not pair.server.stream_is_open(1)


def test_small_response_head_and_body_leave_in_one_bytes_exactly() -> None:
    client = Client()
    client.start()
    client.request(1)
    client.server.send_headers(1, OK)
    client.server.send_data(1, b"hi", end_stream=True)
    # :status 200 is static index 8: one byte, 0x88.
    assert client.server.data_to_send() == (
        b"\x00\x00\x01\x01\x04\x00\x00\x00\x01\x88" + b"\x00\x00\x02\x00\x01\x00\x00\x00\x01hi"
    )


def test_many_requests_in_one_read_each_answered() -> None:
    client = Client()
    client.start()
    wire = b"".join(client.headers(sid, GET) for sid in range(1, 64, 2))
    events = client.send(wire)
    assert [e.stream_id for e in events] == list(range(1, 64, 2))
    for e in events:
        client.server.send_headers(e.stream_id, OK)
        client.server.send_data(e.stream_id, b"x", end_stream=True)
    client.read()
    assert sorted(client.responses()) == list(range(1, 64, 2))
    assert client.server.open_stream_count == 0


def test_post_body_and_window_replenished_only_as_the_app_reads() -> None:
    client = Client()
    client.start()
    client.sent.clear()  # the preface's WINDOW_UPDATE
    events = client.request(1, post(), end_stream=False)
    assert events == [ev.RequestReceived(1, post(), False)]
    chunk = b"a" * 16384
    for _ in range(3):
        (event,) = client.data(1, chunk)
        assert event == ev.DataReceived(1, chunk, 16384, False)
    # The app has read nothing: no window is given back (a slow app holds at
    # most one window of body).
    assert not client.frames(hf.WindowUpdateFrame)
    client.server.acknowledge_received_data(1, 16384)
    client.read()
    assert not client.frames(hf.WindowUpdateFrame)  # under half the window: batched
    client.server.acknowledge_received_data(1, 2 * 16384)
    client.read()
    updates = {f.stream_id: f.window_increment for f in client.frames(hf.WindowUpdateFrame)}
    assert updates == {1: 3 * 16384}  # the connection's waits for half of its 1 MiB
    (event,) = client.data(1, b"end", end_stream=True)
    assert event == ev.DataReceived(1, b"end", 3, True)


def test_connection_window_update_once_half_of_it_is_consumed() -> None:
    client = Client()
    client.start()
    client.sent.clear()
    sent = 0
    stream_id = 1
    while sent < (1 << 19):
        client.request(stream_id, post(), end_stream=False)
        for _ in range(4):
            client.data(stream_id, b"b" * 16384)
            client.server.acknowledge_received_data(stream_id, 16384)
            sent += 16384
        client.data(stream_id, b"", end_stream=True)
        stream_id += 2
    connection_updates = [
        f.window_increment for f in client.frames(hf.WindowUpdateFrame) if f.stream_id == 0
    ]
    assert connection_updates == [1 << 19]


def test_unread_body_of_a_reset_stream_is_given_back_to_the_connection() -> None:
    client = Client(connection_window_size=65535)
    client.start()
    client.request(1, post(), end_stream=False)
    for _ in range(4):
        client.data(1, b"c" * 10000)
    client.send(rst_stream(1, 0x8))  # the app never read it
    updates = {f.stream_id: f.window_increment for f in client.frames(hf.WindowUpdateFrame)}
    assert updates == {0: 40000}


def test_padding_counts_against_the_windows_and_is_reported() -> None:
    client = Client()
    client.start()
    client.request(1, post(), end_stream=False)
    payload = bytes([10]) + b"data" + b"\x00" * 10
    (event,) = client.send(frame(0, 0x8 | 0x1, 1, payload))
    assert event == ev.DataReceived(1, b"data", 15, True)


def test_request_trailers_end_the_body() -> None:
    client = Client()
    client.start()
    client.request(1, post(4), end_stream=False)
    client.data(1, b"body")
    trailers = [(b"x-checksum", b"abc")]
    events = client.send(client.headers(1, trailers, end_stream=True))
    assert events == [ev.TrailersReceived(1, trailers)]
    client.server.send_headers(1, OK, end_stream=True)
    assert client.server.open_stream_count == 0


def test_response_trailers_after_the_body() -> None:
    pair = H2Client()
    pair.h2.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.server.send_headers(1, [*OK, (b"trailer", b"x-sum")])
    pair.server.send_data(1, b"body")
    pair.server.send_headers(1, [(b"x-sum", b"1")], end_stream=True)
    client_events = pair.to_client()
    assert of(h2.events.TrailersReceived, client_events)[0].headers == [(b"x-sum", b"1")]
    with pytest.raises(StreamClosedError):
        pair.server.send_data(1, b"more")


def test_early_hints_then_the_final_head() -> None:
    pair = H2Client()
    pair.h2.send_headers(1, GET, end_stream=True)
    pair.to_server()
    pair.server.send_headers(1, [(b":status", b"103"), (b"link", b"</s.css>; rel=preload")])
    pair.server.send_headers(1, [(b":status", b"100")])
    pair.server.send_headers(1, OK)
    pair.server.send_data(1, b"", end_stream=True)
    client_events = pair.to_client()
    informational = of(h2.events.InformationalResponseReceived, client_events)
    assert [e.headers[0] for e in informational] == [(b":status", b"103"), (b":status", b"100")]
    assert of(h2.events.ResponseReceived, client_events)[0].headers == OK
    assert of(h2.events.StreamEnded, client_events)


@pytest.mark.parametrize(
    ("heads", "end_stream"),
    [
        ([[(b"content-type", b"x")]], False),  # no :status first
        ([[(b":status", b"103")]], True),  # a 1xx cannot end the stream
        ([[(b":status", b"101")]], False),  # §8.6: no 101 in HTTP/2
        ([OK, [(b"x-trailer", b"1")]], False),  # trailers must end the stream
    ],
)
def test_send_headers_misuse_raises(heads: list, end_stream: bool) -> None:
    client = Client()
    client.start()
    client.request(1)
    for head in heads[:-1]:
        client.server.send_headers(1, head)
    with pytest.raises(InvalidState):
        client.server.send_headers(1, heads[-1], end_stream)


def test_data_before_the_final_head_raises() -> None:
    client = Client()
    client.start()
    client.request(1)
    client.server.send_headers(1, [(b":status", b"103")])
    with pytest.raises(InvalidState):
        client.server.send_data(1, b"x")


def test_sends_after_our_end_stream_or_on_unknown_streams_raise() -> None:
    client = Client()
    client.start()
    client.request(1, post(), end_stream=False)
    client.server.send_headers(1, OK, end_stream=True)  # half-closed (local)
    with pytest.raises(StreamClosedError):
        client.server.send_headers(1, [(b"x", b"y")], end_stream=True)
    with pytest.raises(StreamClosedError):
        client.server.send_data(7, b"x")


def test_sends_on_a_stream_reset_in_the_same_read_are_dropped() -> None:
    client = Client()
    client.start()
    # One read: the request, then the client's RST_STREAM.
    events = client.send(client.headers(1, GET) + rst_stream(1, 0x8))
    assert events == [ev.RequestReceived(1, GET, True), ev.StreamReset(1, 0x8)]
    # The adapter answers the request before it sees the reset: dropped, no error.
    client.server.send_headers(1, OK)
    assert client.server.send_data(1, b"late", end_stream=True) == 4
    assert client.read() == []


def test_large_response_head_is_split_into_continuation_frames() -> None:
    client = Client()
    client.start()
    client.request(1)
    big = [*OK, *[(b"x-h%d" % i, b"v" * 1000) for i in range(40)]]
    client.server.send_headers(1, big, end_stream=True)
    frames = client.read()
    assert [type(s.frame) for s in frames] == [
        hf.HeadersFrame,
        hf.ContinuationFrame,
        hf.ContinuationFrame,
    ]
    assert all(len(s.frame.data) <= 16384 for s in frames)
    assert "END_HEADERS" not in frames[0].frame.flags and "END_STREAM" in frames[0].frame.flags
    assert "END_HEADERS" in frames[-1].frame.flags
    assert frames[0].fields == big


def test_continuation_frames_are_assembled_into_one_request() -> None:
    client = Client()
    client.start()
    fields = [*GET, (b"x-big", b"q" * 30000)]
    block = client.block(fields)
    wire = (
        frame(HEADERS, 0x1, 1, block[:10])
        + frame(CONTINUATION, 0, 1, block[10:16000])
        + frame(CONTINUATION, 0, 1, block[16000:16000])
        + frame(CONTINUATION, END_HEADERS, 1, block[16000:])
    )
    assert client.send(wire) == [ev.RequestReceived(1, fields, True)]


# -- flow control on the send side ---------------------------------------------------------------


def test_send_data_takes_what_the_windows_allow_and_window_opened_says_when_to_go_on() -> None:
    client = Client()
    client.start(settings_payload(initial_window_size=10))
    client.request(1)
    client.server.send_headers(1, OK)
    assert client.server.send_window(1) == 10
    assert client.server.send_data(1, b"0123456789abcdef", end_stream=True) == 10
    assert client.server.send_data(1, b"abcdef", end_stream=True) == 0
    assert client.server.send_window(1) == 0
    frames = client.read()
    assert [(len(s.frame.data), s.frame.flags) for s in frames[1:]] == [(10, set())]
    assert client.send(window_update(1, 100)) == [ev.WindowOpened(1)]
    assert client.server.send_data(1, b"abcdef", end_stream=True) == 6
    client.read()
    assert client.body(1) == b"0123456789" + b"abcdef"
    assert "END_STREAM" in client.frames(hf.DataFrame)[-1].flags


def test_connection_window_limits_every_stream_and_window_opened_0_wakes_them() -> None:
    client = Client()
    client.start(settings_payload(initial_window_size=1 << 20))
    client.request(1)
    client.request(3)
    client.server.send_headers(1, OK)
    client.server.send_headers(3, OK)
    assert client.server.send_data(1, b"a" * 60000) == 60000
    assert client.server.send_data(3, b"b" * 10000) == 5535  # the connection's 65,535 is spent
    assert client.server.send_window(3) == 0
    assert client.send(window_update(0, 1000)) == [ev.WindowOpened(0)]
    assert client.server.send_window(1) == 1000
    assert client.send(window_update(0, 1000)) == []  # no sender could have waited on it


def test_data_frames_are_split_at_the_peers_max_frame_size() -> None:
    client = Client()
    client.start(settings_payload(initial_window_size=100000, max_frame_size=20000))
    client.send(window_update(0, 100000))
    client.request(1)
    client.server.send_headers(1, OK)
    assert client.server.send_data(1, b"z" * 50000, end_stream=True) == 50000
    client.read()
    data = client.frames(hf.DataFrame)
    assert [len(f.data) for f in data] == [20000, 20000, 10000]
    assert ["END_STREAM" in f.flags for f in data] == [False, False, True]


def test_initial_window_change_applies_to_open_streams_and_may_go_negative() -> None:
    # RFC 9113 §6.9.2 (h2spec 6.9.2/2): 3, send 3, then 2: the window is -1.
    client = Client()
    client.start(settings_payload(initial_window_size=3))
    client.request(1)
    client.server.send_headers(1, OK)
    assert client.server.send_data(1, b"hello") == 3
    client.send(frame(SETTINGS, 0, 0, settings_payload(initial_window_size=2)))
    assert client.server.send_window(1) == 0
    assert client.send(window_update(1, 1)) == []  # -1 + 1 = 0: still shut
    assert client.send(window_update(1, 1)) == [ev.WindowOpened(1)]
    assert client.server.send_data(1, b"lo") == 1
    events = client.send(frame(SETTINGS, 0, 0, settings_payload(initial_window_size=100)))
    assert events == [ev.WindowOpened(1)]
    assert client.server.send_window(1) == 98


def test_an_empty_end_stream_data_frame_needs_no_window() -> None:
    client = Client()
    client.start(settings_payload(initial_window_size=0))
    client.request(1)
    client.server.send_headers(1, OK)
    assert client.server.send_data(1, b"", end_stream=True) == 0
    assert "END_STREAM" in client.read()[-1].frame.flags
    assert client.server.open_stream_count == 0


# -- resets, push, shutdown, upgrade ---------------------------------------------------------------


def test_peer_reset_reports_stream_reset_and_reset_stream_sends_ours() -> None:
    client = Client()
    client.start()
    client.request(1)
    client.request(3)
    assert client.send(rst_stream(1, 0x8)) == [ev.StreamReset(1, 0x8)]
    client.server.reset_stream(3, 0x2)
    client.server.reset_stream(3, 0x2)  # already gone: nothing more
    assert client.read()[-1].frame.error_code == 0x2
    assert client.resets() == {3: 0x2}
    assert client.server.open_stream_count == 0


def test_push_promise_when_the_client_allows_it() -> None:
    pair = H2Client()
    pair.h2.send_headers(1, GET, end_stream=True)
    pair.to_server()
    promised_request = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"example.com"),
        (b":path", b"/s.css"),
    ]
    promised = pair.server.push_promise(1, promised_request)
    assert promised == 2
    pair.server.send_headers(1, OK)
    pair.server.send_data(1, b"page", end_stream=True)
    pair.server.send_headers(2, OK)
    pair.server.send_data(2, b"css", end_stream=True)
    client_events = pair.to_client()
    pushed = of(h2.events.PushedStreamReceived, client_events)[0]
    assert (pushed.pushed_stream_id, pushed.parent_stream_id) == (2, 1)
    assert pushed.headers == promised_request
    assert [e.data for e in of(h2.events.DataReceived, client_events)] == [b"page", b"css"]
    with pytest.raises(StreamClosedError):  # the parent is closed now
        pair.server.push_promise(1, promised_request)


def test_push_promise_is_none_when_push_is_disabled() -> None:
    pair = H2Client(enable_push=0)
    pair.h2.send_headers(1, GET, end_stream=True)
    pair.to_server()
    assert pair.server.push_promise(1, GET) is None
    pair = H2Client(config=H2Config(enable_push=False))
    pair.h2.send_headers(1, GET, end_stream=True)
    pair.to_server()
    assert pair.server.push_promise(1, GET) is None
    assert pair.server.data_to_send() == b""


def test_client_cancelling_a_push_reports_stream_reset() -> None:
    client = Client()
    client.start()
    client.request(1)
    assert client.server.push_promise(1, GET) == 2
    assert client.send(rst_stream(2, 0x8)) == [ev.StreamReset(2, 0x8)]


def test_graceful_shutdown_goaway_carries_the_last_stream_and_later_streams_are_ignored() -> None:
    client = Client()
    client.start()
    client.request(1)
    client.request(3, post(), end_stream=False)
    client.server.start_graceful_shutdown()
    client.server.start_graceful_shutdown()  # once only
    client.read()
    assert client.server.state is ConnectionState.CLOSING
    assert client.goaway() == (3, NO_ERROR)
    assert client.request(5) == []  # after the GOAWAY: ignored, no RST_STREAM
    assert client.data(5, b"x", end_stream=True) == []
    assert client.resets() == {}
    # Streams it covers go on.
    assert client.data(3, b"body", end_stream=True) == [ev.DataReceived(3, b"body", 4, True)]
    client.server.send_headers(3, OK, end_stream=True)
    client.server.send_headers(1, OK, end_stream=True)
    assert client.server.open_stream_count == 0
    assert client.server.last_stream_id == 3


def test_close_sends_goaway_and_stops_everything() -> None:
    client = Client()
    client.start()
    client.request(1)
    client.server.close(0x2)
    client.read()
    assert client.goaway() == (1, 0x2)
    assert client.server.state is ConnectionState.CLOSED
    client.server.send_headers(1, OK)  # dropped: the connection is gone
    assert client.server.send_data(1, b"x") == 1
    assert client.server.data_to_send() == b""


def test_peer_goaway_is_reported() -> None:
    client = Client()
    client.start()
    events = client.send(frame(7, 0, 0, struct.pack(">LL", 0, 0) + b"bye"))
    assert events == [ev.ConnectionTerminated(0, 0, "bye")]


def test_h2c_upgrade_opens_stream_1_half_closed_remote_with_the_clients_settings() -> None:
    # The HTTP2-Settings header of an upgrade request: INITIAL_WINDOW_SIZE 5, base64url.
    import base64

    header = base64.urlsafe_b64encode(settings_payload(initial_window_size=5)).rstrip(b"=")
    client = Client()
    client.server.initiate(upgrade_settings=decode_http2_settings(header))
    assert client.server.open_stream_count == 1 and client.server.last_stream_id == 1
    events = client.send(PREFACE + frame(SETTINGS, 0, 0) + frame(SETTINGS, ACK, 0))
    assert events == []
    client.server.send_headers(1, OK)
    assert client.server.send_data(1, b"upgraded", end_stream=True) == 5
    # Stream 1 is half-closed (remote): HEADERS on it is a stream error, and
    # its app (the upgraded request's) must hear of it.
    assert client.request(1) == [ev.StreamReset(1, 0x5)]
    assert client.resets() == {1: 0x5}


def test_decode_http2_settings_rejects_bad_values() -> None:
    from sluiceway.http2.frames import H2ConnectionError

    assert decode_http2_settings(b"AAMAAABk") == b"\x00\x03\x00\x00\x00\x64"
    for bad in (b"AAMAAAB", b"!!!!"):
        with pytest.raises(H2ConnectionError):
            decode_http2_settings(bad)
    with pytest.raises(H2ConnectionError):
        H2Connection(H2Config()).initiate(upgrade_settings=b"\x00\x04")


def test_config_is_checked() -> None:
    for bad in (
        {"initial_window_size": 2**31},
        {"max_frame_size": 1000},
        {"connection_window_size": 100},
        {"max_concurrent_streams": 0},
        {"reset_budget": 0},
    ):
        with pytest.raises(ValueError):
            H2Config(**bad)  # type: ignore[arg-type]


# -- the HPACK context stays in step with the client's ------------------------------------------


def test_blocks_of_refused_and_reset_streams_are_still_decoded() -> None:
    # Each dropped block inserts a field into the client's dynamic table
    # (incremental indexing); later requests refer to those entries by index.
    client = Client(max_concurrent_streams=1)
    client.start()
    client.request(1, post(), end_stream=False)  # stays open: stream 3 will be refused
    refused = [*GET, (b"x-refused", b"1")]
    assert client.request(3, refused) == []
    assert client.resets() == {3: 0x7}
    client.server.reset_stream(1, 0x8)
    late_trailers = [(b"x-late", b"2")]
    assert client.send(client.headers(1, late_trailers)) == []  # in flight after our RST
    both = [*GET, (b"x-refused", b"1"), (b"x-late", b"2")]
    block = client.block(both)
    assert len(block) < 12  # every field is an index now
    assert client.send(frame(HEADERS, 0x5, 5, block)) == [ev.RequestReceived(5, both, True)]


def test_peer_header_table_size_is_honoured_by_our_encoder() -> None:
    # RFC 7541 §4.2: the peer allows no dynamic table; our encoder must say
    # so (a size update to 0 first) and never index a field.
    client = Client()
    client.start(struct.pack(">HL", 1, 0))
    for stream_id in (1, 3):
        client.request(stream_id)
        client.server.send_headers(stream_id, [*OK, (b"x-custom", b"value")], end_stream=True)
        (sent,) = client.read()
        assert sent.fields == [*OK, (b"x-custom", b"value")]
        if stream_id == 1:
            assert sent.frame.data[0] == 0x20  # dynamic table size update: 0
    assert len(client.decoder.header_table.dynamic_entries) == 0


def test_a_frame_split_over_reads_is_reported_once_whole() -> None:
    client = Client()
    client.start()
    client.request(1, post(), end_stream=False)
    wire = frame(0, 0x1, 1, b"d" * 16384)
    assert client.send(wire[:5]) == []
    assert client.send(wire[5:9000]) == []
    assert client.send(wire[9000:]) == [ev.DataReceived(1, b"d" * 16384, 16384, True)]


def test_pushes_stop_at_the_clients_max_concurrent_streams() -> None:
    client = Client()
    client.start(settings_payload(max_concurrent_streams=1))
    client.request(1)
    assert client.server.push_promise(1, GET) == 2
    assert client.server.push_promise(1, GET) is None
    client.server.send_headers(2, OK, end_stream=True)  # the pushed stream closes
    assert client.server.push_promise(1, GET) == 4
