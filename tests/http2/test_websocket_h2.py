"""WebSockets over HTTP/2 (RFC 8441) on a real server, driven by the ``h2`` library.

The client (``ws_h2_client.py``) speaks HTTP/2 with prior knowledge, or TLS
with ALPN h2, and builds and parses WebSocket frames by hand. Covered: the
extended CONNECT handshake (accept, subprotocol, permessage-deflate, the
app's denial with a body, 403, 426, 501, 400, 503), frames both ways, large
messages across many DATA frames under flow control both ways, the close
handshake either side first, the client's RST_STREAM, server shutdown
(Close 1001 under GOAWAY), two WebSockets and a request on one connection.
The last test is the browser's word: headless Chromium loads an HTTPS page
over HTTP/2 and opens ``wss://`` on the same origin; the server's own count
says the WebSocket was an RFC 8441 stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from sluiceway.config import Config
from sluiceway.http2.protocol import H2Protocol
from sluiceway.http2.ws_carrier import HIGH_WATER, H2Carrier
from sluiceway.transport.tls import create_ssl_context
from tests.browser import chromium, wait_for
from tests.http2.ws_h2_client import (
    BINARY,
    PING,
    PONG,
    TEXT,
    H2WebSocketClient,
    close_code,
    deflate_message,
    h2_client,
    inflate_message,
)
from tests.support import TIMEOUT_S, Served, local_tls, serve

Scope = dict[str, Any]
NO_ERROR, CANCEL = 0x0, 0x8


class Recorder:
    """An ASGI app whose WebSocket behaviour each test sets; it records what it saw."""

    def __init__(self, on_websocket: Callable[..., Any] | None = None) -> None:
        self.scopes: list[Scope] = []
        self.received: list[dict[str, Any]] = []
        self.disconnects: list[dict[str, Any]] = []
        self.done = asyncio.Event()
        self.on_websocket = on_websocket or echo

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"plain " + scope["path"].encode()})
            return
        assert scope["type"] == "websocket"
        self.scopes.append(scope)

        async def recording_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "websocket.disconnect":
                self.disconnects.append(message)
            elif message["type"] == "websocket.receive":
                self.received.append(message)
            return message

        try:
            await self.on_websocket(scope, recording_receive, send)
        finally:
            self.done.set()


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    offered = scope["subprotocols"]
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": offered[0] if offered else None,
            "headers": [(b"x-app", b"yes")],
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 1000})
            await receive()  # the disconnect, with the client's code
            return
        reply = {"type": "websocket.send"}
        reply.update({k: v for k, v in message.items() if k in ("text", "bytes") and v is not None})
        await send(reply)


def server_side(srv: Served) -> H2Protocol:
    (proto,) = [c for c in srv.state.connections if isinstance(c, H2Protocol)]
    return proto


async def eventually(condition: Callable[[], Any], timeout: float = TIMEOUT_S) -> None:
    """Poll a server-side condition, bounded (the server runs in this loop)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def websocket(
    app: Any, **config: Any
) -> AsyncIterator[tuple[Served, H2WebSocketClient, int]]:
    """A server, a client, and one accepted WebSocket on stream 1."""
    async with serve(app, **config) as srv, h2_client(srv.port) as client:
        stream_id = client.open(b"/ws")
        stream = await client.response(stream_id)
        assert stream.status == 200, stream
        yield srv, client, stream_id


# -- the handshake ---------------------------------------------------------------------------


async def test_extended_connect_is_accepted_with_a_websocket_scope() -> None:
    app = Recorder()
    async with serve(app) as srv, h2_client(srv.port) as client:
        stream_id = client.open(
            b"/chat/r%C3%A9union?x=1",
            [(b"sec-websocket-protocol", b"chat, superchat"), (b"origin", b"https://a.test")],
            authority=b"chat.example:8443",
        )
        stream = await client.response(stream_id)
        assert stream.status == 200
        assert stream.header(b"sec-websocket-protocol") == b"chat"
        assert stream.header(b"x-app") == b"yes"
        assert stream.header(b"server") == b"sluiceway"
        # RFC 8441 §5: no key, so no accept; the stream stays open for frames.
        assert stream.header(b"sec-websocket-accept") is None
        assert stream.header(b"sec-websocket-extensions") is None
        assert not stream.ended and stream.reset is None
        (scope,) = app.scopes
        assert scope["type"] == "websocket"
        assert scope["http_version"] == "2"
        assert scope["scheme"] == "ws"  # the connection's scheme, not :scheme
        assert scope["path"] == "/chat/réunion"
        assert scope["raw_path"] == b"/chat/r%C3%A9union"
        assert scope["query_string"] == b"x=1"
        assert scope["subprotocols"] == ["chat", "superchat"]
        assert scope["headers"][0] == (b"host", b"chat.example:8443")
        assert (b"origin", b"https://a.test") in scope["headers"]
        assert "method" not in scope
        assert scope["extensions"] == {"websocket.http.response": {}}
        assert srv.state.h2_websockets == 1


