"""``http.response.push`` over a real server.

PUSH_PROMISE, then the app answers the promised request.

The client is the ``h2`` library's (a sans-I/O client over a plain socket in
a thread-free asyncio stream), so the promise and both responses are read as
a real HTTP/2 client reads them; push is sent only when the client allows it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from tests.support import TIMEOUT_S, serve


async def page_with_push(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    if scope["path"] == "/" and "http.response.push" in scope["extensions"]:
        await send(
            {
                "type": "http.response.push",
                "path": "/static/a b.css",
                "headers": [(b"Accept", b"text/css")],
            }
        )
    headers = dict(scope["headers"])
    body = f"{scope['path']}|{headers.get(b'host', b'').decode()}|{headers.get(b'accept', b'')!r}"
    await send({"type": "http.response.body", "body": body.encode()})


async def exchange(port: int, allow_push: bool) -> dict[int, Any]:
    """GET / with push allowed or not; return each stream's events until all end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.ENABLE_PUSH: int(allow_push)}
    )
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "example.test")],
        end_stream=True,
    )
    writer.write(conn.data_to_send())
    streams: dict[int, dict[str, Any]] = {}
    open_streams = {1}
    try:
        while open_streams:
            data = await asyncio.wait_for(reader.read(65536), TIMEOUT_S)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.PushedStreamReceived):
                    open_streams.add(event.pushed_stream_id)
                    streams.setdefault(event.pushed_stream_id, {})["promise"] = event.headers
                elif isinstance(event, h2.events.ResponseReceived):
                    streams.setdefault(event.stream_id, {})["headers"] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    entry = streams.setdefault(event.stream_id, {})
                    entry["body"] = entry.get("body", b"") + event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    open_streams.discard(event.stream_id)
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    return streams


async def test_a_push_is_promised_and_answered_by_the_app() -> None:
    async with serve(page_with_push) as srv:
        streams = await exchange(srv.port, allow_push=True)
    assert sorted(streams) == [1, 2]
    promise = dict(streams[2]["promise"])
    # The promised request: GET, the parent's scheme and authority, the path
    # percent-encoded again, the app's headers lowercased.
    assert promise[b":method"] == b"GET"
    assert promise[b":scheme"] == b"http"
    assert promise[b":authority"] == b"example.test"
    assert promise[b":path"] == b"/static/a%20b.css"
    assert promise[b"accept"] == b"text/css"
    assert streams[2]["headers"][b":status"] == b"200"
    assert streams[2]["body"] == b"/static/a b.css|example.test|b'text/css'"
    assert streams[1]["body"] == b"/|example.test|b''"


async def test_no_push_when_the_client_disables_it() -> None:
    async with serve(page_with_push) as srv:
        streams = await exchange(srv.port, allow_push=False)
    assert sorted(streams) == [1]
    assert streams[1]["body"] == b"/|example.test|b''"


@pytest.mark.parametrize("path", [b"relative.css", 42])
async def test_a_bad_push_path_is_the_apps_error(path: Any) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.push", "path": path, "headers": []})

    async with serve(app) as srv:
        streams = await exchange(srv.port, allow_push=True)
    # The app raised before any body: the server answers 500 (the head was not out).
    assert streams[1]["headers"][b":status"] == b"500"
