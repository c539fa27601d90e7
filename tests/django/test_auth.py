"""sluiceway.django.auth / sessions: Django's sessions and users in ASGI scopes."""

from __future__ import annotations

import itertools
import json
from http.cookies import SimpleCookie
from typing import Any

import pytest
from asgiref.sync import sync_to_async as asgiref_sync_to_async
from django.contrib.auth.models import User
from django.test import Client, TestCase, override_settings

from sluiceway.django.auth import AuthMiddlewareStack, UserLazyObject, login, logout
from sluiceway.django.consumers import AsyncHttpConsumer, AsyncJsonWebsocketConsumer
from sluiceway.django.db import database_sync_to_async
from sluiceway.django.sessions import SessionMiddleware, SessionMiddlewareStack
from sluiceway.sync import sync_to_async
from sluiceway.testing import HttpCommunicator, WebsocketCommunicator

_names = itertools.count()


def new_user(password: str = "pw") -> User:
    return User.objects.create_user(f"user{next(_names)}", password=password)


def django_login(user: User, password: str = "pw") -> str:
    """Log in through Django's own machinery (the test client); return the session id."""
    client = Client()
    assert client.login(username=user.username, password=password)
    return str(client.cookies["sessionid"].value)


class WhoAmI(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        await self.send_json({"user": user.username or None, "auth": user.is_authenticated})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content["do"] == "login":
            user = await database_sync_to_async(User.objects.get)(username=content["name"])
            await login(self.scope, user)
        else:
            await logout(self.scope)
        await database_sync_to_async(self.scope["session"].save)()
        await self.send_json({"session": self.scope["session"].session_key})


def socket(app: Any, session_id: str | None = None) -> WebsocketCommunicator:
    headers = [(b"cookie", f"sessionid={session_id}".encode())] if session_id else []
    return WebsocketCommunicator(app, "/ws/", headers)


async def whoami(session_id: str | None) -> dict[str, Any]:
    comm = socket(AuthMiddlewareStack(WhoAmI.as_asgi()), session_id)
    connected, _ = await comm.connect()
    assert connected
    seen: dict[str, Any] = await comm.receive_json_from()
    await comm.disconnect()
    return seen


async def test_a_user_logged_in_through_django_is_the_sockets_user() -> None:
    user = await sync_to_async(new_user)()
    session_id = await sync_to_async(django_login)(user)
    assert await whoami(session_id) == {"user": user.username, "auth": True}


async def test_no_cookie_or_a_bad_cookie_is_anonymous() -> None:
    assert await whoami(None) == {"user": None, "auth": False}
    assert await whoami("0" * 32) == {"user": None, "auth": False}


async def test_a_changed_password_logs_the_socket_out_as_it_does_the_views() -> None:
    user = await sync_to_async(new_user)()
    session_id = await sync_to_async(django_login)(user)

    def change_password() -> None:
        user.set_password("new")
        user.save()

    await sync_to_async(change_password)()
    assert await whoami(session_id) == {"user": None, "auth": False}


async def test_scope_user_is_a_lazy_object_filled_before_the_app() -> None:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["user"] = scope["user"]
        await send({"type": "websocket.close"})

    comm = socket(AuthMiddlewareStack(app))
    await comm.connect()
    assert isinstance(seen["user"], UserLazyObject)
    assert seen["user"].is_anonymous  # resolved already: no query needed to read it


async def login_over_a_socket(user: User, session_id: str | None = None) -> str:
    """Log ``user`` in from a consumer (``login()`` then a save); return the session id."""
    comm = socket(AuthMiddlewareStack(WhoAmI.as_asgi()), session_id)
    await comm.connect()
    await comm.receive_json_from()
    await comm.send_json_to({"do": "login", "name": user.username})
    new_id: str = (await comm.receive_json_from())["session"]
    await comm.disconnect()
    return new_id


async def test_login_and_logout_on_a_websocket_persist_in_the_session() -> None:
    user = await sync_to_async(new_user)()
    session_id = await login_over_a_socket(user)
    assert await whoami(session_id) == {"user": user.username, "auth": True}

    comm = socket(AuthMiddlewareStack(WhoAmI.as_asgi()), session_id)
    await comm.connect()
    await comm.receive_json_from()
    await comm.send_json_to({"do": "logout"})
    await comm.receive_json_from()
    await comm.disconnect()
    assert await whoami(session_id) == {"user": None, "auth": False}


async def test_login_over_a_logged_in_session_of_another_user_starts_afresh() -> None:
    first, second = await sync_to_async(new_user)(), await sync_to_async(new_user)()
    session_id = await sync_to_async(django_login)(first)
    new_id = await login_over_a_socket(second, session_id)
    assert new_id != session_id  # flushed: the first user's session is not reused
    assert await whoami(new_id) == {"user": second.username, "auth": True}
    assert await whoami(session_id) == {"user": None, "auth": False}


# -- HTTP: the session middleware saves with the response, Django's rules ----------------


class Counter(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        session = self.scope["session"]
        action = self.scope["path"].strip("/")

        def update() -> int:
            if action == "clear":
                session.flush()
                return 0
            if action == "read":
                return int(session.get("n", 0))
            session["n"] = session.get("n", 0) + 1
            return int(session["n"])

        n = await database_sync_to_async(update)()
        status = 500 if action == "fail" else 200
        await self.send_response(status, json.dumps({"n": n}).encode())


async def http(path: str, session_id: str | None = None) -> tuple[dict[str, Any], SimpleCookie]:
    headers = [(b"cookie", f"sessionid={session_id}".encode())] if session_id else []
    response = await HttpCommunicator(
        SessionMiddlewareStack(Counter.as_asgi()), "GET", path, headers=headers
    ).get_response()
    cookies: SimpleCookie = SimpleCookie()
    vary = []
    for key, value in response["headers"]:
        if key == b"set-cookie":
            cookies.load(value.decode())
        if key == b"vary":
            vary.append(value)
    return {
        "status": response["status"],
        "body": json.loads(response["body"]),
        "vary": vary,
    }, cookies


async def test_http_session_is_saved_with_the_response_and_its_cookie_set() -> None:
    first, cookies = await http("/incr/")
    assert first["body"] == {"n": 1} and first["vary"] == [b"Cookie"]
    morsel = cookies["sessionid"]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and int(morsel["max-age"]) == 1209600
    again, _ = await http("/incr/", morsel.value)
    assert again["body"] == {"n": 2}
    # Django's own view of the same session: the database engine has it.
    from django.contrib.sessions.backends.db import SessionStore

    assert await sync_to_async(SessionStore(morsel.value).get)("n") == 2


async def test_http_session_rules_follow_djangos_middleware() -> None:
    _, cookies = await http("/incr/")
    session_id = cookies["sessionid"].value
    read, unchanged = await http("/read/", session_id)
    assert read["body"] == {"n": 1} and "sessionid" not in unchanged  # not modified: no cookie
    failed, not_saved = await http("/fail/", session_id)
    assert failed["status"] == 500 and "sessionid" not in not_saved
    assert (await http("/read/", session_id))[0]["body"] == {"n": 1}
    _, deleted = await http("/clear/", session_id)
    assert deleted["sessionid"].value == "" and deleted["sessionid"]["max-age"] == "0"


@override_settings(
    SESSION_COOKIE_NAME="sid",
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
    SESSION_COOKIE_SECURE=True,
    SESSION_EXPIRE_AT_BROWSER_CLOSE=True,
)
async def test_session_settings_are_read_per_request() -> None:
    response = await HttpCommunicator(
        SessionMiddlewareStack(Counter.as_asgi()), "GET", "/incr/"
    ).get_response()
    (header,) = [v for k, v in response["headers"] if k == b"set-cookie"]
    cookie: SimpleCookie = SimpleCookie(header.decode())
    assert cookie["sid"]["secure"] and not cookie["sid"]["max-age"]  # a browser-session cookie
    # signed_cookies: the data travels in the cookie itself.
    headers = [(b"cookie", f"sid={cookie['sid'].value}".encode())]
    response = await HttpCommunicator(
        SessionMiddlewareStack(Counter.as_asgi()), "GET", "/read/", headers=headers
    ).get_response()
    assert json.loads(response["body"]) == {"n": 1}


async def test_session_middleware_needs_the_cookie_middleware() -> None:
    comm = HttpCommunicator(SessionMiddleware(Counter.as_asgi()), "GET", "/read/")
    with pytest.raises(ValueError, match="CookieMiddleware"):
        await comm.get_response()


# -- Django's TestCase: the test database and its transaction ------------------------------


class CommunicatorsInTestCase(TestCase):
    """Calls from the app reach the test's thread, so they see its transaction.

    The test's own ORM calls use Django's bridge (asgiref's), which runs them in
    the test's thread, inside the transaction: the app sees that data only if
    its calls run there too.
    """

    async def test_scope_user_from_the_test_transaction(self) -> None:
        user = await asgiref_sync_to_async(new_user)()
        session_id = await asgiref_sync_to_async(django_login)(user)
        assert await whoami(session_id) == {"user": user.username, "auth": True}

    async def test_a_consumer_writes_in_the_test_transaction(self) -> None:
        # Another thread's connection could not write while the test's holds
        # SQLite's write lock: the login's session save runs in the test's thread.
        from django.contrib.sessions.models import Session

        user = await asgiref_sync_to_async(new_user)()
        session_id = await login_over_a_socket(user)
        assert await asgiref_sync_to_async(Session.objects.filter(session_key=session_id).exists)()
        assert await whoami(session_id) == {"user": user.username, "auth": True}
