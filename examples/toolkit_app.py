"""The toolkit in one app: routers, middleware and consumers stacked together.

Run it on any ASGI server::

    sluiceway run examples.toolkit_app:application
    uvicorn examples.toolkit_app:application

Endpoints:

* ``GET /``: an HTML page counting your visits in the session;
* ``POST /api/login/`` with ``{"user_id": 1}``: log in (session cookie);
  ``POST /api/logout/``: log out;
* ``GET /api/me/``: who you are and how many visits, as JSON;
* ``GET /api/items/<int:item_id>/``: one item as JSON (404 JSON if unknown);
* ``ws://.../ws/echo/``: echoes JSON messages, tagged with the session's user.
  Handshakes must come from an allowed origin (localhost by default).

The session lives in a signed cookie, so the HTTP and WebSocket stacks share
it without shared server memory. Set ``SLUICEWAY_EXAMPLE_SECRET`` in any real
deployment: the default secret is public.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from typing import Any

from sluiceway.asgi.types import Scope
from sluiceway.consumers import AsyncHttpConsumer, AsyncJsonWebsocketConsumer
from sluiceway.middleware import (
    AllowedHostsOriginValidator,
    AuthMiddlewareStack,
    SignedCookieStore,
    login,
    logout,
)
from sluiceway.routing import ProtocolTypeRouter, URLRouter, path

SECRET = os.environ.get("SLUICEWAY_EXAMPLE_SECRET", "example-secret-change-me-please")
ALLOWED_HOSTS = os.environ.get("SLUICEWAY_EXAMPLE_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class User:
    id: int
    name: str
    is_authenticated: bool = True


USERS = {1: User(1, "ada"), 2: User(2, "grace")}
ITEMS = {1: {"id": 1, "name": "lamp"}, 2: {"id": 2, "name": "kettle"}}


async def load_user(user_id: Any) -> User | None:
    """The user loader AuthMiddleware calls with the id kept in the session."""
    return USERS.get(user_id)


def user_name(scope: Scope) -> str | None:
    user = scope["user"]
    return getattr(user, "name", None) if user.is_authenticated else None


class HomePage(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        session = self.scope["session"]
        session["visits"] = session.get("visits", 0) + 1
        who = html.escape(user_name(self.scope) or "stranger")
        page = (
            f"<!doctype html><title>sluiceway</title>"
            f"<h1>Hello, {who}</h1><p>Visit number {session['visits']}.</p>"
        )
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await self.send_response(200, page.encode(), headers=headers)


class JSONConsumer(AsyncHttpConsumer):
    async def send_json(self, status: int, content: Any) -> None:
        await self.send_response(status, json.dumps(content).encode(), headers=JSON_HEADERS)


class Me(JSONConsumer):
    async def handle(self, body: bytes) -> None:
        visits = self.scope["session"].get("visits", 0)
        await self.send_json(200, {"user": user_name(self.scope), "visits": visits})


class Login(JSONConsumer):
    async def handle(self, body: bytes) -> None:
        if self.scope["method"] != "POST":
            await self.send_json(405, {"error": "POST a JSON body"})
            return
        try:
            user_id = json.loads(body)["user_id"]
        except (ValueError, KeyError, TypeError):
            await self.send_json(400, {"error": 'expected {"user_id": <int>}'})
            return
        user = USERS.get(user_id) if isinstance(user_id, int) else None
        if user is None:
            await self.send_json(403, {"error": "unknown user"})
            return
        await login(self.scope, user)
        await self.send_json(200, {"user": user.name})


class Logout(JSONConsumer):
    async def handle(self, body: bytes) -> None:
        await logout(self.scope)
        await self.send_json(200, {"user": None})


class Item(JSONConsumer):
    async def handle(self, body: bytes) -> None:
        item = ITEMS.get(self.scope["url_route"]["kwargs"]["item_id"])
        if item is None:
            await self.send_json(404, {"error": "no such item"})
        else:
            await self.send_json(200, item)


class Echo(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send_json({"hello": user_name(self.scope)})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"user": user_name(self.scope), "echo": content})


def build_application(secret: str = SECRET, allowed_hosts: list[str] = ALLOWED_HOSTS) -> Any:
    store = SignedCookieStore(secret)
    api = URLRouter(
        [
            path("login/", Login.as_asgi()),
            path("logout/", Logout.as_asgi()),
            path("me/", Me.as_asgi()),
            path("items/<int:item_id>/", Item.as_asgi()),
        ]
    )
    http = URLRouter([path("", HomePage.as_asgi()), path("api/", api)])
    websocket = URLRouter([path("ws/echo/", Echo.as_asgi())])
    return ProtocolTypeRouter(
        {
            "http": AuthMiddlewareStack(http, load_user, store=store),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(websocket, load_user, store=store), allowed_hosts
            ),
        }
    )


application = build_application()
