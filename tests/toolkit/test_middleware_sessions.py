"""SessionMiddleware with both stores: saving, laziness, tampering, expiry, rotation."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from sluiceway.middleware import (
    InMemorySessionStore,
    SessionMiddleware,
    SessionMiddlewareStack,
    SessionStore,
    SignedCookieStore,
)
from sluiceway.middleware import sessions as sessions_module
from sluiceway.testing import HttpCommunicator, WebsocketCommunicator

SECRET = "s" * 32


def counter_app(touch: bool = True) -> Any:
    """Counts visits in the session; ``/flush`` and ``/cycle`` do what they say."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        session = scope["session"]
        body = b"untouched"
        if scope["path"] == "/flush":
            session.flush()
        elif scope["path"] == "/cycle":
            session.cycle_key()
        elif touch:
            session["visits"] = session.get("visits", 0) + 1
            body = str(session["visits"]).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"b")]})
        await send({"type": "http.response.body", "body": body})

    return app


def session_cookie(response: dict[str, Any], name: str = "sessionid") -> str | None:
    for key, value in response["headers"]:
        if key == b"set-cookie" and value.startswith(name.encode() + b"="):
            return value.split(b";", 1)[0].split(b"=", 1)[1].decode()
    return None


async def request(app: Any, cookie: str | None = None, path: str = "/") -> dict[str, Any]:
    headers = [(b"cookie", f"sessionid={cookie}".encode())] if cookie is not None else []
    return await HttpCommunicator(app, "GET", path, headers=headers).get_response()


@pytest.fixture(params=["memory", "signed"])
def store(request: pytest.FixtureRequest) -> SessionStore:
    return InMemorySessionStore() if request.param == "memory" else SignedCookieStore(SECRET)


async def test_session_round_trip(store: SessionStore) -> None:
    app = SessionMiddlewareStack(counter_app(), store=store)
    first = await request(app)
    assert first["body"] == b"1"
    cookie = session_cookie(first)
    assert cookie
    header = dict(first["headers"])[b"set-cookie"]
    assert b"HttpOnly" in header and b"SameSite=Lax" in header and b"Max-Age=1209600" in header
    second = await request(app, cookie)
    assert second["body"] == b"2"
    assert (b"x-a", b"b") in second["headers"]


async def test_untouched_session_sets_no_cookie_and_loads_nothing() -> None:
    loads = 0

    class Spy(InMemorySessionStore):
        def load_now(self, key: str, max_age_s: int) -> dict[str, Any] | None:
            nonlocal loads
            loads += 1
            return super().load_now(key, max_age_s)

    spy = Spy()
    app = SessionMiddleware(counter_app(touch=False), spy)
    response = await request(app, "some-key")
    assert session_cookie(response) is None
    assert loads == 0
    assert len(spy) == 0


async def test_garbage_cookies_are_a_fresh_session(store: SessionStore) -> None:
    app = SessionMiddlewareStack(counter_app(), store=store)
    good = session_cookie(await request(app))
    assert good
    forged = [
        "",
        "x",
        "a.b",
        "a.b.c",
        "!!!.@@@.###",
        good[:-2] + ("AA" if good[-2:] != "AA" else "BB"),  # broken signature
        "e30." + good.split(".", 1)[1] if "." in good else "e30",  # swapped payload "{}"
        good + "." + good,
        "é" * 10,
        "x" * 20000,
    ]
    for value in forged:
        response = await request(app, value)
        assert response["body"] == b"1", value
        new = session_cookie(response)
        assert new and new != value


async def test_tampered_payload_is_refused() -> None:
    store = SignedCookieStore(SECRET)
    value = await store.save(None, {"user": 1}, 60)
    _payload, stamp, signature = value.split(".")
    evil = sessions_module._b64encode(b'{"user":2}')
    assert store.load_now(value, 60) == {"user": 1}
    assert store.load_now(f"{evil}.{stamp}.{signature}", 60) is None
    other = SignedCookieStore("another secret of enough length")
    assert other.load_now(value, 60) is None


async def test_signed_store_expiry(monkeypatch: pytest.MonkeyPatch) -> None:
    store = SignedCookieStore(SECRET)
    value = await store.save(None, {"a": 1}, 60)
    now = time.time()
    monkeypatch.setattr(sessions_module.time, "time", lambda: now + 61)
    assert store.load_now(value, 60) is None
    assert store.load_now(value, 3600) == {"a": 1}


async def test_signed_store_key_rotation() -> None:
    old = SignedCookieStore("old secret, long enough")
    value = await old.save(None, {"a": 1}, 60)
    rotated = SignedCookieStore(["new secret, long enough", "old secret, long enough"])
    assert rotated.load_now(value, 60) == {"a": 1}
    resigned = await rotated.save(value, {"a": 1}, 60)
    assert old.load_now(resigned, 60) is None
    assert SignedCookieStore("new secret, long enough").load_now(resigned, 60) == {"a": 1}


def test_signed_store_needs_real_secrets() -> None:
    with pytest.raises(ValueError):
        SignedCookieStore("short")
    with pytest.raises(ValueError):
        SignedCookieStore([])


