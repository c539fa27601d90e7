"""HTTP/2 end to end: flow control and memory bounds both ways, idle timeout, graceful shutdown.

The bounds are read from the server's own state (the stream's buffered
body, the transport's write buffer) while the peer holds back, and from the
``h2`` client's outbound window; a PING round trip is the barrier that says
the server had its chance to reopen a window and did not. Both loops.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import hyperframe.frame as hf

from sluiceway.asgi.http import BODY_HIGH_WATER_BYTES

from .h2_support import NO_ERROR
from .server_support import (
    Exchange,
    FrameClient,
    H2Client,
    body,
    request_fields,
    server_side,
    serving,
    start,
    until,
)

MIB = 1 << 20
WINDOW = 128 * 1024  # the server's default SETTINGS_INITIAL_WINDOW_SIZE (--h2-initial-window-size)
CLIENT_WINDOW = 65535  # the h2 client's own receive windows, unchanged
FRAME = 16384
CONNECTION_WINDOW = MIB  # the server's connection receive window (H2Config.connection_window_size)


async def answer_body_size(receive: Any, send: Any) -> None:
    """Read the whole request body; answer its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message["body"])
        more = message["more_body"]
    await send(start())
    await send(body(b"%d" % size))


# -- uploads ---------------------------------------------------------------------------------


async def test_10mb_upload_to_a_slow_app_stays_bounded_and_arrives_whole() -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()  # reads nothing until the test says so
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            digest.update(message["body"])
            size += len(message["body"])
            if not message["more_body"]:
                break
        await send(start())
        await send(body(b"%d %s" % (size, digest.hexdigest().encode())))

    payload = bytes(range(256)) * (10 * MIB // 256)
    async with serving(app) as server, H2Client.connect(server.port) as client:
        stream_id = await client.request(b"POST", b"/upload", end=False)
        sender = asyncio.ensure_future(client.send_body(stream_id, payload))
        proto = await server_side(server)
        # The client's send blocks: its window on the stream is spent, and a
        # round trip later the server still has not reopened it. (Waited for
        # on the server's side first: the client's window is also 0 for a
        # moment before each WINDOW_UPDATE arrives, and its sender refills it
        # at once, so that alone is no sign the server stopped reading.)
        await until(lambda: getattr(proto.streams.get(stream_id), "read_paused", False))
        await until(lambda: client.conn.local_flow_control_window(stream_id) == 0)
        await client.ping()
        assert client.conn.local_flow_control_window(stream_id) == 0
        assert not sender.done()
        buffered = proto.streams[stream_id].cycle.buffered_bytes  # type: ignore[attr-defined]
        # What the server holds: under the high-water mark, plus one stream
        # window the client may send before it learns that reading paused.
        assert BODY_HIGH_WATER_BYTES < buffered <= BODY_HIGH_WATER_BYTES + WINDOW + FRAME
        gate.set()
        await asyncio.wait_for(sender, 10)
        response = await client.response(stream_id, timeout=10)
    expected = b"%d %s" % (len(payload), hashlib.sha256(payload).hexdigest().encode())
    assert response.status == 200 and bytes(response.body) == expected


async def test_uploads_on_many_streams_together_hold_at_most_the_connection_window() -> None:
    gate = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await gate.wait()
        await answer_body_size(receive, send)

    streams, each = 24, 256 * 1024
    async with serving(app) as server, H2Client.connect(server.port) as client:
        ids = [await client.request(b"POST", b"/upload", end=False) for _ in range(streams)]
        senders = [asyncio.ensure_future(client.send_body(i, b"x" * each)) for i in ids]
        proto = await server_side(server)

        def held() -> int:
            return sum(s.cycle.buffered_bytes for s in proto.streams.values())  # type: ignore[attr-defined]

        # The connection window comes back only as apps read: 24 stalled
        # streams hold what one connection window allows, not 24 times a
        # stream's high-water mark and window (about 3 MiB). The client
        # spends that window; a round trip later nothing more has come.
        await until(lambda: held() >= CONNECTION_WINDOW)
        await client.ping()
        assert held() == CONNECTION_WINDOW, held()
        assert all(client.conn.local_flow_control_window(i) == 0 for i in ids)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*senders), 20)
        for i in ids:
            response = await client.response(i, timeout=10)
            assert response.status == 200 and bytes(response.body) == b"%d" % each


