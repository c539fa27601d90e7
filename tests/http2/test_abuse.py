"""connection.py and limits.py: the abuse budgets, one regression test per attack.

Every attack here is cheap for the client and costly for a server that does
not bound it; each must end in GOAWAY ENHANCE_YOUR_CALM (or, for an oversized
header list, a 431 that keeps the connection in sync), while a client doing
the same thing at an honest rate between real requests is never cut off.
"""

from __future__ import annotations

from collections.abc import Callable

import hyperframe.frame as hf
import pytest

from sluiceway.http2 import events as ev
from sluiceway.http2.connection import H2Config

from .h2_support import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    GET,
    HEADERS,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    SETTINGS,
    Client,
    assert_connection_error,
    frame,
    ping,
    post,
    priority,
    rst_stream,
    window_update,
)

OK = [(b":status", b"200")]
Step = Callable[[Client, int], list[ev.Event]]


def answer(client: Client, stream_id: int) -> None:
    client.server.send_headers(stream_id, OK, end_stream=True)


# -- resets ---------------------------------------------------------------------------------------


def test_rapid_reset_cve_2023_44487_is_cut_off_at_the_reset_budget() -> None:
    client = Client()  # the default budget: 200
    client.start()
    events: list[ev.Event] = []
    for stream_id in range(1, 2 * 200, 2):
        events += client.send(client.headers(stream_id, GET) + rst_stream(stream_id, 0x8))
    assert not client.frames(hf.GoAwayFrame)
    assert len([e for e in events if isinstance(e, ev.RequestReceived)]) == 200
    events = client.send(client.headers(401, GET) + rst_stream(401, 0x8))
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


def test_rapid_reset_budget_is_refunded_by_completed_requests() -> None:
    client = Client(reset_budget=10)
    client.start()
    for stream_id in range(1, 4 * 1000, 4):  # one reset per completed request, 1000 times
        client.request(stream_id)
        answer(client, stream_id)
        client.send(client.headers(stream_id + 2, GET) + rst_stream(stream_id + 2, 0x8))
    assert not client.frames(hf.GoAwayFrame)


@pytest.mark.parametrize(
    "provoke",
    [
        lambda c, sid: c.request(sid) + c.send(window_update(sid, 0)),  # WINDOW_UPDATE of 0
        lambda c, sid: c.request(sid) + c.data(sid, b"x", end_stream=True),  # DATA on half-closed
        lambda c, sid: c.request(sid, [*GET, (b"connection", b"close")]),  # a malformed request
        lambda c, sid: c.request(sid, post(1), False) + c.data(sid, b"xx"),  # content-length
        lambda c, sid: c.send(priority(sid, sid)),  # a PRIORITY on itself
    ],
    ids=["window-update-0", "data-half-closed", "bad-headers", "content-length", "priority-self"],
)
def test_made_you_reset_cve_2025_8671_counts_the_resets_the_client_provokes(provoke: Step) -> None:
    client = Client(reset_budget=20)
    client.start()
    for stream_id in range(1, 41, 2):
        provoke(client, stream_id)
    assert len(client.resets()) == 20
    assert not client.frames(hf.GoAwayFrame)
    events = provoke(client, 41)
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


def test_stream_exhaustion_refused_streams_are_budgeted_too() -> None:
    client = Client(max_concurrent_streams=2, reset_budget=5)
    client.start()
    client.request(1)
    client.request(3)  # both open: the app has not answered
    events: list[ev.Event] = []
    for stream_id in range(5, 15, 2):
        events += client.request(stream_id)
    assert events == []
    assert set(client.resets().values()) == {REFUSED_STREAM}
    events = client.request(15)
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


def test_refused_stream_is_accepted_again_once_a_stream_closes() -> None:
    client = Client(max_concurrent_streams=1)
    client.start()
    client.request(1)
    assert client.request(3) == []
    assert client.resets() == {3: REFUSED_STREAM}
    answer(client, 1)
    assert client.request(5) == [ev.RequestReceived(5, GET, True)]


# -- header blocks ------------------------------------------------------------------------


def test_continuation_flood_cve_2024_27316_by_frame_count_is_cut_off() -> None:
    # The 2024 CONTINUATION flood (VU#421644: CVE-2024-27316 httpd, CVE-2023-45288
    # Go, CVE-2024-27983 Node.js...): HEADERS, then CONTINUATION frames forever.
    client = Client()  # 32 CONTINUATION frames at most
    client.start()
    wire = (
        frame(HEADERS, END_STREAM, 1, client.block(GET)) + frame(CONTINUATION, 0, 1, b"\x88") * 32
    )
    assert client.send(wire) == []
    assert not client.frames(hf.GoAwayFrame)
    events = client.send(frame(CONTINUATION, 0, 1, b"\x88"))
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


def test_continuation_flood_cve_2024_27316_by_size_is_cut_off_before_it_is_buffered() -> None:
    # The same flood with full frames: no END_HEADERS ever. The block may grow to
    # max_header_list_size + one frame (65536 + 16384 compressed bytes) and no more.
    client = Client(max_continuation_frames=1000)
    client.start()
    filler = b"\x00" * 16384
    events = client.send(frame(HEADERS, END_STREAM, 1, filler))
    for _ in range(4):
        events += client.send(frame(CONTINUATION, 0, 1, filler))
    assert events == [] and not client.frames(hf.GoAwayFrame)  # 81920 bytes: at the bound
    events = client.send(frame(CONTINUATION, 0, 1, b"\x00"))
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


