"""Routers: protocol type, URL (path/re_path, nesting, root_path) and channel name."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from sluiceway.middleware.base import BaseMiddleware
from sluiceway.routing import (
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
    path,
    re_path,
    register_converter,
)
from sluiceway.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator


def recorder(tag: str) -> Any:
    """An HTTP/WebSocket app that reports its tag and the scope it got."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept", "subprotocol": tag})
            await send({"type": "websocket.send", "text": repr(scope.get("url_route"))})
            return
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        seen = {
            "tag": tag,
            "path": scope["path"],
            "url_route": scope.get("url_route"),
            "path_remaining": scope.get("path_remaining", "<absent>"),
        }
        await send({"type": "http.response.body", "body": repr(seen).encode()})

    return app


async def get(app: Any, target: str, **kwargs: Any) -> tuple[int, Any]:
    response = await HttpCommunicator(app, "GET", target, **kwargs).get_response()
    if response["status"] != 200:
        return response["status"], response["body"]
    return 200, eval(response["body"].decode(), {"UUID": uuid.UUID})


async def test_protocol_type_router_dispatches_by_type() -> None:
    router = ProtocolTypeRouter({"http": recorder("h"), "websocket": recorder("w")})
    status, seen = await get(router, "/x")
    assert (status, seen["tag"]) == (200, "h")
    comm = WebsocketCommunicator(router, "/")
    assert await comm.connect() == (True, "w")


async def test_unrouted_lifespan_is_answered() -> None:
    comm = ApplicationCommunicator(
        ProtocolTypeRouter({"http": recorder("h")}),
        {"type": "lifespan", "asgi": {"version": "3.0"}},
    )
    await comm.send_input({"type": "lifespan.startup"})
    assert await comm.receive_output() == {"type": "lifespan.startup.complete"}
    await comm.send_input({"type": "lifespan.shutdown"})
    assert await comm.receive_output() == {"type": "lifespan.shutdown.complete"}
    await comm.wait()


async def test_unrouted_type_names_the_type() -> None:
    comm = WebsocketCommunicator(ProtocolTypeRouter({"http": recorder("h")}), "/")
    with pytest.raises(ValueError, match="'websocket'"):
        await comm.connect()


async def test_converters_convert() -> None:
    u = uuid.uuid4()
    router = URLRouter(
        [
            path("n/<int:n>/", recorder("int")),
            path("s/<slug:s>/", recorder("slug")),
            path("u/<uuid:u>/", recorder("uuid")),
            path("p/<path:rest>", recorder("path")),
            path("x/<name>/", recorder("str")),
        ]
    )
    assert (await get(router, "/n/42/"))[1]["url_route"] == {"args": (), "kwargs": {"n": 42}}
    assert (await get(router, "/s/a-b_c/"))[1]["url_route"]["kwargs"] == {"s": "a-b_c"}
    assert (await get(router, f"/u/{u}/"))[1]["url_route"]["kwargs"] == {"u": u}
    assert (await get(router, "/p/a/b/c.txt"))[1]["url_route"]["kwargs"] == {"rest": "a/b/c.txt"}
    assert (await get(router, "/x/caf%C3%A9/"))[1]["url_route"]["kwargs"] == {"name": "café"}
    # A str segment stops at "/", an int refuses letters, a slug refuses dots.
    assert (await get(router, "/x/a/b/"))[0] == 404
    assert (await get(router, "/n/4x/"))[0] == 404
    assert (await get(router, "/s/a.b/"))[0] == 404
    # Endpoints match the whole path.
    assert (await get(router, "/n/42/extra"))[0] == 404


async def test_custom_converter_and_refusal_falls_through() -> None:
    class Even:
        regex = "[0-9]+"

        def to_python(self, value: str) -> int:
            if int(value) % 2:
                raise ValueError("odd")
            return int(value)

        def to_url(self, value: int) -> str:
            return str(value)

    register_converter(Even, "even")
    router = URLRouter([path("v/<even:n>/", recorder("even")), path("v/<int:n>/", recorder("odd"))])
    assert (await get(router, "/v/4/"))[1]["tag"] == "even"
    assert (await get(router, "/v/5/"))[1]["tag"] == "odd"