async def test_bodies_no_app_reads_go_back_to_the_connection_window() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/read":
            await answer_body_size(receive, send)
        else:
            await send(start())
            await send(body(b"0"))

    async with serving(app) as server, H2Client.connect(server.port) as client:
        # Forty unread bodies, each within a stream window: 2.4 MiB, more than
        # twice the connection window, which would shut if they were not given
        # back. Each request's HEADERS and DATA go in one write, so the body is
        # in the app's buffer (its stream window already reopened) before the
        # app answers without reading it.
        for _ in range(40):
            stream_id = client.conn.get_next_available_stream_id()
            client.streams[stream_id] = Exchange()
            client.conn.send_headers(stream_id, request_fields(b"/ignore", b"POST"))
            for i in range(4):
                client.conn.send_data(stream_id, b"x" * 15_000, end_stream=i == 3)
            await client.flush()
            response = await client.response(stream_id)
            assert response.status == 200 and bytes(response.body) == b"0"
        stream_id = await client.request(b"POST", b"/read", body=b"y" * (2 * MIB))
        response = await client.response(stream_id, timeout=10)
        assert bytes(response.body) == b"%d" % (2 * MIB)


# -- downloads -------------------------------------------------------------------------------


async def test_64mib_download_to_a_client_that_reads_slowly_stays_bounded() -> None:
    chunk = bytes(range(256)) * (MIB // 256)
    sent: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"content-length", b"%d" % (64 * MIB))]))
        for i in range(64):
            await send(body(chunk, more=i < 63))
            sent.append(i)

    # Windows wide open (flow control never holds it back): only the client's
    # not reading the socket does.
    async with (
        serving(app) as server,
        H2Client.connect(server.port, settings={4: 2**31 - 1}) as client,
    ):
        client.conn.increment_flow_control_window(2**31 - 1 - CLIENT_WINDOW)
        client.pause_reading()
        stream_id = await client.request()
        proto = await server_side(server)
        await until(lambda: proto.flow.write_paused)  # the socket is full
        transport = proto._transport
        assert len(sent) < 64  # the app waits in send(); the rest was never made
        stream = proto.streams[stream_id]
        held = transport.get_write_buffer_size() + len(stream._pending)  # type: ignore[attr-defined]
        # One app message (1 MiB) on top of the transport's high-water mark, at most.
        assert held <= 2 * MIB, held
        client.resume_reading()
        response = await client.response(stream_id, timeout=20)
    assert response.ended and len(response.body) == 64 * MIB
    assert response.body[-MIB:] == chunk and len(sent) == 64


# -- a gigabyte each way, with curl ------------------------------------------------------------

GIB = 1 << 30


