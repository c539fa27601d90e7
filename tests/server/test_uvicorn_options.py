"""uvicorn's remaining options that mean the same here: --interface, --http, --use-colors,
--reload-delay; and the context a request runs in (uvicorn's --reset-contextvars is not
needed: nothing lifespan sets reaches a request, nor one request's context the next).
"""

from __future__ import annotations

import contextvars
import io
import logging
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluiceway.logconfig import SafeFormatter, logging_dict
from sluiceway.option_sources import config_from_sources
from tests.server.process_apps import wsgi_app
from tests.server.serving import TIMEOUT_S, cli_server, running

HERE = Path(__file__).parent


class Asgi2App:
    """ASGI 2 style: instantiated with the scope, then called with receive and send."""

    def __init__(self, scope: dict[str, Any]) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        if self.scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2"})


async def asgi3_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi3"})


async def get_text(port: int | None, path: str = "/") -> str:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
    assert response.status_code == 200
    return response.text


@pytest.mark.parametrize(
    ("app", "interface", "expected"),
    [
        (wsgi_app, "wsgi", "wsgi GET /x"),
        (Asgi2App, "asgi2", "asgi2"),
        (Asgi2App, "auto", "asgi2"),
        (asgi3_app, "asgi3", "asgi3"),
        (asgi3_app, "auto", "asgi3"),
    ],
)
async def test_interface(app: Any, interface: str, expected: str) -> None:
    async with running(app, interface=interface, lifespan="off") as server:
        assert await get_text(server.port, "/x") == expected


async def test_interface_wsgi_from_the_cli() -> None:
    args = ["process_apps:wsgi_app", "--interface", "wsgi", "--port", "0"]
    async with (
        cli_server(*args, "--app-dir", str(HERE)) as proc,
        httpx.AsyncClient(timeout=TIMEOUT_S) as client,
    ):
        assert (await client.get(proc.address + "/w")).text == "wsgi GET /w"


def test_uvicorns_spellings_are_taken() -> None:
    args = {
        "http": "httptools",
        "interface": "asgi3",
        "reload_delay_s": "0.25",
        "use_colors": False,
    }
    config = config_from_sources(args, {})
    assert (config.http, config.interface, config.reload_delay_s, config.use_colors) == (
        "httptools",
        "asgi3",
        0.25,
        False,
    )


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("sluiceway.error", level, __file__, 1, message, None, None)


def test_colours_go_on_the_level_name_and_never_come_from_the_message() -> None:
    coloured = SafeFormatter("[%(levelname)s] %(message)s", use_colors=True)
    plain = SafeFormatter("[%(levelname)s] %(message)s")
    hostile = record("path \x1b[31mred\x1b[0m")
    assert coloured.format(hostile) == "[\x1b[32mINFO\x1b[0m] path \\x1b[31mred\\x1b[0m"
    assert plain.format(hostile) == "[INFO] path \\x1b[31mred\\x1b[0m"
    assert coloured.format(record("x", logging.ERROR)).startswith("[\x1b[31mERROR\x1b[0m]")
    shared = record("once")
    coloured.format(shared)
    assert shared.levelname == "INFO"  # a second handler formats the record uncoloured


def test_default_colours_only_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    def colours(use_colors: bool | None) -> bool:
        formatter: dict[str, Any] = logging_dict("info", True, use_colors)["formatters"]["default"]
        return bool(formatter["use_colors"])

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not colours(None)
    assert colours(True)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert colours(None)
    assert not colours(False)


async def test_use_colors_from_the_cli() -> None:
    args = ["process_apps:pid", "--port", "0", "--app-dir", str(HERE)]
    async with cli_server(*args, "--use-colors") as proc:
        assert "[\x1b[32mINFO\x1b[0m] Listening on" in proc.text
    async with cli_server(*args) as proc:  # stderr is a pipe here: no colours by default
        assert "[INFO] Listening on" in proc.text and "\x1b" not in proc.text


REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


async def context_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                REQUEST_VAR.set("set by lifespan")
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    seen = REQUEST_VAR.get()
    REQUEST_VAR.set("set by a request")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": seen.encode()})


async def test_a_request_sees_neither_lifespan_context_nor_an_earlier_requests() -> None:
    # One keep-alive connection: the three requests share it, not their context.
    async with running(context_app) as server, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        url = f"http://127.0.0.1:{server.port}/"
        assert [(await client.get(url)).text for _ in range(3)] == ["unset"] * 3
