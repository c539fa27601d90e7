"""uvicorn's command line and ``UVICORN_*`` variables on ``sluiceway run``.

Every uvicorn option is taken (the same, an alias, or a value that means sluiceway's own
engine) or documented with its reason; ``UVICORN_<OPTION>`` is honoured where the
``SLUICEWAY_*`` counterpart is not set, with one log line per variable.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn.main
import websockets

from sluiceway.cli import build_parser, main
from sluiceway.errors import ConfigError
from sluiceway.option_sources import Note, config_from_sources
from sluiceway.options import OPTIONS
from tests.server.serving import TIMEOUT_S, cli_server

HERE = Path(__file__).parent
USAGE = HERE.parents[1] / "docs" / "usage.md"
APP = ("process_apps:pid", "--app-dir", str(HERE))


def uvicorn_options() -> list[tuple[str, str]]:
    """(flag, click parameter name) of each option of the installed uvicorn's CLI."""
    main_command: Any = uvicorn.main.main
    command = getattr(main_command, "__self__", main_command)  # a bound method in some clicks
    return [
        (flag, param.name or "")
        for param in command.params
        for flag in (*param.opts, *param.secondary_opts)
        if flag.startswith("--")
    ]


def our_flags() -> set[str]:
    flags = {"--help", "--version"}
    for option in OPTIONS:
        flags.update((option.flag, *option.aliases))
        if option.kind == "switch":
            flags.add("--no-" + option.flag[2:])
    return flags


def uvicorn_section() -> str:
    text = USAGE.read_text()
    start = text.index("## Coming from uvicorn")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_every_uvicorn_flag_is_taken_or_explained() -> None:
    section = uvicorn_section()
    for flag, _ in uvicorn_options():
        assert f"`{flag}" in section, f"{flag} is not in docs/usage.md 'Coming from uvicorn'"
    missing = [flag for flag, _ in uvicorn_options() if flag not in our_flags()]
    # Each one still refused has its reason in the section (the row names it).
    for flag in missing:
        row = next(line for line in section.splitlines() if line.startswith(f"| `{flag}"))
        assert "refused" in row or "another" in row, row


def test_uvicorn_spellings_parse() -> None:
    argv = [
        "run",
        "main:app",
        "--http",
        "h11",
        "--ws",
        "wsproto",
        "--loop",
        "asyncio",
        "--ssl-version",
        "17",
        "--reset-contextvars",
        "--h11-max-incomplete-event-size",
        "4096",
        "--http2",
    ]
    parsed = vars(build_parser().parse_args(argv))
    given = {k: v for k, v in parsed.items() if k not in ("command", "app")}
    config = config_from_sources(given, {})
    assert (config.http, config.ws, config.loop) == ("h11", "wsproto", "asyncio")
    assert (config.ssl_version, config.reset_contextvars) == ("auto", True)
    assert config.max_request_headers_bytes == 4096


def test_an_unknown_flag_names_the_nearest(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", "main:app", "--timeout-keepalive", "5"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unrecognized arguments: --timeout-keepalive 5" in err
    assert "(did you mean '--timeout-keep-alive'?)" in err


# --- UVICORN_* variables ----------------------------------------------------------------------


def test_uvicorn_variables_fill_in_where_ours_are_unset() -> None:
    notes: list[Note] = []
    environ = {
        "UVICORN_PORT": "9001",
        "UVICORN_HOST": "0.0.0.0",
        "SLUICEWAY_TIMEOUT_KEEP_ALIVE": "7",
        "UVICORN_TIMEOUT_KEEP_ALIVE": "3",
        "UVICORN_RELOAD_DIRS": "src lib",  # click splits a multiple option on whitespace
        "UVICORN_PROXY_HEADERS": "false",
        "UVICORN_H11_MAX_INCOMPLETE_EVENT_SIZE": "2k",
        "UVICORN_TIMEOUT_KEEPALIVE": "4",
    }
    config = config_from_sources({}, environ, notes)
    assert (config.port, config.host, config.keep_alive_timeout_s) == (9001, "0.0.0.0", 7.0)
    assert (config.reload_dirs, config.proxy_headers) == (("src", "lib"), False)
    assert config.max_request_headers_bytes == 2048
    assert (logging.INFO, "UVICORN_PORT applied, as SLUICEWAY_PORT (--port)") in notes
    assert (
        logging.INFO,
        "UVICORN_TIMEOUT_KEEP_ALIVE is ignored: SLUICEWAY_TIMEOUT_KEEP_ALIVE is set",
    ) in notes
    assert (
        logging.WARNING,
        "UVICORN_TIMEOUT_KEEPALIVE is ignored: sluiceway has no such uvicorn option"
        " (did you mean 'UVICORN_TIMEOUT_KEEP_ALIVE'?)",
    ) in notes
    assert len(notes) == 7  # one line per variable


def test_a_bad_uvicorn_value_names_its_variable() -> None:
    with pytest.raises(ConfigError, match="invalid value for UVICORN_PORT: 'eighty'"):
        config_from_sources({}, {"UVICORN_PORT": "eighty"})
    with pytest.raises(ConfigError, match="UVICORN_LIMIT_CONCURRENCY must be positive"):
        config_from_sources({}, {"UVICORN_LIMIT_CONCURRENCY": "0"})


async def test_a_uvicorn_deployment_listens_where_its_variables_say() -> None:
    env = {"UVICORN_PORT": "0", "UVICORN_HOST": "127.0.0.1", "UVICORN_HEADERS": "X-Via:uvicorn-env"}
    async with cli_server(*APP, env=env) as proc, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        # Before: UVICORN_PORT was ignored and the server listened on 8000.
        assert proc.port != 8000
        response = await client.get(proc.address + "/")
        assert response.status_code == 200
        assert response.headers["x-via"] == "uvicorn-env"
        for name, ours in (("PORT", "--port"), ("HOST", "--host"), ("HEADERS", "--header")):
            line = f"UVICORN_{name} applied, as SLUICEWAY_{name.removesuffix('S')}"
            assert len([text for text in proc.stderr if line in text]) == 1, proc.text
            assert ours in proc.text


async def test_uvicorn_engine_names_serve_with_ours_and_say_so() -> None:
    args = ("process_apps:echo_scope", "--app-dir", str(HERE), "--port", "0")
    engines = ("--http", "h11", "--ws", "websockets-sansio", "--loop", "asyncio")
    async with cli_server(*args, *engines) as proc, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        assert (await client.get(proc.address + "/")).status_code == 200
        async with websockets.connect(proc.address.replace("http", "ws") + "/") as ws:
            assert "client" in str(await ws.recv())
    assert re.search(r"\[INFO\] --http h11: uvicorn's engine choice", proc.text), proc.text
    assert "--ws websockets-sansio: uvicorn's engine choice" in proc.text
    assert proc.text.count("uvicorn's engine choice") == 2


async def test_h11_max_incomplete_event_size_bounds_the_head() -> None:
    args = (*APP, "--port", "0", "--h11-max-incomplete-event-size", "1024")
    async with cli_server(*args) as proc, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        assert (await client.get(proc.address + "/")).status_code == 200
        big = await client.get(proc.address + "/", headers={"x-big": "a" * 2048})
        assert big.status_code == 431
