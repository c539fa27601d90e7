"""Host and an absolute-form target's authority must be ``uri-host [":" port]`` (issue 16).

RFC 9112 §3.2 answers a Host with an invalid value with 400, and RFC 9110
§4.2.4 treats userinfo in a target URI as an error: otherwise
``GET http://good.example@evil.example/`` reaches the app with a host that
names one server to the app and another to anything that parses the URI.
Both head paths are covered: the C head reader takes plain GETs, llhttp takes
the rest (here: any request with a Content-Length), and WebSocket handshakes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sluiceway.errors import BadRequest
from sluiceway.http1 import wire
from tests.http1.apps import scope_json
from tests.support import exchange, raw_connection, serve
from tests.websocket.ws_support import KEY

VALID = [
    b"a",
    b"example.com",
    b"example.com:8080",
    b"example.com:",  # port = *DIGIT: empty is allowed
    b"127.0.0.1:80",
    b"[::1]",
    b"[::1]:8000",
    b"[2001:db8::1]:443",
    b"[::ffff:192.0.2.1]",
    b"[v1.fe80-x]",  # IPvFuture
    b"xn--bcher-kva.example",
    b"a%41b",
    b"sub-delims!$&'()*+,;=.~_",
    b"",  # RFC 9112 §3.2: empty when the target URI has no authority
]
INVALID = [
    b"a b",
    b"a@evil",
    b"good.example@evil.example",
    b"user:pass@a",
    b"a:b",
    b"a:80:80",
    b"a:8a",
    b"a/b",
    b"a?b",
    b"a\\b",
    b'"a"',
    b"a%4",
    b"a%zz",
    b"[::1",
    b"[::1]x",
    b"[::1]:80:80",
    b"[::g]",
    b"[]",
    b"[127.0.0.1]",
    b"[fe80::1%25eth0]",  # a zone ID is not in RFC 3986's IPv6address
    b"[v1.]",
]


@pytest.mark.parametrize("host", VALID)
def test_check_host_takes_uri_host_and_port(host: bytes) -> None:
    wire.check_host(host)
    wire.check_host(host + b" \t")  # trailing whitespace is not part of the value


@pytest.mark.parametrize("host", INVALID)
def test_check_host_refuses_everything_else(host: bytes) -> None:
    with pytest.raises(BadRequest):
        wire.check_host(host)


def request(host: bytes, path: str, target: bytes = b"/echo") -> bytes:
    """A GET the C head reader takes, or (``llhttp``) one only llhttp's path takes."""
    extra = b"Content-Length: 0\r\n" if path == "llhttp" else b""
    return b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra + b"\r\n"


class Recorder:
    def __init__(self) -> None:
        self.scopes: list[Any] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        await scope_json(scope, receive, send)


PATHS = ["reader", "llhttp"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", [b"a b", b"a@evil", b"good.example@evil.example", b"a:b"])
async def test_an_invalid_host_is_400_and_never_reaches_the_app(host: bytes, path: str) -> None:
    app = Recorder()
    async with serve(app) as srv:
        response = await exchange(srv.port, request(host, path))
    assert response.status == 400
    assert app.scopes == []


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", [b"[::1]:8000", b"example.com:", b"a%41", b"a:80 "])
async def test_a_valid_host_reaches_the_app_as_sent(host: bytes, path: str) -> None:
    async with serve(scope_json) as srv:
        response = await exchange(srv.port, request(host, path))
    assert response.status == 200
    headers = json.loads(response.body)["headers"]
    assert ["host", host.decode()] in headers  # as llhttp gives it: trailing space kept


async def test_every_new_host_is_checked_on_one_server() -> None:
    # llhttp's path skips the check for the host it last found valid: the
    # others, valid or not, are each checked again.
    hosts = [b"a", b"a b", b"a", b"b", b"a@evil", b"[::1]", b"a:b"]
    async with serve(scope_json) as srv:
        statuses = [(await exchange(srv.port, request(host, "llhttp"))).status for host in hosts]
    assert statuses == [200, 400, 200, 200, 400, 200, 400]


@pytest.mark.parametrize(
    "target",
    [
        b"http://good.example@evil.example/echo",
        b"http://user:pass@good.example/echo",
        b"http://@good.example/echo",
        b"http://good.example:80@evil.example:80/echo",
        b"http://a b/echo",
        b"http://:80/echo",  # no host, only a port (RFC 9110 §4.2.1)
        b"http://[::1/echo",
    ],
)
async def test_an_absolute_form_target_with_userinfo_or_a_bad_authority_is_400(
    target: bytes,
) -> None:
    app = Recorder()
    async with serve(app) as srv:
        response = await exchange(srv.port, request(b"good.example", "reader", target))
    assert response.status == 400
    assert app.scopes == []


async def test_an_absolute_form_target_with_a_valid_authority_is_served() -> None:
    async with serve(scope_json) as srv:
        response = await exchange(srv.port, request(b"x", "reader", b"http://[::1]:8080/p?q"))
    assert response.status == 200
    assert ["host", "[::1]:8080"] in json.loads(response.body)["headers"]


async def test_the_host_check_holds_for_http10_too() -> None:
    async with serve(scope_json) as srv:
        bad = await exchange(srv.port, b"GET / HTTP/1.0\r\nHost: a@evil\r\n\r\n")
        without = await exchange(srv.port, b"GET / HTTP/1.0\r\n\r\n")
    assert (bad.status, without.status) == (400, 200)


def handshake(host: bytes, target: bytes = b"/") -> bytes:
    return (
        b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )


@pytest.mark.parametrize(
    "data",
    [
        handshake(b"a b"),
        handshake(b"good.example@evil.example"),
        handshake(b"good.example", b"http://good.example@evil.example/"),
    ],
    ids=["space", "userinfo_in_host", "userinfo_in_target"],
)
async def test_a_websocket_handshake_with_an_invalid_host_is_400(data: bytes) -> None:
    connected: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        connected.append(scope)
        await receive()
        await send({"type": "websocket.accept"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(data)
        response = await conn.read_response()
        assert await conn.at_eof()
    assert response.status == 400
    assert connected == []


async def test_a_websocket_handshake_with_a_valid_host_is_accepted() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(handshake(b"[::1]:8000"))
        response = await conn.read_response(head=True)
    assert response.status == 101
