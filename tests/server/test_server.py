"""The ``Server`` object with the real HTTP/1.1 protocol, inside this test's event loop."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx
import pytest

from sluiceway.asgi.types import Receive, Scope, Send
from sluiceway.config import Config
from sluiceway.server.runner import Server
from tests.server.serving import TIMEOUT_S, running


class GatedStartup:
    """Lifespan startup waits for ``open``; HTTP answers with the lifespan state."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.startup_began = asyncio.Event()
        self.order: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            self.startup_began.set()
            await self.open.wait()
            scope["state"]["db"] = {"connected": True}
            scope["state"]["counter"] = 0
            await send({"type": "lifespan.startup.complete"})
            await receive()
            self.order.append("lifespan.shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        state = scope["state"]
        state["counter"] += 1  # rebinding a key changes only this request's copy
        state["db"]["hits"] = state["db"].get("hits", 0) + 1  # shared objects are shared
        self.order.append("request")
        body = f"{state['counter']} {state['db']['hits']}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


async def test_no_connection_is_accepted_before_startup_completes() -> None:
    app = GatedStartup()
    server = Server(Config(port=0), app)
    starting = asyncio.ensure_future(server.start())
    await asyncio.wait_for(app.startup_began.wait(), TIMEOUT_S)
    assert server.port  # bound already, so a port clash fails before startup runs
    with pytest.raises(OSError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), TIMEOUT_S)
    app.open.set()
    await asyncio.wait_for(starting, TIMEOUT_S)
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        url = f"http://127.0.0.1:{server.port}/"
        assert (await client.get(url)).text == "1 1"
        assert (await client.get(url)).text == "1 2"  # shallow copy: counter fresh, db shared
    await asyncio.wait_for(server.shutdown(), TIMEOUT_S)
    assert app.order == ["request", "request", "lifespan.shutdown"]


async def test_state_is_empty_dict_without_lifespan() -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append(scope["state"])
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    async with running(app, lifespan="off") as server, httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT_S)
    assert response.status_code == 204
    assert seen == [{}]


async def test_app_string_and_root_path(tmp_path: Any) -> None:
    (tmp_path / "rooted_app.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    body = (scope['root_path'] + ' ' + scope['path']).encode()\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': body})\n"
    )
    saved = list(sys.path)
    try:
        server = Server(Config(port=0, app_dir=str(tmp_path), root_path="/api"), "rooted_app:app")
        await asyncio.wait_for(server.start(), TIMEOUT_S)
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/users")
        await asyncio.wait_for(server.shutdown(), TIMEOUT_S)
    finally:
        sys.path[:] = saved
        sys.modules.pop("rooted_app", None)
    assert response.text == "/api /api/users"


def _has_ipv6_loopback() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6_http() -> None:
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            seen.append((scope["client"][0], scope["server"]))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"v6"})

    async with running(app, host="::1") as server, httpx.AsyncClient() as client:
        response = await client.get(f"http://[::1]:{server.port}/", timeout=TIMEOUT_S)
    assert response.text == "v6"
    assert seen == [("::1", ("::1", server.port))]


def test_loop_choice_falls_back_to_asyncio_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sluiceway.errors import ConfigError
    from sluiceway.server.hosting import new_event_loop

    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    with caplog.at_level("WARNING", "sluiceway.error"):
        loop = new_event_loop("auto")
    try:
        assert type(loop).__module__.startswith("asyncio")
    finally:
        loop.close()
    assert [r.getMessage() for r in caplog.records] == [
        "uvloop is not installed: using the asyncio event loop."
    ]
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        new_event_loop("uvloop")


def test_loop_choice_uses_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    from sluiceway.server.hosting import new_event_loop

    loop = new_event_loop("auto")
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