async def test_re_path_named_and_positional() -> None:
    router = URLRouter(
        [
            re_path(r"^named/(?P<year>[0-9]{4})/$", recorder("named")),
            re_path(r"^pos/([a-z]+)/([0-9]+)/$", recorder("pos")),
        ]
    )
    seen = (await get(router, "/named/2024/"))[1]
    assert seen["url_route"] == {"args": (), "kwargs": {"year": "2024"}}
    seen = (await get(router, "/pos/ab/7/"))[1]
    assert seen["url_route"] == {"args": ("ab", "7"), "kwargs": {}}


async def test_trailing_dollar_is_the_true_end() -> None:
    router = URLRouter([re_path(r"^a/$", recorder("a"))])
    assert (await get(router, "/a/"))[0] == 200
    assert (await get(router, "/a/%0A"))[0] == 404


async def test_extra_kwargs_are_merged() -> None:
    router = URLRouter([path("k/<int:id>/", recorder("k"), kwargs={"mode": "ro"})])
    assert (await get(router, "/k/3/"))[1]["url_route"]["kwargs"] == {"id": 3, "mode": "ro"}


async def test_nested_routers_keep_path_whole_and_accumulate() -> None:
    inner = URLRouter([path("items/<int:item>/", recorder("item"))])
    router = URLRouter(
        [
            path("api/<slug:version>/", inner),
            re_path(r"^legacy/([0-9]+)/", URLRouter([re_path(r"^([a-z]+)$", recorder("legacy"))])),
        ]
    )
    status, seen = await get(router, "/api/v2/items/9/")
    assert status == 200
    assert seen["path"] == "/api/v2/items/9/"
    assert seen["url_route"] == {"args": (), "kwargs": {"version": "v2", "item": 9}}
    assert seen["path_remaining"] == "<absent>"
    seen = (await get(router, "/legacy/12/abc"))[1]
    assert seen["url_route"]["args"] == ("12", "abc")
    assert (await get(router, "/api/v2/items/x/"))[0] == 404


async def test_nesting_through_middleware() -> None:
    inner = URLRouter([path("b/", recorder("b"))])
    router = URLRouter([path("a/", BaseMiddleware(inner))])
    status, seen = await get(router, "/a/b/")
    assert (status, seen["tag"]) == (200, "b")


async def test_root_path_is_stripped_before_matching() -> None:
    router = URLRouter([path("rooms/<int:n>/", recorder("room"))])
    status, seen = await get(router, "/mount/rooms/1/", root_path="/mount")
    assert status == 200
    assert seen["path"] == "/mount/rooms/1/"
    assert seen["url_route"]["kwargs"] == {"n": 1}
    # Outside the mount point, or only a textual prefix of it: no route.
    assert (await get(router, "/other/rooms/1/", root_path="/mount"))[0] == 404
    assert (await get(router, "/mountrooms/1/", root_path="/mount"))[0] == 404


async def test_no_match_http_404() -> None:
    response = await HttpCommunicator(URLRouter([]), "GET", "/nope").get_response()
    assert response["status"] == 404
    assert response["body"] == b"Not Found"
    assert (b"content-length", b"9") in response["headers"]


async def test_no_match_websocket_closes_before_accept() -> None:
    comm = WebsocketCommunicator(URLRouter([path("chat/", recorder("c"))]), "/elsewhere/")
    connected, code = await comm.connect()
    assert connected is False
    assert code == 1000
    await comm.wait()


async def test_no_match_other_types_raise() -> None:
    router = URLRouter([path("x/", recorder("x"))])
    comm = ApplicationCommunicator(router, {"type": "custom", "path": "/y/"})
    with pytest.raises(ValueError, match="No route"):
        await comm.wait()
    comm = ApplicationCommunicator(router, {"type": "custom"})
    with pytest.raises(ValueError, match="'path'"):
        await comm.wait()


async def test_caller_scope_is_not_mutated() -> None:
    router = URLRouter([path("a/<int:n>/", recorder("a"))])
    comm = HttpCommunicator(router, "GET", "/a/1/")
    before = dict(comm.scope)
    await comm.get_response()
    assert comm.scope == before


async def test_route_order_wins_like_a_linear_scan() -> None:
    routes = [
        path("<str:anything>/", recorder("first")),
        path("fixed/", recorder("second")),
    ]
    assert (await get(URLRouter(routes), "/fixed/"))[1]["tag"] == "first"


