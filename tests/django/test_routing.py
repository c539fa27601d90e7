"""sluiceway.django.routing.URLRouter takes django.urls patterns, with Django's rules."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.urls import include, path, re_path, register_converter

from sluiceway import routing
from sluiceway.django.auth import AuthMiddlewareStack
from sluiceway.django.routing import ProtocolTypeRouter, URLRouter
from sluiceway.testing import HttpCommunicator, WebsocketCommunicator


class YearConverter:
    regex = "[0-9]{4}"

    def to_python(self, value: str) -> int:
        year = int(value)
        if year < 1900:
            raise ValueError("too old")  # Django: no match, try the next pattern
        return year

    def to_url(self, value: int) -> str:
        return f"{value:04d}"


register_converter(YearConverter, "django_test_year")


SEEN: list[tuple[str, Any, Any]] = []


def recorder(tag: str) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        SEEN.append((tag, scope["url_route"]["args"], scope["url_route"]["kwargs"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def get(app: Any, target: str) -> tuple[int, Any]:
    response = await HttpCommunicator(app, "GET", target).get_response()
    return response["status"], (SEEN.pop() if response["status"] == 200 else None)


router = URLRouter(
    [
        path("rooms/<int:room>/", recorder("room"), {"extra": True}),
        path("archive/<django_test_year:year>/", recorder("year")),
        re_path(r"^archive/(?P<anything>\w+)/$", recorder("fallback")),
        re_path(r"^legacy/(\d+)/(\w+)/$", recorder("positional")),
        path("items/<uuid:item>/", recorder("uuid")),
        path(
            "api/", URLRouter([path("v<int:version>/", URLRouter([path("me/", recorder("me"))]))])
        ),
        path("chat/", include([path("<slug:room>/", recorder("included"))])),
        path("secure/", AuthMiddlewareStack(URLRouter([path("inner/", recorder("secured"))]))),
        routing.path("toolkit/<int:n>/", recorder("toolkit")),
    ]
)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/rooms/12/", ("room", (), {"room": 12, "extra": True})),
        ("/archive/2024/", ("year", (), {"year": 2024})),
        # The custom converter's to_python refused 1850: the next pattern matched.
        ("/archive/1850/", ("fallback", (), {"anything": "1850"})),
        ("/legacy/7/x/", ("positional", ("7", "x"), {})),
        (f"/items/{uuid.UUID(int=5)}/", ("uuid", (), {"item": uuid.UUID(int=5)})),
        ("/api/v2/me/", ("me", (), {"version": 2})),
        ("/chat/lobby/", ("included", (), {"room": "lobby"})),
        ("/secure/inner/", ("secured", (), {})),
        ("/toolkit/3/", ("toolkit", (), {"n": 3})),
    ],
)
async def test_django_patterns_resolve_as_djangos_resolver_does(target: str, expected: Any) -> None:
    assert await get(router, target) == (200, expected)


@pytest.mark.parametrize(
    "target",
    ["/rooms/x/", "/rooms/12", "/legacy/7/x/%0A", "/api/v2/other/", "/chat/a/b/", "/nope/"],
)
async def test_no_match_is_404(target: str) -> None:
    assert (await get(router, target))[0] == 404


async def test_websocket_routes_and_a_miss_is_refused() -> None:
    async def accept(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    app = ProtocolTypeRouter({"websocket": URLRouter([path("ws/<str:room>/", accept)])})
    assert (await WebsocketCommunicator(app, "/ws/lobby/").connect())[0]
    assert not (await WebsocketCommunicator(app, "/elsewhere/").connect())[0]


def test_something_that_is_no_pattern_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="patterns"):
        URLRouter([("rooms/", recorder("x"))])


CORE_MODULES = (
    "sluiceway.cli sluiceway.worker sluiceway.server.runner sluiceway.routing sluiceway.middleware "
    "sluiceway.consumers sluiceway.sync sluiceway.wsgi sluiceway.testing sluiceway.layers"
)


def test_sluiceway_without_the_integration_imports_no_django() -> None:
    """sluiceway's core stays Django-free: only sluiceway.django imports Django."""
    import subprocess
    import sys

    child = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}.split():\n"
        "    importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'channels'}),"
        " [m for m in sys.modules if m.startswith('sluiceway.django')])\n"
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] []"
