"""HTTP/2 attacks against the real server, one regression test per class (docs/security.md, HTTP/2).

The engine's unit tests (``test_abuse.py``, ``test_validation.py``) cover
the mechanics; these prove them through the adapter and a real socket. Each
test names its CVE, asserts the GOAWAY or RST_STREAM code the attacker gets,
that a connection opened beside it before the attack is still served, and,
where the attack is about memory, the bound on the attacked connection's
server-side state. Frames are built byte for byte (``FrameClient``): the
``h2`` library refuses to send most of them. Both loops.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hyperframe.frame as hf
import pytest

from sluiceway.asgi.http import BODY_HIGH_WATER_BYTES
from sluiceway.config import Config

from .h2_support import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    HEADERS,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    frame,
    ping,
    priority,
    rst_stream,
    window_update,
)
from .server_support import (
    FrameClient,
    H2Client,
    request_fields,
    server_side,
    serving,
    under_attack,
    until,
)

MIB = 1 << 20
CANCEL = 0x8


class Target:
    """The app under attack: ``/hold`` stays until the client goes, ``/read`` reads its
    body (recording each message), anything else answers ``ok``."""

    def __init__(self) -> None:
        self.calls = 0
        self.received: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        path = scope["path"]
        if path == "/hold":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if path == "/read":
            while True:
                message = await receive()
                self.received.append(message)
                if message["type"] == "http.disconnect" or not message["more_body"]:
                    break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def still_served(client: H2Client) -> None:
    """A connection opened beside the attack is still answered."""
    response = await client.get()
    assert response.status == 200 and bytes(response.body) == b"ok"


def hold(stream_id: int, client: FrameClient, path: bytes = b"/hold") -> bytes:
    return client.headers(stream_id, request_fields(path))


# -- resets ------------------------------------------------------------------------------------


async def test_rapid_reset_cve_2023_44487_is_goaway_enhance_your_calm() -> None:
    app = Target()
    async with under_attack(app) as (server, beside, attacker):
        # 300 requests each cancelled at once, in one write; the budget is 200
        # resets beyond one per completed stream.
        wire = b"".join(hold(sid, attacker) + rst_stream(sid, CANCEL) for sid in range(1, 601, 2))
        await attacker.send(wire)
        assert (await attacker.goaway())[1] == ENHANCE_YOUR_CALM
        # Bounded: the apps started stopped at the budget, and each has ended.
        assert app.calls <= 202
        await until(lambda: not server.state.tasks)
        await still_served(beside)


@pytest.mark.parametrize(
    ("provoke", "code"),
    [
        (lambda c, sid: hold(sid, c) + window_update(sid, 0), PROTOCOL_ERROR),
        (lambda c, sid: hold(sid, c) + frame(DATA, END_STREAM, sid, b"x"), STREAM_CLOSED),
        (lambda c, sid: hold(sid, c) + priority(sid, sid), PROTOCOL_ERROR),
    ],
    ids=["window-update-0", "data-after-end-stream", "priority-on-itself"],
)
async def test_made_you_reset_cve_2025_8671_is_goaway_enhance_your_calm(
    provoke: Any, code: int
) -> None:
    # The client never resets: its bad frames make the server reset the
    # streams it is serving (here while their apps run).
    app = Target()
    async with under_attack(app) as (server, beside, attacker):
        await attacker.send(b"".join(provoke(attacker, sid) for sid in range(1, 601, 2)))
        assert (await attacker.goaway())[1] == ENHANCE_YOUR_CALM
        resets = attacker.parser.resets()
        assert resets and set(resets.values()) == {code}
        assert len(resets) <= 201
        await until(lambda: not server.state.tasks)
        await still_served(beside)


async def test_stream_count_exhaustion_is_refused_then_goaway() -> None:
    # --h2-max-concurrent-streams 4: the fifth stream is REFUSED_STREAM (RFC 9113
    # §5.1.2) while four apps hold theirs; refusing forever is budgeted too.
    app = Target()
    async with under_attack(app, h2_max_concurrent_streams=4) as (server, beside, attacker):
        await beside.ping()  # the server's SETTINGS came before the ACK
        assert beside.conn.remote_settings.max_concurrent_streams == 4
        await attacker.send(b"".join(hold(sid, attacker) for sid in (1, 3, 5, 7)))
        await until(lambda: app.calls == 4)
        await attacker.send(hold(9, attacker))
        assert await attacker.reset_of(9) == REFUSED_STREAM
        assert app.calls == 4
        await attacker.send(b"".join(hold(sid, attacker) for sid in range(11, 1001, 2)))
        assert (await attacker.goaway())[1] == ENHANCE_YOUR_CALM
        assert app.calls == 4
        await until(lambda: not server.state.tasks)
        await still_served(beside)


# -- header blocks -------------------------------------------------------------------------------


async def test_continuation_flood_cve_2024_27316_by_frame_count() -> None:
    # The 2024 CONTINUATION flood (VU#421644: httpd CVE-2024-27316, Go
    # CVE-2023-45288, Node.js CVE-2024-27983...): a header block that never ends.
    app = Target()
    async with under_attack(app) as (_, beside, attacker):
        block = attacker.block(request_fields())
        flood = frame(CONTINUATION, 0, 1, b"\x88") * 1000  # each an indexed ":status 200"
        await attacker.send(frame(HEADERS, END_STREAM, 1, block) + flood)
        assert (await attacker.goaway())[1] == ENHANCE_YOUR_CALM
        assert app.calls == 0
        await still_served(beside)


async def test_continuation_flood_cve_2024_27316_by_size_is_cut_off_before_it_is_buffered() -> None:
    app = Target()
    async with under_attack(app) as (_, beside, attacker):
        filler = b"\x00" * 16384
        # 64 KiB of header list + one frame may be buffered (81,920 bytes); 1 MiB is sent.
        flood = frame(HEADERS, 0, 1, filler) + frame(CONTINUATION, 0, 1, filler) * 63
        await attacker.send(flood)
        assert (await attacker.goaway())[1] == ENHANCE_YOUR_CALM
        assert app.calls == 0
        await still_served(beside)


async def test_hpack_bomb_cve_2016_6581_is_431_and_the_connection_goes_on() -> None:
    app = Target()
    async with under_attack(app) as (_, beside, attacker):
        big = (b"x-bomb", b"b" * 4000)
        # Indexed once (the encoder adds it to the dynamic table), then
        # referenced past the default header list size (160 kB of fields
        # against 128 KiB) from a few dozen bytes.
        await attacker.send(attacker.headers(1, [*request_fields(), big]))
        await attacker.wait(lambda: 1 in attacker.parser.responses())
        copies = Config().h2_max_header_list_size // len(big[1]) + 8
        bomb = attacker.block([*request_fields(), *[big] * copies])
        assert len(bomb) < copies + 30
        await attacker.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, bomb))
        await attacker.wait(lambda: 3 in attacker.parser.responses())
        assert attacker.parser.responses()[3] == [[(b":status", b"431")]]
        # The decoder stayed in step: the same connection serves the next request.
        await attacker.send(attacker.headers(5, [*request_fields(), big]))
        await attacker.wait(lambda: attacker.parser.body(5) == b"ok")
        assert not attacker.parser.frames(hf.GoAwayFrame)
        assert app.calls == 2
        await still_served(beside)


async def test_oversized_header_list_is_431_at_the_configured_size() -> None:
    # --h2-max-header-list-size 8192, announced in SETTINGS (RFC 9113 §6.5.2).
    app = Target()
    async with under_attack(app, h2_max_header_list_size=8192) as (_, beside, attacker):
        await beside.ping()
        assert beside.conn.remote_settings.max_header_list_size == 8192
        fields = [*request_fields(), (b"x-big", b"y" * 9000)]
        await attacker.send(attacker.headers(1, fields))
        await attacker.wait(lambda: 1 in attacker.parser.responses())
        assert attacker.parser.responses()[1] == [[(b":status", b"431")]]
        await attacker.send(attacker.headers(3, request_fields()))
        await attacker.wait(lambda: attacker.parser.body(3) == b"ok")
        assert app.calls == 1
        await still_served(beside)


# -- frames that move nothing forward (CVE-2019-9512..9518) ------------------------------------

FLOODS = {
    "ping-cve-2019-9512": lambda i: ping(),
    "settings-cve-2019-9515": lambda i: frame(SETTINGS, 0, 0),
    "empty-data-cve-2019-9518": lambda i: frame(DATA, 0, 1),
    "window-update": lambda i: window_update(0, 1),
    "priority-cve-2019-9513": lambda i: priority(3 + 2 * i, 0),
    "rst-on-a-closed-stream-cve-2019-9514": lambda i: rst_stream(1, CANCEL),
}


@pytest.mark.parametrize("flood", list(FLOODS.values()), ids=list(FLOODS))
async def test_control_and_empty_frame_floods_are_goaway_enhance_your_calm(flood: Any) -> None:
    app = Target()
    async with under_attack(app) as (server, beside, attacker):
        # An open stream whose app waits for a body: empty DATA frames land on it.
        await attacker.send(attacker.headers(1, request_fields(b"/read", b"POST"), False))
        await attacker.send(b"".join(flood(i) for i in range(3000)))
        assert (await attacker.goaway())[1] == ENHANCE_YOUR_CALM
        pongs = [f for f in attacker.parser.frames(hf.PingFrame) if "ACK" in f.flags]
        assert len(pongs) <= 1001  # the budget, not one per PING sent
        await until(lambda: not server.state.tasks)
        await still_served(beside)


# -- holding streams: zero window and slow reading (CVE-2019-9511/9517) -----------------------


def big_response(message_bytes: int, messages: int, progress: list[int]) -> Any:
    """``/big``: ``messages`` sends of ``message_bytes``; anything else: ``Target``'s ``ok``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/big":
            await Target()(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"z" * message_bytes
        for i in range(messages):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            progress.append(i)
        await send({"type": "http.response.body", "body": b""})

    return app


async def test_zero_window_hold_cve_2019_9517_holds_one_app_message_at_most() -> None:
    # The client's SETTINGS_INITIAL_WINDOW_SIZE is 0 and it never opens it:
    # the app's first message waits in the stream, its next send blocks.
    progress: list[int] = []
    app = big_response(MIB, 64, progress)
    async with (
        serving(app) as server,
        H2Client.connect(server.port) as beside,
        H2Client.connect(server.port, settings={4: 0}) as attacker,
    ):
        stream_id = await attacker.request(b"GET", b"/big")
        proto = await server_side(server, attacker)
        await until(lambda: stream_id in proto.streams)
        stream = proto.streams[stream_id]
        await until(lambda: len(stream._pending) == MIB)  # type: ignore[attr-defined]
        await attacker.ping()
        assert progress == []  # the app's first send still waits
        assert proto._transport.get_write_buffer_size() < 64 * 1024
        await still_served(beside)


async def test_slow_read_hold_cve_2019_9517_bounds_what_the_server_buffers() -> None:
    # Windows wide open, but the client stops reading the socket: the
    # transport's back-pressure reaches the app's send.
    progress: list[int] = []
    app = big_response(MIB, 256, progress)
    async with (
        serving(app) as server,
        H2Client.connect(server.port) as beside,
        H2Client.connect(server.port, settings={4: 2**31 - 1}) as attacker,
    ):
        attacker.conn.increment_flow_control_window(2**31 - 1 - 65535)
        attacker.pause_reading()
        stream_id = await attacker.request(b"GET", b"/big")
        proto = await server_side(server, attacker)
        await until(lambda: proto.flow.write_paused)
        assert len(progress) < 256  # the app waits in send(); the rest was never made
        pending = len(proto.streams[stream_id]._pending)  # type: ignore[attr-defined]
        assert proto._transport.get_write_buffer_size() + pending <= 2 * MIB
        await still_served(beside)


@pytest.mark.parametrize("how", ["zero-window", "never-reads", "stalled-body"])
async def test_a_held_stream_is_eventually_released(how: str) -> None:
    # A slow-read or stalled-upload hold (CVE-2019-9517, R-U-Dead-Yet over HTTP/2):
    # what the server keeps is bounded (tests above), and for how long: the
    # request-body timeout resets a stream that only the client could move, or
    # drops a connection whose client stopped reading.
    app = big_response(MIB, 64, [])
    options = {"keep_alive_timeout_s": 0.2, "request_body_timeout_s": 0.2}
    async with serving(app, **options) as server:
        settings = {4: 0} if how == "zero-window" else {4: 2**31 - 1}
        async with H2Client.connect(server.port, settings=settings) as attacker:
            if how == "never-reads":
                attacker.conn.increment_flow_control_window(2**31 - 1 - 65535)
                attacker.pause_reading()
            if how == "stalled-body":
                await attacker.request(b"POST", b"/read", end=False)
            else:
                await attacker.request(b"GET", b"/big")
            proto = await server_side(server, attacker)
            await until(lambda: bool(proto.streams))  # held, not merely idle
            # Several times the timeouts: by then the server has let the stream
            # go (reset it, or dropped the connection) and the app has ended.
            await until(lambda: not proto.streams and not server.state.tasks, timeout=1.5)


# -- smuggling through HTTP/2 -------------------------------------------------------------------

GOOD = request_fields()
MALFORMED = {
    # RFC 9113 §8.2.2: connection-specific fields.
    "connection": [*GOOD, (b"connection", b"keep-alive")],
    "transfer-encoding": [*GOOD, (b"transfer-encoding", b"chunked")],
    "keep-alive": [*GOOD, (b"keep-alive", b"timeout=5")],
    "proxy-connection": [*GOOD, (b"proxy-connection", b"keep-alive")],
    "upgrade": [*GOOD, (b"upgrade", b"h2c")],
    "te-not-trailers": [*GOOD, (b"te", b"gzip")],
    # RFC 9113 §8.2.1: field names lowercase tokens; no CR, LF or NUL anywhere.
    "uppercase-name": [*GOOD, (b"X-Upper", b"1")],
    "cr-in-name": [*GOOD, (b"x\rfoo", b"1")],
    "lf-in-name": [*GOOD, (b"x\nfoo", b"1")],
    "nul-in-name": [*GOOD, (b"x\x00foo", b"1")],
    "space-in-name": [*GOOD, (b"x foo", b"1")],
    "cr-lf-in-value": [*GOOD, (b"x-a", b"1\r\nx-injected: 2")],
    "nul-in-value": [*GOOD, (b"x-a", b"1\x00")],
    "space-around-value": [*GOOD, (b"x-a", b" 1")],
    # RFC 9113 §8.3.1: pseudo-headers.
    "missing-method": [f for f in GOOD if f[0] != b":method"],
    "missing-path": [f for f in GOOD if f[0] != b":path"],
    "missing-scheme": [f for f in GOOD if f[0] != b":scheme"],
    "duplicate-path": [*GOOD, (b":path", b"/admin")],
    "unknown-pseudo": [*GOOD, (b":foo", b"bar")],
    "response-pseudo": [*GOOD, (b":status", b"200")],
    "pseudo-after-regular": [*GOOD[:3], (b"x-a", b"1"), GOOD[3]],
    "empty-path": [*GOOD[:3], (b":path", b"")],
    "relative-path": [*GOOD[:3], (b":path", b"admin")],
    "space-in-path": [*GOOD[:3], (b":path", b"/a HTTP/1.1\r\nx: y")],
    "host-differs-from-authority": [*GOOD, (b"host", b"evil.example")],
    # RFC 9113 §8.1.1: a content-length with no body to match it.
    "content-length-without-body": [*GOOD, (b"content-length", b"5")],
    "content-length-not-a-number": [*GOOD, (b"content-length", b"5, 5")],
}


@pytest.mark.parametrize("fields", list(MALFORMED.values()), ids=list(MALFORMED))
async def test_malformed_request_is_rst_stream_protocol_error_and_never_reaches_the_app(
    fields: list[tuple[bytes, bytes]],
) -> None:
    app = Target()
    async with under_attack(app) as (_, beside, attacker):
        await attacker.send(attacker.headers(1, fields))
        assert await attacker.reset_of(1) == PROTOCOL_ERROR
        # A stream error: the connection itself goes on.
        await attacker.send(attacker.headers(3, request_fields()))
        await attacker.wait(lambda: attacker.parser.body(3) == b"ok")
        assert not attacker.parser.frames(hf.GoAwayFrame)
        assert app.calls == 1  # only the good request
        await still_served(beside)


@pytest.mark.parametrize(
    ("declared", "sent"),
    [(10, b"x" * 20), (10, b"x" * 5), (0, b"x")],
    ids=["longer-than-declared", "shorter-than-declared", "body-after-zero"],
)
async def test_content_length_disagreeing_with_data_is_rst_and_the_app_sees_disconnect(
    declared: int, sent: bytes
) -> None:
    # The app has started (the head was valid): it must never see the body
    # as complete, only http.disconnect (RFC 9113 §8.1.1).
    app = Target()
    async with under_attack(app) as (server, beside, attacker):
        fields = [*request_fields(b"/read", b"POST"), (b"content-length", b"%d" % declared)]
        await attacker.send(
            attacker.headers(1, fields, end_stream=False) + frame(DATA, END_STREAM, 1, sent)
        )
        assert await attacker.reset_of(1) == PROTOCOL_ERROR
        await until(lambda: bool(app.received) and not server.state.tasks)
        assert app.received[-1] == {"type": "http.disconnect"}
        assert not any(m.get("more_body") is False for m in app.received)
        await still_served(beside)


async def test_data_past_the_window_is_rst_stream_flow_control_error() -> None:
    # A client that ignores flow control cannot make the server buffer more
    # than the window it granted (RFC 9113 §6.9.1): the first frame past it
    # resets the stream, and the app that read nothing sees http.disconnect.
    gate = asyncio.Event()
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/upload":
            await Target()(scope, receive, send)
            return
        await gate.wait()
        while not seen or seen[-1]["type"] != "http.disconnect":
            seen.append(await receive())

    async with under_attack(app) as (server, beside, attacker):
        await attacker.send(attacker.headers(1, request_fields(b"/upload", b"POST"), False))
        await attacker.send(frame(DATA, 0, 1, b"q" * 16384) * 64)  # 1 MiB, window 128 KiB
        assert await attacker.reset_of(1) == FLOW_CONTROL_ERROR
        # The rest of that MiB was counted and given back: the connection goes on.
        await attacker.send(attacker.headers(3, request_fields()))
        await attacker.wait(lambda: attacker.parser.body(3) == b"ok")
        gate.set()
        await until(lambda: not server.state.tasks)
        assert seen[-1] == {"type": "http.disconnect"}
        assert sum(len(m.get("body", b"")) for m in seen) <= BODY_HIGH_WATER_BYTES + 128 * 1024
        await still_served(beside)
