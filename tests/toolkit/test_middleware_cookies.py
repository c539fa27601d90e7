"""CookieMiddleware parsing (tolerant) and Set-Cookie building (strict)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sluiceway.middleware import BaseMiddleware, CookieMiddleware, parse_cookie
from sluiceway.middleware.cookies import build_set_cookie, delete_cookie, set_cookie
from sluiceway.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator


async def cookie_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": repr(scope["cookies"])})
        return
    await receive()
    start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": []}
    set_cookie(start, "seen", "1", max_age=60, httponly=True, secure=True, samesite="strict")
    await send(start)
    await send({"type": "http.response.body", "body": repr(scope["cookies"]).encode()})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("a=1; b=2", {"a": "1", "b": "2"}),
        ("a=1;b=2;  c = 3 ", {"a": "1", "b": "2", "c": "3"}),
        ('q="quoted value"', {"q": "quoted value"}),
        ("a=1; a=2", {"a": "1"}),  # RFC 6265 §5.4: first one wins
        ("novalue; =empty; a=1", {"a": "1"}),  # malformed pairs skipped
        ("bad name=1; ok=2", {"ok": "2"}),
        ("a=x=y", {"a": "x=y"}),
        (";;;", {}),
        ("", {}),
        ("\x00=\x01; k=\xff", {"k": "\xff"}),
        ("e=", {"e": ""}),
    ],
)
def test_parse_cookie_is_tolerant(header: str, expected: dict[str, str]) -> None:
    assert parse_cookie(header) == expected


async def test_middleware_parses_http_cookies_and_sets_one() -> None:
    app = CookieMiddleware(cookie_echo)
    comm = HttpCommunicator(
        app, "GET", "/", headers=[(b"cookie", b"a=1; junk; b=\xe9"), (b"cookie", b"c=3")]
    )
    response = await comm.get_response()
    assert eval(response["body"]) == {"a": "1", "b": "é", "c": "3"}
    cookie = dict(response["headers"])[b"set-cookie"]
    assert cookie.startswith(b"seen=1; Max-Age=60; Expires=")
    assert cookie.endswith(b"; Path=/; Secure; HttpOnly; SameSite=Strict")


async def test_middleware_on_websocket_and_without_header() -> None:
    comm = WebsocketCommunicator(CookieMiddleware(cookie_echo), "/", headers=[("cookie", "x=y")])
    assert (await comm.connect())[0]
    assert await comm.receive_from() == "{'x': 'y'}"
    response = await HttpCommunicator(CookieMiddleware(cookie_echo), "GET", "/").get_response()
    assert response["body"] == b"{}"


async def test_other_scopes_pass_through_untouched() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "seen", "has_cookies": "cookies" in scope})

    comm = ApplicationCommunicator(CookieMiddleware(app), {"type": "lifespan"})
    assert (await comm.receive_output())["has_cookies"] is False


async def test_base_middleware_copies_the_scope() -> None:
    class Tagger(BaseMiddleware):
        async def populate_scope(self, scope: Any) -> None:
            scope["tag"] = "inner only"

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "seen", "tag": scope.get("tag")})

    scope = {"type": "custom"}
    comm = ApplicationCommunicator(Tagger(app), scope)
    assert (await comm.receive_output())["tag"] == "inner only"
    assert "tag" not in scope


def test_build_set_cookie_attributes() -> None:
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    value = build_set_cookie(
        "k", "v", expires=when, domain="example.com", path="/app", samesite="none", secure=True
    )
    assert value == (
        b"k=v; Expires=Wed, 02 Jan 2030 03:04:05 GMT; Domain=example.com; Path=/app; "
        b"Secure; SameSite=None"
    )
    assert build_set_cookie("k", "v", max_age=timedelta(minutes=1), samesite=None).startswith(
        b"k=v; Max-Age=60; Expires="
    )
    assert build_set_cookie("k", '"quoted"', path=None, samesite=None) == b'k="quoted"'


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": "bad name", "value": "v"},
        {"key": "k;", "value": "v"},
        {"key": "k", "value": "a;b"},
        {"key": "k", "value": "a\r\nSet-Cookie: evil=1"},
        {"key": "k", "value": "sp ace"},
        {"key": "k", "value": "v", "path": "/a;Domain=evil"},
        {"key": "k", "value": "v", "domain": "x\ny"},
        {"key": "k", "value": "v", "samesite": "sideways"},
        {"key": "k", "value": "v", "samesite": "none"},  # without secure
    ],
)
def test_build_set_cookie_rejects_injection(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        build_set_cookie(**kwargs)


def test_set_and_delete_on_messages() -> None:
    start: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": ()}
    CookieMiddleware.set_cookie(start, "a", "1")
    delete_cookie(start, "b", path="/x")
    assert start["headers"][0] == (b"set-cookie", b"a=1; Path=/; SameSite=Lax")
    assert start["headers"][1][1].startswith(b"b=; Max-Age=0; Expires=Thu, 01 Jan 1970")
    with pytest.raises(ValueError):
        set_cookie({"type": "http.response.body"}, "a", "1")