async def test_frames_flow_both_ways() -> None:
    async with websocket(Recorder()) as (_, client, stream_id):
        await client.send_frame(stream_id, TEXT, "héllo".encode())
        frame = await client.recv_frame(stream_id)
        assert (frame.opcode, frame.payload, frame.fin) == (TEXT, "héllo".encode(), True)
        await client.send_frame(stream_id, BINARY, b"\x00\x01\xff")
        frame = await client.recv_frame(stream_id)
        assert (frame.opcode, frame.payload) == (BINARY, b"\x00\x01\xff")
        # A fragmented message arrives whole at the app; a ping is answered by the server.
        await client.send_frame(stream_id, TEXT, b"frag", fin=False)
        await client.send_frame(stream_id, PING, b"are you there")
        frame = await client.recv_frame(stream_id)
        assert (frame.opcode, frame.payload) == (PONG, b"are you there")
        await client.send_frame(stream_id, 0x0, b"mented")
        frame = await client.recv_frame(stream_id)
        assert (frame.opcode, frame.payload) == (TEXT, b"fragmented")


async def test_permessage_deflate_is_negotiated_as_over_http1() -> None:
    app = Recorder()
    async with serve(app) as srv, h2_client(srv.port) as client:
        stream_id = client.open(
            b"/",
            [(b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")],
        )
        stream = await client.response(stream_id)
        assert stream.status == 200
        # What the same offer gets over HTTP/1.1 (websocket/deflate.py's defaults).
        assert stream.header(b"sec-websocket-extensions") == (
            b"permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        )
        text = b"compress me " * 50
        await client.send_frame(stream_id, TEXT, deflate_message(text, 12), rsv=0x40)
        frame = await client.recv_frame(stream_id)
        assert frame.opcode == TEXT and frame.rsv1
        assert inflate_message(frame.payload) == text
        assert app.received == [{"type": "websocket.receive", "text": text.decode()}]


async def test_permessage_deflate_off_is_not_agreed() -> None:
    async with serve(Recorder(), ws_per_message_deflate=False) as srv, h2_client(srv.port) as c:
        stream = await c.response(
            c.open(headers=[(b"sec-websocket-extensions", b"permessage-deflate")])
        )
        assert stream.status == 200
        assert stream.header(b"sec-websocket-extensions") is None


async def test_app_denial_is_an_http2_response_with_its_body() -> None:
    async def deny(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Basic")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"who ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})

    app = Recorder(deny)
    async with serve(app) as srv, h2_client(srv.port) as client:
        stream_id = client.open()
        stream = await client.response(stream_id)
        assert stream.status == 401
        assert stream.header(b"www-authenticate") == b"Basic"
        assert await client.body(stream_id) == b"who are you?"
        assert stream.ended  # END_STREAM with the last DATA, before any reset
        # The answer is complete and the client still had its side open:
        # RST_STREAM NO_ERROR asks it to stop (RFC 9113 §8.1); the stream is gone.
        await client.until(lambda: stream.reset is not None)
        assert stream.reset == NO_ERROR
        await eventually(lambda: not server_side(srv).streams)
        assert srv.state.h2_websockets == 1
        # The connection goes on.
        other = client.request(b"/after")
        assert await client.body(other) == b"plain /after"


async def test_close_before_accept_is_403() -> None:
    async def refuse(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})

    async with serve(Recorder(refuse)) as srv, h2_client(srv.port) as client:
        stream_id = client.open()
        stream = await client.response(stream_id)
        assert stream.status == 403
        assert await client.body(stream_id) == b""
        assert stream.header(b"content-length") == b"0"


@pytest.mark.parametrize(
    ("open_args", "status", "header"),
    [
        # RFC 6455 §4.4 as over HTTP/1.1: 426 and the version we speak (no Upgrade: h2 forbids it).
        ({"version": b"8"}, 426, (b"sec-websocket-version", b"13")),
        ({"headers": [(b"sec-websocket-protocol", b"no good")]}, 400, None),
        # RFC 8441 §4: another :protocol is no WebSocket; we implement none other.
        ({"protocol": b"connect-udp"}, 501, None),
        # HEADERS with END_STREAM: the stream could never carry a frame.
        ({"end_stream": True}, 400, None),
    ],
)
async def test_the_server_refuses_a_bad_extended_connect(
    open_args: dict[str, Any],
    status: int,
    header: tuple[bytes, bytes] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = Recorder()
    caplog.set_level(logging.INFO, logger="sluiceway.access")
    async with serve(app) as srv, h2_client(srv.port) as client:
        stream_id = client.open(**open_args)
        stream = await client.response(stream_id)
        assert stream.status == status
        if header is not None:
            assert stream.header(header[0]) == header[1]
        assert stream.header(b"upgrade") is None
        body = await client.body(stream_id)
        assert stream.header(b"content-length") == b"%d" % len(body)
        assert stream.header(b"content-type") == b"text/plain; charset=utf-8"
        assert app.scopes == []  # the app never saw it
        assert srv.state.h2_websockets == 0
        await eventually(lambda: not server_side(srv).streams)
        other = client.request(b"/still")
        assert await client.body(other) == b"plain /still"
    # Logged as a refused handshake over HTTP/1.1 is: the status alone.
    (line,) = [r.getMessage() for r in caplog.records if "WebSocket" in r.getMessage()]
    assert line.endswith(f'"WebSocket /" {status}')


async def test_no_websockets_no_extended_connect() -> None:
    # ws="none": SETTINGS_ENABLE_CONNECT_PROTOCOL is not offered (RFC 8441 §3), so a
    # browser keeps to HTTP/1.1 for its WebSockets instead of failing a CONNECT.
    async with serve(Recorder(), ws="none") as srv, h2_client(srv.port) as client:
        assert client.conn.remote_settings.enable_connect_protocol == 0
    async with serve(Recorder()) as srv, h2_client(srv.port) as client:
        assert client.conn.remote_settings.enable_connect_protocol == 1


async def test_a_websocket_during_shutdown_gets_503() -> None:
    app = Recorder()
    async with serve(app) as srv, h2_client(srv.port) as client:
        srv.state.shutting_down = True  # as the runner sets it before shutdown()
        stream_id = client.open()
        assert (await client.response(stream_id)).status == 503
        assert app.scopes == []


# -- flow control -----------------------------------------------------------------------------


async def test_large_messages_cross_many_data_frames_both_ways() -> None:
    payload = bytes(range(256)) * 1200  # 300 KiB: over four of the server's stream windows
    async with websocket(Recorder()) as (_, client, stream_id):
        # The client may send only what the server's windows allow: it waits for them.
        await client.send_frame(stream_id, BINARY, payload)
        frame = await client.recv_frame(stream_id)
        assert frame.opcode == BINARY and frame.payload == payload


async def test_a_client_that_opens_its_window_slowly_holds_the_app_send() -> None:
    big = os.urandom(1 << 20)
    sent = asyncio.Event()

    async def sender(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()  # "go"
        await send({"type": "websocket.send", "bytes": big})
        sent.set()
        await send({"type": "websocket.send", "text": "after"})
        await receive()

    async with (
        serve(Recorder(sender)) as srv,
        h2_client(srv.port, auto_ack=False) as client,
    ):
        stream_id = client.open()
        assert (await client.response(stream_id)).status == 200
        await client.send_frame(stream_id, TEXT, b"go")
        stream = client.streams[stream_id]
        # One window's worth arrives; the rest waits on the server, and the app's
        # send waits for it (pause_writing over the high-water mark).
        await client.until(lambda: stream.received >= 65535)
        carrier = server_side(srv).streams[stream_id]
        assert isinstance(carrier, H2Carrier)
        await eventually(lambda: carrier._write_paused)
        assert carrier._pending_bytes > HIGH_WATER
        assert not sent.is_set()
        assert stream.received == 65535  # never past the window
        # Now the client reads slowly: it opens the window as it consumes.
        acks = 0
        while len(stream.data) < len(big) + 10:
            client.ack(stream_id)
            acks += 1
            received = stream.received
            await client.until(lambda: stream.received > received)  # noqa: B023
        assert acks > 10  # many window updates, each moving a window's worth
        frame = await client.recv_frame(stream_id)
        assert frame.opcode == BINARY and frame.payload == big
        client.ack(stream_id)
        frame = await client.recv_frame(stream_id)
        assert (frame.opcode, frame.payload) == (TEXT, b"after")
        assert sent.is_set()
        assert not carrier._write_paused


async def test_a_slow_app_stops_the_acknowledgements() -> None:
    release = asyncio.Event()
    got: list[bytes] = []

    async def slow(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await release.wait()
        while len(got) < 40:
            got.append((await receive())["bytes"])
        await send({"type": "websocket.send", "text": f"got {len(got)}"})
        await receive()

    messages = [bytes([i]) * 8192 for i in range(40)]  # 320 KiB, about five stream windows
    async with (
        serve(Recorder(slow), ws_max_queue=2) as srv,
        h2_client(srv.port) as client,
    ):
        stream_id = client.open()
        assert (await client.response(stream_id)).status == 200

        async def send_all() -> None:
            for message in messages:
                await client.send_frame(stream_id, BINARY, message)

        sending = asyncio.ensure_future(send_all())
        # The app reads nothing: its queue fills, the server stops acknowledging,
        # and the client is held at a shut window with most messages unsent.
        await client.until(lambda: client.conn.local_flow_control_window(stream_id) == 0)
        carrier = server_side(srv).streams[stream_id]
        assert isinstance(carrier, H2Carrier)
        await eventually(lambda: carrier._reading_paused)
        assert carrier._unacked > 0
        assert not sending.done()
        release.set()
        await asyncio.wait_for(sending, TIMEOUT_S)
        frame = await client.recv_frame(stream_id)
        assert frame.payload == b"got 40"
        assert got == messages
        assert not carrier._reading_paused


# -- closing ----------------------------------------------------------------------------------


async def test_server_initiated_close_handshake() -> None:
    app = Recorder()
    async with websocket(app) as (srv, client, stream_id):
        await client.send_frame(stream_id, TEXT, b"close please")
        frame = await client.recv_frame(stream_id)
        assert close_code(frame) == 1000
        stream = client.streams[stream_id]
        assert not stream.ended  # the server awaits our Close before it ends its side
        await client.send_close(stream_id, 1000)
        await client.until(lambda: stream.ended)  # END_STREAM after the handshake
        assert stream.reset is None
        client.end(stream_id)
        await eventually(lambda: not server_side(srv).streams)
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
        assert app.disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]
        assert not [c for c in srv.state.connections if not isinstance(c, H2Protocol)]


async def test_client_initiated_close_handshake() -> None:
    app = Recorder()
    async with websocket(app) as (srv, client, stream_id):
        await client.send_close(stream_id, 1000, b"bye")
        frame = await client.recv_frame(stream_id)
        assert close_code(frame) == 1000
        stream = client.streams[stream_id]
        await client.until(lambda: stream.ended)
        client.end(stream_id)
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
        assert app.disconnects == [{"type": "websocket.disconnect", "code": 1000, "reason": "bye"}]
        await eventually(lambda: not server_side(srv).streams)
        assert stream.reset is None


async def test_client_end_stream_without_close_is_1006() -> None:
    app = Recorder()
    async with websocket(app) as (srv, client, stream_id):
        client.end(stream_id)  # TCP's FIN, with no Close frame
        stream = client.streams[stream_id]
        await client.until(lambda: stream.ended)  # our side ends too
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
        assert app.disconnects == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
        await eventually(lambda: not server_side(srv).streams)


async def test_client_rst_stream_disconnects_the_app() -> None:
    app = Recorder()
    async with websocket(app) as (srv, client, stream_id):
        await client.send_frame(stream_id, TEXT, b"one")
        await client.recv_frame(stream_id)
        client.reset(stream_id, CANCEL)
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
        assert app.disconnects == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
        await eventually(lambda: not server_side(srv).streams)
        # The adapter left the server's registry: a shutdown waits for nothing of it.
        assert [c for c in srv.state.connections if not isinstance(c, H2Protocol)] == []
        other = client.request(b"/after-reset")
        assert await client.body(other) == b"plain /after-reset"


async def test_server_shutdown_sends_1001_and_closes_the_connection() -> None:
    app = Recorder()
    async with websocket(app) as (srv, client, stream_id):
        srv.state.shutting_down = True
        for conn in list(srv.state.connections):  # as the runner does
            conn.shutdown()
        frame = await client.recv_frame(stream_id)
        assert close_code(frame) == 1001
        await client.until(lambda: client.goaway is not None)
        assert client.goaway == (NO_ERROR, stream_id)  # the WebSocket's stream goes on
        await client.send_close(stream_id, 1001)
        stream = client.streams[stream_id]
        await client.until(lambda: stream.ended)
        client.end(stream_id)
        # The last stream is over: the connection closes, and nothing is left to wait for.
        await client.until(lambda: client.closed)
        await asyncio.wait_for(srv.state.wait_connections_closed(), TIMEOUT_S)
        assert app.disconnects == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]


async def test_client_ending_its_side_before_the_accept_cancels_the_stream() -> None:
    accepting = asyncio.Event()
    refused: list[BaseException] = []

    async def late(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await accepting.wait()
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:  # ClientDisconnected: the client left during the handshake
            refused.append(exc)

    app = Recorder(late)
    async with serve(app) as srv, h2_client(srv.port) as client:
        stream_id = client.open()
        await eventually(lambda: app.scopes)
        client.end(stream_id)
        stream = client.streams[stream_id]
        # No answer went out, so only a reset can end the stream.
        await client.until(lambda: stream.reset is not None)
        assert stream.reset == CANCEL and stream.headers is None
        accepting.set()
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
        assert len(refused) == 1
        await eventually(lambda: not server_side(srv).streams)


@pytest.mark.parametrize("window", [65535, 1])
async def test_keepalive_timeout_closes_1011_and_ends_the_stream(window: int) -> None:
    app = Recorder()
    options: dict[str, Any] = {"ws_ping_interval_s": 0.05, "ws_ping_timeout_s": 0.05}
    async with (
        serve(app, **options) as srv,
        h2_client(srv.port, auto_ack=False, initial_window=window) as client,
    ):
        stream_id = client.open()
        stream = await client.response(stream_id)
        # The client never answers the server's Ping: after the ping timeout the app
        # hears 1011 and the stream ends without waiting for the peer.
        await asyncio.wait_for(app.done.wait(), TIMEOUT_S)
        assert app.disconnects == [
            {"type": "websocket.disconnect", "code": 1011, "reason": "keepalive ping timeout"}
        ]
        await client.until(lambda: stream.reset is not None)
        if window > 1:
            assert (await client.recv_frame(stream_id)).opcode == PING
            assert close_code(await client.recv_frame(stream_id)) == 1011
            assert stream.ended  # END_STREAM, then RST_STREAM NO_ERROR: we read no more
            assert stream.reset == NO_ERROR
        else:
            # A window too small for the Ping: what waits would never go, so the
            # stream is cancelled rather than left open.
            assert stream.received == 1 and not stream.ended
            assert stream.reset == CANCEL
        await eventually(lambda: not server_side(srv).streams)


# -- multiplexing -----------------------------------------------------------------------------


async def test_two_websockets_and_a_request_share_one_connection() -> None:
    app = Recorder()
    async with serve(app) as srv, h2_client(srv.port) as client:
        one = client.open(b"/one")
        two = client.open(b"/two")
        request = client.request(b"/page")
        assert (await client.response(one)).status == 200
        assert (await client.response(two)).status == 200
        await client.send_frame(two, TEXT, b"to two")
        await client.send_frame(one, TEXT, b"to one")
        assert (await client.recv_frame(one)).payload == b"to one"
        assert (await client.recv_frame(two)).payload == b"to two"
        assert await client.body(request) == b"plain /page"
        await client.send_close(one)
        assert close_code(await client.recv_frame(one)) == 1000
        await client.send_frame(two, TEXT, b"still here")
        assert (await client.recv_frame(two)).payload == b"still here"
        assert srv.state.h2_websockets == 2
        assert len([c for c in srv.state.connections if isinstance(c, H2Protocol)]) == 1


# -- a browser --------------------------------------------------------------------------------

PAGE = b"""<!doctype html>
<title>loading</title>
<script>
const ws = new WebSocket(`wss://${location.host}/ws`, ["chat"]);
ws.onopen = () => ws.send("hello from the browser");
ws.onmessage = (event) => { document.title = "echo: " + event.data; ws.close(1000); };
ws.onerror = () => { document.title = "error"; };
</script>
"""


async def browser_app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        body = PAGE if scope["path"] == "/" else b""
        status = 200 if body else 404
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await echo(scope, receive, send)


async def test_chromium_opens_its_websocket_over_http2(tmp_path: Path) -> None:
    tls = local_tls(tmp_path)
    # The server's own TLS context: ALPN offers h2 (transport/tls.py).
    options: dict[str, Any] = dict(tls.options)
    context = create_ssl_context(Config(**options))
    async with (
        serve(browser_app, ssl_context=context, **options) as srv,
        chromium(["--ignore-certificate-errors"]) as devtools,
    ):
        tab = await devtools.open_tab(f"https://127.0.0.1:{srv.port}/")
        title = await devtools.evaluate(
            tab, wait_for("document.title.startsWith('echo') && document.title")
        )
        assert title == "echo: hello from the browser"
        protocol = await devtools.evaluate(
            tab, "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        )
        assert protocol == "h2"  # the page itself came over HTTP/2
    # The server's own count: the WebSocket was an RFC 8441 stream, not an upgrade.
    assert srv.state.h2_websockets == 1