def reset_peak_rss() -> int:
    """Start a new peak-RSS measurement of this process (the server's); return RSS now."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # Linux: VmHWM := VmRSS
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


async def curl_h2c(command: str) -> str:
    process = await asyncio.create_subprocess_shell(command, stdout=-1, stderr=-1)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_1gib_download_streams_to_curl_in_bounded_memory() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(headers=[(b"content-length", b"%d" % GIB)]))
        for i in range(1024):
            # A new object each time: a server that kept what it was given would grow by it.
            await send(body(bytes((i % 256,)) * MIB, more=i < 1023))

    async with serving(app) as server:
        before = reset_peak_rss()
        out = await curl_h2c(
            "curl -sS --http2-prior-knowledge --max-time 100 -o /dev/null"
            f" -w '%{{http_version}} %{{size_download}}' http://127.0.0.1:{server.port}/"
        )
        grew = peak_rss() - before
    assert out == f"2 {GIB}"
    assert grew < 32 * MIB, grew  # a few app messages and write buffers, never the body


async def test_a_1gib_upload_streams_from_curl_in_bounded_memory() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await answer_body_size(receive, send)

    async with serving(app) as server:
        before = reset_peak_rss()
        out = await curl_h2c(
            f"head -c {GIB} /dev/zero | curl -sS --http2-prior-knowledge --max-time 100 -T -"
            f" -w ' %{{http_version}}' http://127.0.0.1:{server.port}/upload"
        )
        grew = peak_rss() - before
    assert out == f"{GIB} 2"
    assert grew < 32 * MIB, grew  # the connection window's worth, never the body


# -- idle connections ------------------------------------------------------------------------


async def test_keep_alive_timeout_closes_an_idle_connection_with_goaway() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send(body(b"ok"))

    async with (
        serving(app, keep_alive_timeout_s=0.5) as server,
        H2Client.connect(server.port) as client,
    ):
        assert (await client.get()).status == 200
        await client.wait_closed()
    assert client.terminated is not None
    assert client.terminated.error_code == 0  # NO_ERROR
    assert client.terminated.last_stream_id == 1


async def test_the_keep_alive_timeout_waits_while_a_stream_is_open() -> None:
    # Idle means no stream open: a slow app's stream is not cut off by it.
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send(start())
        await send(body(b"late"))

    async with (
        serving(app, keep_alive_timeout_s=0.5) as server,
        H2Client.connect(server.port) as client,
    ):
        stream_id = await client.request()
        proto = await server_side(server)
        await until(lambda: bool(proto.streams))
        # While a stream is open the deadline is the stall timeout (30 s by
        # default, for a client that holds a stream), not the keep-alive's.
        assert proto.deadline is not None
        assert proto.deadline - asyncio.get_running_loop().time() > 5
        release.set()
        assert bytes((await client.response(stream_id)).body) == b"late"
        assert proto.deadline is not None  # idle again: the timeout runs
        await client.wait_closed()
    assert client.terminated is not None and client.terminated.error_code == NO_ERROR


# -- graceful shutdown -----------------------------------------------------------------------


async def test_graceful_shutdown_goaway_then_the_streams_in_flight_complete() -> None:
    # Raw frames: the h2 library's client stops reading at a GOAWAY, so it
    # cannot see the streams below the last id being answered after it.
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send(start())
        await send(body(scope["path"].encode()))

    async with (
        serving(app, graceful_shutdown_timeout_s=5) as server,
        FrameClient.connect(server.port) as client,
    ):
        await client.send(
            client.headers(1, request_fields(b"/one")) + client.headers(3, request_fields())
        )
        await until(lambda: len(server.state.tasks) == 2)
        shutdown = asyncio.ensure_future(server.shutdown())
        await client.wait(lambda: bool(client.parser.frames(hf.GoAwayFrame)))
        assert client.parser.goaway() == (3, NO_ERROR)  # both will be answered
        # A stream opened after the GOAWAY is ignored (RFC 9113 §6.8).
        await client.send(client.headers(5, request_fields(b"/late")))
        release.set()
        await client.wait_closed()  # the server closes once both are done
        await asyncio.wait_for(shutdown, 5)
    assert client.parser.body(1) == b"/one" and client.parser.body(3) == b"/"
    assert 5 not in client.parser.responses()


async def test_graceful_shutdown_cancels_streams_still_running_at_the_timeout() -> None:
    outcome: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send(body(b"partial", more=True))
        try:
            await asyncio.Event().wait()  # never finishes by itself
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async with (
        serving(app, graceful_shutdown_timeout_s=0.2) as server,
        H2Client.connect(server.port) as client,
    ):
        stream_id = await client.request()
        await client.wait(lambda: bytes(client.streams[stream_id].body) == b"partial")
        shutdown = asyncio.ensure_future(server.shutdown())
        await client.wait_closed()
        await asyncio.wait_for(shutdown, 5)
    assert client.terminated is not None and client.terminated.last_stream_id == stream_id
    assert not client.streams[stream_id].ended
    assert outcome == ["cancelled"]
    assert not server.state.connections