def reference_match(routes: list[Any], rest: str) -> Any:
    """The obvious linear scan the router's indexes and combined regexes must agree with."""
    for route in routes:
        m = route.regex.search(rest)
        if m is None:
            continue
        try:
            args, kwargs = route.extract(m, 0)
        except ValueError:
            continue
        remainder = rest[m.end() :]
        # A nested router must match the rest in turn, or the scan goes on.
        nested = route.app.routes if isinstance(route.app, URLRouter) else None
        if (
            nested is not None
            and reference_match(list(nested), remainder.removeprefix("/")) is None
        ):
            continue
        return route, args, kwargs, remainder
    return None


async def test_indexed_and_combined_matching_agree_with_a_linear_scan() -> None:
    class Odd:
        regex = "[0-9]+"

        def to_python(self, value: str) -> int:
            if not int(value) % 2:
                raise ValueError("even")
            return int(value)

        def to_url(self, value: int) -> str:
            return str(value)

    register_converter(Odd, "odd")
    app = recorder("x")
    routes = [
        path("r/<odd:n>/", app),
        path("r/<int:n>/", app),
        re_path(r"^r/(?P<word>[a-z]+)/$", app),
        path("s/<slug:x>/<int:y>/", app),
        re_path(r"^t/(\d+)-(\d+)$", app),
        path("u/<path:p>", app),
        path("v<int:n>/", app),  # parameter inside the first segment: not indexable
        path("", app),
        path("w/", URLRouter([path("z/", app)])),
        path("w/<slug:s>/", app),  # reached when the nested router above has no match
        re_path(r"(?i)^zz/$", app),  # inline flags: this router cannot combine
    ]
    targets = ["r/1/", "r/2/", "r/ab/", "s/a-b/3/", "t/1-2", "u/x/y", "v7/", "", "w/z/", "ZZ/"]
    targets += ["r//", "nothing", "w/", "v/", "s/a/b/", "w/y/", "w/z/y/"]
    for subset in (routes, routes[:-1], routes[4:], routes[::-1]):
        router = URLRouter(subset)
        for target in targets:
            assert router.match(target) == reference_match(subset, target), (subset, target)


async def test_nested_router_without_a_match_falls_through() -> None:
    # Issue 16 item 15, verbatim: Channels and Django's resolver go on to the next route.
    router = URLRouter(
        [
            path("prefix/", URLRouter([path("no-match/", recorder("a"))])),
            path("prefix/stuff/", recorder("b")),
        ]
    )
    assert (await get(router, "/prefix/stuff/"))[1]["tag"] == "b"
    assert (await get(router, "/prefix/no-match/"))[1]["tag"] == "a"
    assert (await get(router, "/prefix/other/"))[0] == 404
    comm = WebsocketCommunicator(router, "/prefix/stuff/")
    assert await comm.connect() == (True, "b")
    await comm.disconnect()

    # Through middleware, with re_path, and two levels down; captured values
    # of a route that fell through do not leak into the one that matched.
    deep = URLRouter(
        [
            re_path(
                r"^(?P<a>[a-z]+)/",
                BaseMiddleware(
                    URLRouter([path("<int:b>/", URLRouter([path("x/", recorder("x"))]))])
                ),
            ),
            path("p/<int:c>/y/", recorder("y")),
        ]
    )
    status, seen = await get(deep, "/p/1/y/")
    assert (status, seen["tag"], seen["url_route"]) == (200, "y", {"args": (), "kwargs": {"c": 1}})
    status, seen = await get(deep, "/p/1/x/")
    assert (status, seen["tag"]) == (200, "x")
    assert seen["url_route"]["kwargs"] == {"a": "p", "b": 1}
    assert seen["path_remaining"] == "<absent>"