def test_hpack_bomb_cve_2016_6581_is_answered_431_and_the_connection_stays_in_sync() -> None:
    # One 4000-byte value indexed once, then referenced 20 times: 80 kB of
    # fields from a few dozen bytes (past max_header_list_size = 65536).
    client = Client()
    client.start()
    big = (b"x-bomb", b"b" * 4000)
    client.request(1, [*GET, big])  # puts it in the dynamic table (incremental indexing)
    answer(client, 1)
    client.sent.clear()
    bomb = client.block([*GET, *[big] * 20])
    assert len(bomb) < 50
    assert client.send(frame(HEADERS, END_HEADERS, 3, bomb)) == []  # the body would follow
    assert client.responses()[3] == [[(b":status", b"431")]]
    assert "END_STREAM" in client.frames(hf.HeadersFrame)[0].flags
    assert client.resets() == {3: NO_ERROR}  # §8.1: stop sending the body, no error
    assert client.data(3, b"body in flight") == []  # ignored
    # The decoder is in step with the client's encoder: the next request decodes.
    assert client.request(5, [*GET, big]) == [ev.RequestReceived(5, [*GET, big], True)]


def test_hpack_bombs_cve_2016_6581_count_against_the_reset_budget() -> None:
    client = Client(reset_budget=3, max_header_list_size=100)
    client.start()
    events: list[ev.Event] = []
    for stream_id in (1, 3, 5):
        events += client.request(stream_id, [*GET, (b"x-long", b"y" * 100)])
    assert events == [] and not client.frames(hf.GoAwayFrame)
    events = client.request(7, [*GET, (b"x-long", b"y" * 100)])
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


# -- frames that move nothing forward (CVE-2019-9512..9518) -------------------------------


FLOODS: dict[str, Step] = {
    "ping-cve-2019-9512": lambda c, i: c.send(ping()),
    "settings-cve-2019-9515": lambda c, i: c.send(frame(SETTINGS, 0, 0)),
    "empty-data-cve-2019-9518": lambda c, i: c.send(frame(DATA, 0, 1)),
    "window-update": lambda c, i: c.send(window_update(0, 1)),  # no CVE: same cost
    "priority-cve-2019-9513": lambda c, i: c.send(priority(3 + 2 * i, 0)),
    "empty-continuation": lambda c, i: c.send(frame(CONTINUATION, 0, 3)),
    "unknown-frame-type": lambda c, i: c.send(frame(0x20, 0, 0, b"x")),
    "rst-on-closed-stream": lambda c, i: c.send(rst_stream(1, 0x8)),
}


@pytest.mark.parametrize("flood", list(FLOODS.values()), ids=list(FLOODS))
def test_no_progress_frame_flood_is_cut_off(flood: Step) -> None:
    budget = 50
    client = Client(no_progress_budget=budget, max_continuation_frames=10_000)
    client.start()
    client.request(1, post(), end_stream=False)
    if flood is FLOODS["rst-on-closed-stream"]:
        client.send(rst_stream(1, 0x8))
    if flood is FLOODS["empty-continuation"]:
        client.send(frame(HEADERS, 0, 3, client.block(GET)))
    events: list[ev.Event] = []
    for i in range(budget - 2):  # the client's first SETTINGS was free; leave one spare
        events += flood(client, i)
    assert not client.frames(hf.GoAwayFrame), client.sent[-3:]
    for i in range(budget - 2, budget + 2):
        events += flood(client, i)
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


def test_pings_between_real_work_are_never_cut_off() -> None:
    # A gRPC-like client: a PING and a WINDOW_UPDATE per DATA frame, forever.
    client = Client(no_progress_budget=10)
    client.start(ack=True)
    client.request(1, post(), end_stream=False)
    client.server.send_headers(1, OK)
    for _ in range(500):
        client.data(1, b"x")
        client.server.acknowledge_received_data(1, 1)
        client.send(ping())
        client.server.send_data(1, b"y")
        client.send(window_update(1, 1) + window_update(0, 1))
    assert not client.frames(hf.GoAwayFrame)


def test_control_frames_cve_2019_9512_9515_are_bounded_while_the_peer_does_not_read() -> None:
    # PING and SETTINGS floods (and CVE-2019-9514, the RST_STREAM replies a
    # reset flood draws) against a server whose writes pile up unread.
    client = Client(max_queued_control_frames=10, no_progress_budget=10_000)
    client.start()
    client.server.pause_writing()
    events: list[ev.Event] = []
    for _ in range(10):
        events += client.server.receive_data(ping())
    assert events == []
    events = client.server.receive_data(ping())
    client.read()
    assert_connection_error(client, events, ENHANCE_YOUR_CALM)


def test_control_frames_count_again_from_zero_after_writing_resumes() -> None:
    client = Client(max_queued_control_frames=10, no_progress_budget=10_000)
    client.start()
    for _ in range(5):
        client.server.pause_writing()
        for _ in range(10):
            client.server.receive_data(ping())
        client.server.resume_writing()
    assert client.server.state.name == "OPEN"


def test_empty_data_frames_with_end_stream_are_progress() -> None:
    client = Client(no_progress_budget=5)
    client.start()
    for stream_id in range(1, 41, 2):
        client.request(stream_id, post(), end_stream=False)
        client.data(stream_id, b"", end_stream=True)
        answer(client, stream_id)
    assert not client.frames(hf.GoAwayFrame)
    assert PROTOCOL_ERROR not in client.resets().values()


def test_budgets_are_configurable_and_checked() -> None:
    with pytest.raises(ValueError):
        H2Config(no_progress_budget=0)
    with pytest.raises(ValueError):
        H2Config(max_queued_control_frames=0)
