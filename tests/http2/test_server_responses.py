"""HTTP/2 end to end: what an ASGI app sends, as the ``h2`` library's client receives it.

Trailers (how gRPC sends its status; grpcio is not installed, so the ``h2``
client reads them as a gRPC client's transport would), 103 early hints,
file bodies, bodiless responses, request bodies, a client's RST_STREAM, app
failures, and the concurrency limit. Both loops (``conftest.py``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from .h2_support import INTERNAL_ERROR
from .server_support import H2Client, body, serving, start, until

PAYLOAD = bytes(range(256)) * 1000  # 256,000 bytes: several windows' worth


async def read_all(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        chunks.append(message["body"])
        if not message.get("more_body"):
            return b"".join(chunks)


# -- trailers, early hints, files -------------------------------------------------------------


async def test_grpc_style_trailers_reach_a_real_client() -> None:
    async def grpc(scope: Any, receive: Any, send: Any) -> None:
        request = await read_all(receive)
        headers = [(b"content-type", b"application/grpc")]
        await send(start(headers=headers, trailers=True))
        await send(body(b"\x00" + len(request).to_bytes(4, "big") + request, more=True))
        await send(body())
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})

    async with serving(grpc) as server, H2Client.connect(server.port) as client:
        message = b"\x00\x00\x00\x00\x05hello"
        stream_id = await client.request(
            b"POST",
            b"/pkg.Service/Method",
            [(b"content-type", b"application/grpc"), (b"te", b"trailers")],
            body=message,
        )
        response = await client.response(stream_id)
    assert response.status == 200
    assert response.header(b"content-type") == b"application/grpc"
    assert bytes(response.body) == b"\x00\x00\x00\x00\x0a" + message
    assert response.trailers == [(b"grpc-status", b"0")]
    assert response.ended


async def test_trailers_wait_behind_data_the_window_holds() -> None:
    # The client's window takes 1,000 bytes at first: the trailers must still
    # come last, after all the DATA, once the window opens.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(trailers=True))
        await send(body(PAYLOAD[:5000]))
        await send({"type": "http.response.trailers", "headers": [(b"x-sum", b"5000")]})

    async with serving(app) as server, H2Client.connect(server.port, settings={4: 1000}) as client:
        response = await client.get()
    assert bytes(response.body) == PAYLOAD[:5000]
    assert response.trailers == [(b"x-sum", b"5000")]


async def test_early_hint_is_an_informational_headers_frame_before_the_200() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        links = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload"]
        await send({"type": "http.response.early_hint", "links": links})
        await send(start())
        await send(body(b"ok"))

    async with serving(app) as server, H2Client.connect(server.port) as client:
        response = await client.get()
    hint, final = response.heads
    assert hint[0] == (b":status", b"103")
    assert [v for n, v in hint if n == b"link"] == [
        b"</style.css>; rel=preload; as=style",
        b"</app.js>; rel=preload",
    ]
    assert final[0] == (b":status", b"200") and bytes(response.body) == b"ok"


async def test_pathsend_body(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send({"type": "http.response.pathsend", "path": str(path)})

    async with serving(app) as server, H2Client.connect(server.port) as client:
        response = await client.get()
        head = await client.response(await client.request(b"HEAD"))
    assert response.header(b"content-length") == b"%d" % len(PAYLOAD)
    assert bytes(response.body) == PAYLOAD
    assert head.header(b"content-length") == b"%d" % len(PAYLOAD)
    assert head.ended and head.body == b""  # (an empty DATA frame ends it)


async def test_zerocopysend_body_with_offset_and_count_between_body_parts(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with open(path, "rb") as handle:
            await send(start())
            await send(body(b"<", more=True))
            message = {"type": "http.response.zerocopysend", "file": handle}
            await send({**message, "offset": 10, "count": 100_000, "more_body": True})
            await send(body(b">"))

    async with serving(app) as server, H2Client.connect(server.port) as client:
        response = await client.get()
    assert response.status == 200
    assert bytes(response.body) == b"<" + PAYLOAD[10:100_010] + b">"


# -- responses without content --------------------------------------------------------------------


async def test_head_has_content_length_and_no_data() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send(body(PAYLOAD))

    async with serving(app) as server, H2Client.connect(server.port) as client:
        response = await client.response(await client.request(b"HEAD"))
    assert response.status == 200
    assert response.header(b"content-length") == b"%d" % len(PAYLOAD)
    assert response.data_frames == 0 and response.body == b""
    assert response.ended


@pytest.mark.parametrize("status", [204, 304])
async def test_no_content_statuses_end_on_the_headers_frame(status: int) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start(status, [(b"etag", b'"v1"')]))
        await send(body())

    async with serving(app) as server, H2Client.connect(server.port) as client:
        response = await client.get()
        assert (await client.get()).status == status  # the connection goes on
    assert response.status == status
    assert response.data_frames == 0 and response.ended
    assert response.header(b"content-length") is None


# -- request bodies -------------------------------------------------------------------------------


async def echo(scope: Any, receive: Any, send: Any) -> None:
    data = await read_all(receive)
    await send(start(headers=[(b"content-length", b"%d" % len(data))]))
    await send(body(data))


@pytest.mark.parametrize("size", [0, 1, 16_384, 200_000])
async def test_post_body_reaches_the_app(size: int) -> None:
    data = PAYLOAD[:size]
    async with serving(echo) as server, H2Client.connect(server.port) as client:
        headers = [(b"content-length", b"%d" % size)]
        stream_id = await client.request(b"POST", b"/", headers, body=data)
        response = await client.response(stream_id)
    assert response.status == 200 and bytes(response.body) == data


async def test_client_reset_gives_the_app_http_disconnect() -> None:
    seen: list[dict[str, Any]] = []
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        if scope["path"] == "/next":
            await send(body(b"next"))
            return
        await send(body(b"first", more=True))
        started.set()
        seen.append(await receive())  # the request had no body: this waits for the end
        seen.append(await receive())

    async with serving(app) as server, H2Client.connect(server.port) as client:
        stream_id = await client.request(b"GET", b"/")
        await asyncio.wait_for(started.wait(), 5)
        await client.reset(stream_id)
        await until(lambda: len(seen) == 2)
        assert bytes((await client.get(b"/next")).body) == b"next"  # the connection goes on
    assert seen[0] == {"type": "http.request", "body": b"", "more_body": False}
    assert seen[1] == {"type": "http.disconnect"}


# -- app failures and limits ----------------------------------------------------------------------


async def test_app_exception_before_the_head_is_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        await send(start())
        await send(body(b"ok"))

    async with serving(app) as server, H2Client.connect(server.port) as client:
        response = await client.get(b"/fail")
        assert response.status == 500 and b"boom" not in response.body
        assert (await client.get(b"/")).status == 200


async def test_app_exception_after_the_head_is_rst_stream_internal_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send(body(b"partial", more=True))
        if scope["path"] == "/fail":
            raise RuntimeError("boom")
        await send(body(b"!"))

    async with serving(app) as server, H2Client.connect(server.port) as client:
        response = await client.get(b"/fail")
        assert response.status == 200 and response.reset == INTERNAL_ERROR
        assert not response.ended
        assert bytes((await client.get(b"/")).body) == b"partial!"


async def test_limit_concurrency_answers_503_and_the_running_stream_completes() -> None:
    release = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await send(start())
        await send(body(b"ok"))

    async with serving(app, limit_concurrency=1) as server, H2Client.connect(server.port) as client:
        first = await client.request()
        await until(lambda: len(server.state.tasks) == 1)
        refused = await client.get()
        assert refused.status == 503
        release.set()
        assert bytes((await client.response(first)).body) == b"ok"
