"""Logging written for uvicorn, on a real ``sluiceway run`` process; and ``--log-level trace``.

* uvicorn's own ``LOGGING_CONFIG`` (uvicorn 0.55's, written anew here and
  checked equal to the installed one), as a JSON ``--log-config``: its
  ``uvicorn*`` loggers configure sluiceway's, its formatters
  (``uvicorn.logging.DefaultFormatter``/``AccessFormatter``) work with
  uvicorn made unimportable, and the server says once that it applied them.
* The same for an ``.ini`` file (``fileConfig``), with uvicorn installed:
  uvicorn's own AccessFormatter could not format sluiceway's records.
* ``--log-level trace``: every ASGI message in and out, one line each with
  the connection's id, bodies cut short, credentials and control characters
  never written as they came; at any other level the app is not wrapped.

The process's stdout (the access log in uvicorn's config) is read after it
exits; stderr as it comes (``tests/server/serving.py``). No sleeps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sluiceway.asgi.trace import MessageTrace
from tests.server.logging_apps import app as logging_app
from tests.server.serving import TIMEOUT_S, CLIProcess, running

APP_DIR = ["--app-dir", str(Path(__file__).parent)]

# uvicorn 0.55's uvicorn.config.LOGGING_CONFIG, written out again.
UVICORN_LOGGING_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {
            "()": "uvicorn.logging.DefaultFormatter",
            "fmt": "%(levelprefix)s %(message)s",
            "use_colors": None,
        },
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s',
        },
    },
    "handlers": {
        "default": {
            "formatter": "default",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "formatter": "access",
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}

UVICORN_INI = """\
[loggers]
keys=root,uvicorn_error,uvicorn_access

[handlers]
keys=stderr,stdout

[formatters]
keys=default,access

[logger_root]
level=WARNING
handlers=

[logger_uvicorn_error]
level=INFO
handlers=stderr
qualname=uvicorn.error
propagate=0

[logger_uvicorn_access]
level=INFO
handlers=stdout
qualname=uvicorn.access
propagate=0

[handler_stderr]
class=StreamHandler
formatter=default
args=(sys.stderr,)

[handler_stdout]
class=StreamHandler
formatter=access
args=(sys.stdout,)

[formatter_default]
format=INI %(levelprefix)s%(name)s: %(message)s
class=uvicorn.logging.DefaultFormatter

[formatter_access]
format=INI-ACCESS %(client_addr)s "%(request_line)s" %(status_code)s
class=uvicorn.logging.AccessFormatter
"""

APPLIED = (
    "--log-config: applied the settings of uvicorn's loggers to sluiceway's: "
    "uvicorn -> sluiceway, uvicorn.error -> sluiceway.error, uvicorn.access -> sluiceway.access"
)


@asynccontextmanager
async def sluiceway_run(
    *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[CLIProcess, list[str]]]:
    """``sluiceway run`` with stdout kept; yields the process and (after exit) stdout's lines."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "sluiceway", "run", *args),
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    stdout_read = asyncio.ensure_future(process.stdout.read())
    proc = CLIProcess(process)
    stdout: list[str] = []
    try:
        proc.address = (await proc.wait_for_line(r"Listening on (\S+)")).group(1)
        yield proc, stdout
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0, proc.text
        stdout += (await asyncio.wait_for(stdout_read, TIMEOUT_S)).decode().splitlines()
    finally:
        if process.returncode is None:
            process.kill()
            await asyncio.wait_for(process.wait(), TIMEOUT_S)
        stdout_read.cancel()
        proc._reader.cancel()


def without_uvicorn(tmp_path: Path) -> dict[str, str]:
    """An environment where ``import uvicorn`` fails, as where it is not installed."""
    shadow = tmp_path / "no_uvicorn"
    shadow.mkdir()
    (shadow / "uvicorn.py").write_text("raise ImportError('uvicorn is not installed here')\n")
    paths: Sequence[str] = [str(shadow), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def test_the_config_here_is_uvicorns() -> None:
    from uvicorn.config import LOGGING_CONFIG

    assert UVICORN_LOGGING_CONFIG == LOGGING_CONFIG


async def test_uvicorns_logging_config_configures_sluiceway_without_uvicorn(
    tmp_path: Path,
) -> None:
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(UVICORN_LOGGING_CONFIG))
    args = ["logging_apps:app", "--port", "0", *APP_DIR, "--log-config", str(config)]
    async with sluiceway_run(*args, env=without_uvicorn(tmp_path)) as (proc, stdout):
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(proc.address + "/?from=uvicorn")
        assert response.status_code == 200
        async with connect(proc.address.replace("http://", "ws://") + "/ws") as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            with pytest.raises(ConnectionClosed):
                await ws.recv()  # the app closes with 4000
    # The server log: uvicorn's "INFO:     message" on stderr, and the mapping said once.
    assert proc.stderr.count("INFO:     " + APPLIED) == 1, proc.text
    assert re.search(r"^INFO:     Listening on http://127\.0\.0\.1:\d+$", proc.text, re.M)
    assert re.search(r"^INFO:     Application startup complete\.$", proc.text, re.M)
    # The access log: uvicorn's format on stdout, HTTP and WebSocket alike.
    prefix = r"INFO:     127\.0\.0\.1:\d+ - "
    for line in (
        r'"GET /\?from=uvicorn HTTP/1\.1" 200 OK',
        r'"WebSocket /ws" \[accepted\]',
        r'"WebSocket /ws" \[closed 4000\]',
    ):
        assert any(re.fullmatch(prefix + line, seen) for seen in stdout), (line, stdout)


