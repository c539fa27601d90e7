"""AuthMiddleware: users from the session, login/logout, the full stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from sluiceway.middleware import (
    AnonymousUser,
    AuthMiddleware,
    AuthMiddlewareStack,
    InMemorySessionStore,
    SessionUser,
    login,
    logout,
)
from sluiceway.testing import HttpCommunicator, WebsocketCommunicator


@dataclass
class User:
    pk: int
    name: str
    is_authenticated: bool = True


USERS = {1: User(1, "ada"), 2: User(2, "grace")}


class Loader:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    async def __call__(self, user_id: Any) -> User | None:
        self.calls.append(user_id)
        return USERS.get(user_id)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``/login/<n>`` logs in user n, ``/logout`` logs out, else report the user."""
    await receive()
    target = scope["path"]
    if target.startswith("/login/"):
        await login(scope, USERS[int(target.rsplit("/", 1)[1])])
    elif target == "/logout":
        await logout(scope)
    user = scope["user"]
    body = f"{getattr(user, 'name', repr(user))}:{user.is_authenticated}".encode()
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": body})


def cookie_of(response: dict[str, Any]) -> str | None:
    for key, value in response["headers"]:
        if key == b"set-cookie":
            return value.split(b";", 1)[0].split(b"=", 1)[1].decode()
    return None


async def hit(stack: Any, path: str, cookie: str | None = None) -> dict[str, Any]:
    headers = [("cookie", f"sessionid={cookie}")] if cookie else []
    return await HttpCommunicator(stack, "GET", path, headers=headers).get_response()


@pytest.fixture(params=["memory", "signed"])
def session_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {"store": InMemorySessionStore()}
    return {"secret_key": "a secret that is long enough"}


async def test_anonymous_without_cookie_and_no_loader_call(session_options: Any) -> None:
    loader = Loader()
    stack = AuthMiddlewareStack(app, loader, **session_options)
    response = await hit(stack, "/")
    assert response["body"] == b"AnonymousUser():False"
    assert loader.calls == []
    assert cookie_of(response) is None


async def test_login_then_user_is_loaded_then_logout(session_options: Any) -> None:
    loader = Loader()
    stack = AuthMiddlewareStack(app, loader, **session_options)
    # A session exists before this login; login must replace its key.
    before = cookie_of(await hit(stack, "/login/1"))
    response = await hit(stack, "/login/1", before)
    assert response["body"] == b"ada:True"
    cookie = cookie_of(response)
    assert cookie and cookie != before
    assert (await hit(stack, "/", cookie))["body"] == b"ada:True"
    assert loader.calls == [1, 1]  # once per request that carried the login
    out = await hit(stack, "/logout", cookie)
    assert out["body"] == b"AnonymousUser():False"
    assert cookie_of(out) == ""  # deleted
    if "store" in session_options:
        assert (await hit(stack, "/", cookie))["body"] == b"AnonymousUser():False"


async def test_switching_users_drops_the_previous_data() -> None:
    store = InMemorySessionStore()
    stack = AuthMiddlewareStack(app, Loader(), store=store)
    first = cookie_of(await hit(stack, "/login/1"))
    second = cookie_of(await hit(stack, "/login/2", first))
    assert second and second != first
    assert await store.load(first or "", 60) is None
    assert (await hit(stack, "/", second))["body"] == b"grace:True"


async def test_deleted_user_is_anonymous() -> None:
    store = InMemorySessionStore()
    stack = AuthMiddlewareStack(app, Loader(), store=store)
    cookie = cookie_of(await hit(stack, "/login/2"))
    del USERS[2]
    try:
        assert (await hit(stack, "/", cookie))["body"] == b"AnonymousUser():False"
    finally:
        USERS[2] = User(2, "grace")


async def test_no_loader_gives_a_session_user() -> None:
    stack = AuthMiddlewareStack(app, store=InMemorySessionStore())
    cookie = cookie_of(await hit(stack, "/login/1"))
    assert (await hit(stack, "/", cookie))["body"] == b"SessionUser(1):True"
    assert SessionUser(1) == SessionUser(1) != AnonymousUser()


async def test_auth_without_sessions_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await HttpCommunicator(AuthMiddleware(app), "GET", "/").get_response()


async def test_login_needs_an_identifiable_user() -> None:
    async def bad(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await login(scope, object())

    with pytest.raises(ValueError, match="no 'pk' or 'id'"):
        await HttpCommunicator(AuthMiddlewareStack(bad), "GET", "/").get_response()


async def test_websocket_login_saved_explicitly() -> None:
    store = InMemorySessionStore()

    async def ws(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await login(scope, USERS[1])
        await scope["session"].save()
        await send({"type": "websocket.send", "text": scope["session"].session_key})
        await receive()

    comm = WebsocketCommunicator(AuthMiddlewareStack(ws, Loader(), store=store), "/")
    assert (await comm.connect())[0]
    key = await comm.receive_from()
    await comm.disconnect()
    stack = AuthMiddlewareStack(app, Loader(), store=store)
    assert (await hit(stack, "/", str(key)))["body"] == b"ada:True"