async def test_an_app_error_in_a_matched_nested_route_does_not_fall_through() -> None:
    # Channels catches the nested router's ValueError; an app raising one must
    # still fail, not quietly reach the next route.
    async def broken(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("No route found: raised by the app itself")

    router = URLRouter(
        [
            path("prefix/", URLRouter([path("stuff/", broken)])),
            path("prefix/stuff/", recorder("b")),
        ]
    )
    with pytest.raises(ValueError, match="by the app itself"):
        await HttpCommunicator(router, "GET", "/prefix/stuff/").get_response()


async def test_nested_routes_are_resolved_once_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # Matching before calling must not cost a second match in the nested router,
    # whether it is nested directly or behind middleware.
    direct = URLRouter([path("b/<int:n>/", recorder("direct"))])
    wrapped = URLRouter([path("b/<int:n>/", recorder("wrapped"))])
    router = URLRouter([path("d/", direct), path("w/", BaseMiddleware(wrapped))])
    calls: list[str] = []
    for inner in (direct, wrapped):
        lookup = inner._lookup
        monkeypatch.setattr(inner, "_lookup", lambda rest, f=lookup: calls.append(rest) or f(rest))
    for target, tag in (("/d/b/1/", "direct"), ("/w/b/2/", "wrapped")):
        calls.clear()
        status, seen = await get(router, target)
        assert (status, seen["tag"], seen["path_remaining"]) == (200, tag, "<absent>")
        assert calls == [target[3:]]


def test_an_unanchored_branch_is_searched_like_django() -> None:
    # "^" anchors only the first branch: Django searches, so "b/" matches anywhere.
    app = recorder("x")
    routes = [re_path(r"^a/$|b/$", app), re_path(r"^c/$", app)]
    router = URLRouter(routes)
    for target in ("a/", "zb/", "b/", "c/", "za/"):
        assert router.match(target) == reference_match(routes, target), target
    assert router.match("zb/") is not None


async def test_many_routes_dispatch_to_the_right_one() -> None:
    router = URLRouter([path(f"r{i}/<int:pk>/", recorder(f"r{i}")) for i in range(200)])
    for i in (0, 17, 199):
        status, seen = await get(router, f"/r{i}/{i * 3}/")
        assert (status, seen["tag"], seen["url_route"]["kwargs"]) == (200, f"r{i}", {"pk": i * 3})
    assert (await get(router, "/r200/1/"))[0] == 404


async def test_patterns_are_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    router = URLRouter([path("a/<int:n>/", recorder("a")), re_path(r"^b/$", recorder("b"))])

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("compiled at request time")

    # Compiling a pattern string at request time, directly or through the
    # module-level helpers (which compile, cached), is refused alike.
    for helper in ("compile", "match", "search", "fullmatch", "finditer", "sub"):
        monkeypatch.setattr(re, helper, refuse)
    assert (await get(router, "/a/1/"))[0] == 200
    assert (await get(router, "/b/"))[0] == 200
    monkeypatch.undo()


def test_bad_route_definitions() -> None:
    with pytest.raises(ValueError, match="unknown converter"):
        path("a/<nope:x>/", recorder("a"))
    with pytest.raises(ValueError, match="identifier"):
        path("a/<int:not valid>/", recorder("a"))
    with pytest.raises(TypeError):
        URLRouter(["a/"])  # type: ignore[list-item]
    with pytest.raises(re.error):
        re_path(r"^(unclosed", recorder("a"))
    with pytest.raises(TypeError):
        register_converter(object(), "bad")


async def test_channel_name_router() -> None:
    async def worker(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        await send({"type": "done", "channel": scope["channel"], "got": message["type"]})

    router = ChannelNameRouter({"thumbnails": worker})
    comm = ApplicationCommunicator(router, {"type": "channel", "channel": "thumbnails"})
    await comm.send_input({"type": "thumbnail.make"})
    assert await comm.receive_output() == {
        "type": "done",
        "channel": "thumbnails",
        "got": "thumbnail.make",
    }
    with pytest.raises(ValueError, match="'videos'"):
        await ApplicationCommunicator(router, {"type": "channel", "channel": "videos"}).wait()
    with pytest.raises(ValueError, match="no 'channel'"):
        await ApplicationCommunicator(router, {"type": "channel"}).wait()


async def test_nesting_through_origin_validator() -> None:
    from sluiceway.middleware import OriginValidator

    inner = URLRouter([path("b/", recorder("b"))])
    router = URLRouter([path("a/", OriginValidator(inner, ["*"]))])
    status, seen = await get(router, "/a/b/")
    assert (status, seen["tag"]) == (200, "b")


def test_toolkit_never_imports_the_server_side() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sluiceway.routing, sluiceway.middleware, sluiceway.testing\n"
        "import sluiceway.consumers, sluiceway.sync, sluiceway.wsgi\n"
        "bad = [m for m in sys.modules if m.split('.')[:2] in (\n"
        "    ['sluiceway', 'server'], ['sluiceway', 'http1'],\n"
        "    ['sluiceway', 'websocket'], ['sluiceway', 'transport'])]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"
