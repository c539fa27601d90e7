"""examples/toolkit_app.py end to end over a real socket, under uvicorn and sluiceway.

Running the same app under uvicorn proves the toolkit does not depend on our
server; the clients are independent (httpx, the ``websockets`` client).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from examples.toolkit_app import build_application
from tests.toolkit.servers import TIMEOUT_S, Server, under_sluiceway, under_uvicorn

ROOT = Path(__file__).resolve().parents[2]


def under_uvicorn_with_lifespan(app: Any) -> contextlib.AbstractAsyncContextManager[str]:
    # lifespan on: the unrouted lifespan scope must be answered by the router.
    return under_uvicorn(app, lifespan="on", ws="websockets-sansio")


@contextlib.asynccontextmanager
async def under_sluiceway_run(app: Any) -> AsyncIterator[str]:
    """``sluiceway run examples.toolkit_app:application`` in a child process.

    The CLI imports the module's own ``application`` (``app`` is not used); it
    serves on a socket we bound and listen on, inherited with ``--fd``.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    env = {**os.environ, "SLUICEWAY_EXAMPLE_HOSTS": "127.0.0.1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluiceway",
        "run",
        "examples.toolkit_app:application",
        "--fd",
        str(sock.fileno()),
        pass_fds=[sock.fileno()],
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        sock.close()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert b"Traceback" not in stderr, stderr.decode(errors="replace")


SERVERS: dict[str, Server] = {
    "uvicorn": under_uvicorn_with_lifespan,
    "sluiceway": under_sluiceway,
    "sluiceway-run": under_sluiceway_run,
}


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_http_pages_sessions_and_login(server: str) -> None:
    app = build_application(secret="test secret of some length", allowed_hosts=["127.0.0.1"])
    async with (
        SERVERS[server](app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=TIMEOUT_S) as client,
    ):
        page = await client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "Hello, stranger" in page.text and "Visit number 1" in page.text
        assert "sessionid" in client.cookies
        assert (await client.get("/api/me/")).json() == {"user": None, "visits": 1}

        bad = await client.post("/api/login/", content=b"{not json")
        assert bad.status_code == 400
        assert (await client.post("/api/login/", json={"user_id": 9})).status_code == 403
        assert (await client.get("/api/login/")).status_code == 405

        before = client.cookies["sessionid"]
        login = await client.post("/api/login/", json={"user_id": 1})
        assert login.json() == {"user": "ada"}
        assert client.cookies["sessionid"] != before  # new session key on login
        assert (await client.get("/api/me/")).json() == {"user": "ada", "visits": 1}
        assert "Hello, ada" in (await client.get("/")).text

        item = await client.get("/api/items/2/")
        assert (item.status_code, item.json()) == (200, {"id": 2, "name": "kettle"})
        assert (await client.get("/api/items/99/")).status_code == 404
        missing = await client.get("/api/nowhere/")
        assert (missing.status_code, missing.text) == (404, "Not Found")
        assert (await client.get("/api/items/abc/")).status_code == 404

        assert (await client.post("/api/logout/")).json() == {"user": None}
        assert (await client.get("/api/me/")).json() == {"user": None, "visits": 0}


@pytest.mark.parametrize("server", sorted(SERVERS))
async def test_websocket_echo_with_session_user(server: str) -> None:
    app = build_application(secret="test secret of some length", allowed_hosts=["127.0.0.1"])
    async with (
        SERVERS[server](app) as host,
        httpx.AsyncClient(base_url=f"http://{host}", timeout=TIMEOUT_S) as client,
    ):
        await client.post("/api/login/", json={"user_id": 2})
        cookie = f"sessionid={client.cookies['sessionid']}"
        origin = f"http://{host}"
        async with connect(
            f"ws://{host}/ws/echo/",
            origin=origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": cookie},
            open_timeout=TIMEOUT_S,
        ) as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == '{"hello": "grace"}'
            await ws.send('{"n": [1, 2]}')
            echoed = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
            assert echoed == '{"user": "grace", "echo": {"n": [1, 2]}}'

        # Anonymous is fine; a foreign origin or an unknown path is refused with 403.
        async with connect(f"ws://{host}/ws/echo/", origin=origin, open_timeout=TIMEOUT_S) as ws:  # type: ignore[arg-type]
            assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == '{"hello": null}'
        for target, from_origin in [
            ("/ws/echo/", "https://evil.example"),
            ("/ws/other/", origin),
        ]:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(
                    f"ws://{host}{target}",
                    origin=from_origin,  # type: ignore[arg-type]
                    open_timeout=TIMEOUT_S,
                ):
                    pass
            assert refused.value.response.status_code == 403
