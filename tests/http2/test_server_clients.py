"""HTTP/2 end to end: a real ``Server``, real clients, the ASGI scope they produce.

The clients are independent of sluiceway: httpx (``http2=True``, which uses
the ``h2`` library), curl (nghttp2), h2load (nghttp2) and the ``h2``
library's client connection driven here (``server_support.H2Client``).
Each test runs on the asyncio loop and on uvloop (``conftest.py``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import LocalTLS, local_tls, raw_connection

from .h2_support import PREFACE
from .server_support import H2Client, alpn_context, alpn_selected, serving

BODY = b"hello over HTTP/2\n"


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": BODY})


@pytest.fixture
def tls(tmp_path: Path) -> LocalTLS:
    return local_tls(tmp_path)


class ScopeApp:
    """Keeps each request's scope; lifespan puts a value in the state."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                scope["state"]["pool"] = "from lifespan"
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.scopes.append(scope)
        await hello(scope, receive, send)


# -- the scope ------------------------------------------------------------------------------------


async def test_scope_over_cleartext_prior_knowledge() -> None:
    app = ScopeApp()
    async with serving(app, lifespan="on") as server, H2Client.connect(server.port) as client:
        response = await client.get(
            b"/caf%C3%A9/a%2Fb?x=1&y",
            headers=[(b"x-one", b"1"), (b"host", b"example.com:8000"), (b"x-one", b"2")],
            authority=b"example.com:8000",
        )
        assert response.status == 200 and bytes(response.body) == BODY
        local = client.writer.get_extra_info("sockname")
    (scope,) = app.scopes
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "http"
    assert scope["method"] == "GET"
    assert scope["path"] == "/café/a/b"
    assert scope["raw_path"] == b"/caf%C3%A9/a%2Fb"
    assert scope["query_string"] == b"x=1&y"
    assert scope["root_path"] == ""
    # No pseudo-headers; :authority first, as host, in place of the (equal)
    # host field the client also sent; repeated fields kept in order.
    assert scope["headers"] == [
        (b"host", b"example.com:8000"),
        (b"x-one", b"1"),
        (b"x-one", b"2"),
    ]
    assert scope["client"] == (local[0], local[1])
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["state"] == {"pool": "from lifespan"}
    extensions = scope["extensions"]
    for name in (
        "http.response.trailers",
        "http.response.early_hint",
        "http.response.pathsend",
        "http.response.zerocopysend",
    ):
        assert name in extensions, name
    assert "tls" not in extensions