async def test_a_uvicorn_ini_file_configures_sluiceway(tmp_path: Path) -> None:
    config = tmp_path / "logging.ini"
    config.write_text(UVICORN_INI)
    args = ["logging_apps:app", "--port", "0", *APP_DIR, "--log-config", str(config)]
    async with sluiceway_run(*args) as (proc, stdout):
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.post(proc.address + "/ini", content=b"x")
        assert response.status_code == 200
    listening = r"^INI INFO:    sluiceway\.error: Listening on http://127\.0\.0\.1:\d+$"
    assert re.search(listening, proc.text, re.M), proc.text
    # Only uvicorn.error and uvicorn.access were named: "uvicorn -> sluiceway" is not claimed.
    said = "applied the settings of uvicorn's loggers to sluiceway's: "
    said += "uvicorn.error -> sluiceway.error, uvicorn.access -> sluiceway.access"
    assert sum(said in line for line in proc.stderr) == 1, proc.text
    access = r'INI-ACCESS 127\.0\.0\.1:\d+ "POST /ini HTTP/1\.1" 200 OK'
    assert [line for line in stdout if re.fullmatch(access, line)], stdout


async def test_log_level_trace_logs_every_asgi_message(tmp_path: Path) -> None:
    body = b"line one\n\x1b[31mred\x1b[0m" + b"x" * 1000
    args = ["logging_apps:app", "--port", "0", *APP_DIR, "--log-level", "trace"]
    async with sluiceway_run(*args) as (proc, _):
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.post(
                proc.address + "/echo?q=1",
                content=body,
                headers={"authorization": "Bearer top-secret-token"},
            )
        assert response.status_code == 200
        await proc.wait_for_line(r"ASGI \[\d+\] Completed$")
    text = proc.text
    assert re.search(r"\] ASGI \[1\] Started lifespan$", text, re.M), text
    assert "ASGI [1] Receive {'type': 'lifespan.startup'}" in text
    assert "ASGI [1] Send {'type': 'lifespan.startup.complete'}" in text
    started = re.search(
        r"(127\.0\.0\.1:\d+) - ASGI \[(\d+)\] Started http POST /echo\?q=1$", text, re.M
    )
    assert started, text
    prefix = f"{started.group(1)} - ASGI [{started.group(2)}] "
    receives = [line for line in proc.stderr if prefix + "Receive {'type': 'http.request'" in line]
    assert receives, text
    # The body is cut to its first 32 bytes, escaped, with its full length given.
    first = receives[0]
    assert "'body': b'line one\\n\\x1b[31mred\\x1b[0mxxxxxxxxxxx'... (" in first, first
    assert re.search(r"\.\.\. \(\d+ bytes\)", first), first
    assert any(
        prefix + "Send {'type': 'http.response.start', 'status': 200" in line
        for line in proc.stderr
    )
    assert any(
        prefix + "Send {'type': 'http.response.body', 'body': b'echo:line one" in line
        for line in proc.stderr
    )
    assert prefix + "Completed" in text
    # Nothing the client sent reaches the log raw, and credentials not at all.
    assert "\x1b" not in text
    assert "top-secret-token" not in text


async def test_the_app_is_wrapped_for_trace_only() -> None:
    sluiceway_logger = logging.getLogger("sluiceway")
    before = sluiceway_logger.level
    try:
        sluiceway_logger.setLevel(logging.DEBUG)
        async with running(logging_app) as server:
            assert server.app is logging_app
        sluiceway_logger.setLevel(5)
        async with running(logging_app) as server:
            assert isinstance(server.app, MessageTrace)
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                response = await client.post(f"http://127.0.0.1:{server.port}/", content=b"ok")
            assert response.text == "echo:ok"
    finally:
        sluiceway_logger.setLevel(before)