async def test_signed_store_refuses_oversized_sessions() -> None:
    with pytest.raises(ValueError, match="server-side store"):
        await SignedCookieStore(SECRET).save(None, {"blob": "x" * 5000}, 60)


async def test_memory_store_does_not_adopt_client_keys() -> None:
    store = InMemorySessionStore()
    app = SessionMiddleware(counter_app(), store)
    response = await request(app, "attacker-chosen")
    issued = session_cookie(response)
    assert issued and issued != "attacker-chosen"
    assert await store.load("attacker-chosen", 60) is None


async def test_memory_store_is_bounded_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    store = InMemorySessionStore(max_sessions=3)
    keys = [await store.save(None, {"n": n}, 60) for n in range(5)]
    assert len(store) == 3
    assert await store.load(keys[0], 60) is None
    assert await store.load(keys[4], 60) == {"n": 4}
    now = time.monotonic()
    monkeypatch.setattr(sessions_module.time, "monotonic", lambda: now + 61)
    assert await store.load(keys[4], 60) is None
    with pytest.raises(ValueError):
        InMemorySessionStore(max_sessions=0)


async def test_cycle_key_keeps_data_under_a_new_key() -> None:
    store = InMemorySessionStore()
    app = SessionMiddlewareStack(counter_app(), store=store)
    first = session_cookie(await request(app))
    assert first
    cycled = session_cookie(await request(app, first, "/cycle"))
    assert cycled and cycled != first
    assert await store.load(first, 60) is None
    assert (await request(app, cycled))["body"] == b"2"


async def test_flush_deletes_the_cookie(store: SessionStore) -> None:
    app = SessionMiddlewareStack(counter_app(), store=store)
    first = session_cookie(await request(app))
    response = await request(app, first, "/flush")
    header = dict(response["headers"])[b"set-cookie"]
    assert header.startswith(b"sessionid=; Max-Age=0")
    if isinstance(store, InMemorySessionStore):
        assert len(store) == 0


async def test_async_only_store_is_loaded_before_the_app() -> None:
    class AsyncStore(SessionStore):
        def __init__(self) -> None:
            self.data: dict[str, dict[str, Any]] = {"k1": {"visits": 41}}

        async def load(self, key: str, max_age_s: int) -> dict[str, Any] | None:
            return dict(self.data[key]) if key in self.data else None

        async def save(self, key: str | None, data: dict[str, Any], max_age_s: int) -> str:
            key = key if key in self.data else f"k{len(self.data) + 1}"
            self.data[key] = dict(data)
            return key

        async def delete(self, key: str) -> None:
            self.data.pop(key, None)

    store = AsyncStore()
    app = SessionMiddlewareStack(counter_app(), store=store)
    response = await request(app, "k1")
    assert response["body"] == b"42"
    assert store.data["k1"] == {"visits": 42}


async def test_websocket_saving_is_explicit() -> None:
    store = InMemorySessionStore()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        session = scope["session"]
        session["room"] = "lobby"
        await send({"type": "websocket.send", "text": str(len(store))})
        await session.save()
        await send({"type": "websocket.send", "text": str(session.session_key)})
        await receive()

    comm = WebsocketCommunicator(SessionMiddlewareStack(app, store=store), "/")
    assert (await comm.connect())[0]
    assert await comm.receive_from() == "0"
    key = await comm.receive_from()
    assert await store.load(str(key), 60) == {"room": "lobby"}
    await comm.disconnect()


async def test_session_without_cookie_middleware_reads_the_header() -> None:
    store = InMemorySessionStore()
    app = SessionMiddleware(counter_app(), store)  # no CookieMiddleware around it
    first = session_cookie(await request(app))
    assert (await request(app, first))["body"] == b"2"


def test_bad_cookie_configuration_fails_early() -> None:
    with pytest.raises(ValueError):
        SessionMiddleware(counter_app(), cookie_name="bad name")
    with pytest.raises(ValueError):
        SessionMiddleware(counter_app(), samesite="none", secure=False)


def test_secret_key_selects_the_signed_store() -> None:
    assert isinstance(SessionMiddleware(counter_app(), secret_key=SECRET).store, SignedCookieStore)
    assert isinstance(SessionMiddleware(counter_app()).store, InMemorySessionStore)


async def test_session_cookie_attributes() -> None:
    app = SessionMiddleware(
        counter_app(),
        InMemorySessionStore(),
        cookie_name="sid",
        max_age_s=60,
        cookie_path="/app",
        cookie_domain="example.com",
        secure=True,
        samesite="strict",
    )
    response = await request(app)
    header = dict(response["headers"])[b"set-cookie"].decode()
    assert re.fullmatch(
        r"sid=[A-Za-z0-9_-]{43}; Max-Age=60; Expires=\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT; "
        r"Domain=example\.com; Path=/app; Secure; HttpOnly; SameSite=Strict",
        header,
    ), header


async def test_a_store_key_unfit_for_a_cookie_is_refused() -> None:
    class Broken(InMemorySessionStore):
        async def save(self, key: str | None, data: dict[str, Any], max_age_s: int) -> str:
            return "a key; Domain=evil"

    with pytest.raises(ValueError, match="unfit"):
        await request(SessionMiddleware(counter_app(), Broken()))