async def test_scope_over_tls_is_https_with_the_tls_extension(tls: LocalTLS) -> None:
    app = ScopeApp()
    async with (
        serving(app, **tls.options) as server,
        H2Client.connect(server.port, tls.client_context) as client,
    ):
        assert client.ssl_object.selected_alpn_protocol() == "h2"
        response = await client.get(b"/secure?q")
        assert response.status == 200
    (scope,) = app.scopes
    assert scope["http_version"] == "2"
    assert scope["scheme"] == "https"
    assert scope["path"] == "/secure" and scope["query_string"] == b"q"
    info = scope["extensions"]["tls"]
    assert info["server_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert info["tls_version"] in (0x0303, 0x0304)
    assert info["client_cert_chain"] == []


# -- real clients ---------------------------------------------------------------------------------


async def test_httpx_gets_http2_through_alpn(tls: LocalTLS) -> None:
    async with serving(hello, **tls.options) as server:
        url = f"https://127.0.0.1:{server.port}/"
        async with httpx.AsyncClient(http2=True, verify=tls.client_context) as client:
            responses = await asyncio.gather(*(client.get(url) for _ in range(5)))
    for response in responses:
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200 and response.content == BODY


async def test_httpx_prior_knowledge_and_http11_share_the_port() -> None:
    async with serving(hello) as server:
        url = f"http://127.0.0.1:{server.port}/"
        async with httpx.AsyncClient(http1=False, http2=True) as h2c:
            response = await h2c.get(url)
            assert response.http_version == "HTTP/2" and response.content == BODY
        async with httpx.AsyncClient() as h1:
            response = await h1.get(url)
            assert response.http_version == "HTTP/1.1" and response.content == BODY


async def curl(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-v", "--max-time", "5", *args, stdout=-1, stderr=-1
    )
    out, err = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_curl_http2_prior_knowledge() -> None:
    # One URL per run: Debian 12's curl 7.88.1 fails a second request on a
    # reused prior-knowledge connection ("Error in the HTTP2 framing layer")
    # against hypercorn and granian alike; h2load covers many streams below.
    async with serving(hello) as server:
        code, out, err = await curl("--http2-prior-knowledge", f"http://127.0.0.1:{server.port}/")
    assert code == 0, err
    assert out == BODY.decode()
    assert "< HTTP/2 200" in err


async def test_curl_http2_over_tls(tls: LocalTLS) -> None:
    async with serving(hello, **tls.options) as server:
        code, out, err = await curl("--http2", "-k", f"https://127.0.0.1:{server.port}/")
    assert code == 0, err
    assert "ALPN: server accepted h2" in err or "ALPN, server accepted to use h2" in err
    assert "< HTTP/2 200" in err and out == BODY.decode()


H2LOAD_DONE = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded")


@pytest.mark.parametrize("over_tls", [False, True], ids=["h2c", "tls"])
async def test_h2load_smoke_all_requests_succeed(over_tls: bool, tls: LocalTLS) -> None:
    # Not a speed test: 400 requests over 4 connections x 8 streams all answered 2xx.
    options = tls.options if over_tls else {}
    async with serving(hello, access_log=False, **options) as server:
        scheme = "https" if over_tls else "http"
        process = await asyncio.create_subprocess_exec(
            "h2load", "-n", "400", "-c", "4", "-m", "8", f"{scheme}://127.0.0.1:{server.port}/",
            stdout=-1, stderr=-2,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 30)
    text = out.decode()
    match = H2LOAD_DONE.search(text)
    assert process.returncode == 0 and match is not None, text
    assert match.groups() == ("400", "400", "400", "400"), text
    assert "status codes: 400 2xx" in text, text
    if over_tls:
        assert "Application protocol: h2" in text, text


# -- one port, both protocols, and --no-http2 ---------------------------------------------------


async def test_http11_still_served_on_the_same_port_alongside_http2() -> None:
    async with serving(hello) as server, H2Client.connect(server.port) as client:
        first = await client.request()  # an HTTP/2 connection stays open meanwhile
        async with raw_connection(server.port) as h1:
            await h1.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            response = await h1.read_response()
        assert response.raw.startswith(b"HTTP/1.1 200") and response.body == BODY
        assert (await client.response(first)).status == 200
        assert (await client.get()).status == 200


async def test_no_http2_answers_the_preface_with_http11_400() -> None:
    async with serving(hello, http2=False) as server, raw_connection(server.port) as conn:
        await conn.send(PREFACE)
        reply = await conn.read_until_close()
    assert reply.startswith(b"HTTP/1.1 400 ")


async def test_no_http2_alpn_picks_http11(tls: LocalTLS) -> None:
    async with serving(hello, http2=False, **tls.options) as server:
        offered = ["h2", "http/1.1"]
        assert await alpn_selected(server.port, tls.client_context, offered) == "http/1.1"
        async with httpx.AsyncClient(http2=True, verify=tls.client_context) as client:
            response = await client.get(f"https://127.0.0.1:{server.port}/")
    assert response.http_version == "HTTP/1.1" and response.content == BODY


async def test_alpn_offers_h2_first_when_on(tls: LocalTLS) -> None:
    async with serving(hello, **tls.options) as server:
        # The server's preference (RFC 7301 §3.2), not the client's order.
        offered = ["http/1.1", "h2"]
        assert await alpn_selected(server.port, tls.client_context, offered) == "h2"


async def test_invalid_preface_closes_the_connection_h2spec_3_5_2() -> None:
    # Neither an HTTP/1.1 request line nor the HTTP/2 preface: no HTTP/1.1 400
    # (meaningless to an HTTP/2 client), the connection just closes.
    async with serving(hello) as server, raw_connection(server.port) as conn:
        await conn.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
        assert await conn.read_until_close() == b""
        async with H2Client.connect(server.port) as client:
            assert (await client.get()).status == 200  # the server still serves


async def test_invalid_preface_after_alpn_h2_is_goaway_protocol_error(tls: LocalTLS) -> None:
    async with serving(hello, **tls.options) as server:
        context = alpn_context(tls.client_context, ["h2"])
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", server.port, ssl=context, server_hostname="127.0.0.1"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")  # HTTP/1.1 after ALPN said h2
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    # The server's SETTINGS, then GOAWAY (type 7) PROTOCOL_ERROR (1); never an HTTP/1.1 reply.
    assert not data.startswith(b"HTTP/")
    goaway = data.find(b"\x07\x00\x00\x00\x00\x00")
    assert goaway >= 3 and data[goaway + 10 : goaway + 14] == b"\x00\x00\x00\x01", data


# -- the access log -------------------------------------------------------------------------------


async def test_access_log_says_http2(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sluiceway.access"):
        async with serving(hello) as server, H2Client.connect(server.port) as client:
            await client.get(b"/logged?x=%0a")
    lines = [r.getMessage() for r in caplog.records if r.name == "sluiceway.access"]
    assert len(lines) == 1, lines
    assert f'"GET /logged?x=%0a HTTP/2" 200 {len(BODY)} ' in lines[0]
    assert lines[0].startswith("127.0.0.1:")
