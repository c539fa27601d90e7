"""The access log of a real ``sluiceway run``: WebSocket sessions, server-made 500s, the 101.

The process routes ``sluiceway.access`` to stderr with ``--log-config`` (by
default it goes to stdout), so each test reads the access lines as they are
written, waiting for them (never a sleep). Clients are independent: the
``websockets`` library, httpx (HTTP/1.1 and HTTP/2) and a raw socket.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server
from tests.support import raw_connection

APP_DIR = ["--app-dir", str(Path(__file__).parent)]
ACCESS = "ACCESS "
# "127.0.0.1:PORT - " starts every access line.
CLIENT = r"127\.0\.0\.1:\d+ - "


@asynccontextmanager
async def access_logged_server(tmp_path: Path) -> AsyncIterator[CLIProcess]:
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps(
            {
                "version": 1,
                "formatters": {"access": {"format": ACCESS + "%(message)s"}},
                "handlers": {
                    "access": {
                        "class": "logging.StreamHandler",
                        "formatter": "access",
                        "stream": "ext://sys.stderr",
                    }
                },
                "loggers": {
                    "sluiceway.access": {
                        "handlers": ["access"],
                        "level": "INFO",
                        "propagate": False,
                    }
                },
            }
        )
    )
    args = ["logging_apps:app", "--port", "0", *APP_DIR, "--log-config", str(config)]
    async with cli_server(*args) as proc:
        yield proc
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0, proc.text


async def access_line(proc: CLIProcess, pattern: str) -> str:
    """The access line matching ``pattern`` in full (after the prefix); waits for it."""
    match = await proc.wait_for_line("^" + re.escape(ACCESS) + "(" + pattern + ")$")
    return match.group(1)


async def test_an_accepted_session_is_logged_when_accepted_and_when_it_ends(
    tmp_path: Path,
) -> None:
    async with access_logged_server(tmp_path) as proc:
        url = proc.address.replace("http://", "ws://") + "/ws?room=1"
        async with connect(url, open_timeout=TIMEOUT_S) as ws:
            await access_line(proc, CLIENT + r'"WebSocket /ws\?room=1" \[accepted\]')
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 4000
        # As uvicorn's line, plus the close code the app heard and the duration.
        await access_line(proc, CLIENT + r'"WebSocket /ws\?room=1" \[closed 4000\] [\d.]+ms')


async def test_the_101_carries_date_and_server(tmp_path: Path) -> None:
    async with access_logged_server(tmp_path) as proc:
        url = proc.address.replace("http://", "ws://") + "/ws"
        async with connect(url, open_timeout=TIMEOUT_S) as ws:
            assert ws.response is not None
            headers = ws.response.headers
            assert ws.response.status_code == 101
            assert headers["server"] == "sluiceway"
            assert parsedate_to_datetime(headers["date"]).tzinfo is not None
            # Like any other response of this server.
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                plain = await client.post(proc.address + "/", content=b"x")
            assert plain.headers["server"] == headers["server"]


@pytest.mark.parametrize(
    ("path", "status"),
    [("/forbidden", 403), ("/denial", 401), ("/crash", 500)],
)
async def test_a_refused_handshake_is_logged_with_its_status(
    tmp_path: Path, path: str, status: int
) -> None:
    async with access_logged_server(tmp_path) as proc:
        url = proc.address.replace("http://", "ws://") + path
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, open_timeout=TIMEOUT_S):
                pass
        assert refused.value.response.status_code == status
        await access_line(proc, CLIENT + f'"WebSocket {path}" {status} ' + r"[\d.]+ms")
        assert "[accepted]" not in proc.text


async def test_a_bad_handshake_is_logged_with_its_status(tmp_path: Path) -> None:
    async with access_logged_server(tmp_path) as proc:
        async with raw_connection(proc.port) as conn:
            await conn.send(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
            )
            response = await conn.read_response()
        assert response.status == 426
        # The refusal the server made carries Date and Server too.
        assert response.header(b"server") == b"sluiceway"
        assert response.header(b"date")
        await access_line(proc, CLIENT + r'"WebSocket /ws" 426')


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
async def test_a_server_made_500_logs_the_bytes_it_sent(tmp_path: Path, http2: bool) -> None:
    async with access_logged_server(tmp_path) as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT_S, http1=not http2, http2=http2) as client:
            response = await client.get(proc.address + "/crash")
        assert response.status_code == 500
        assert response.content == b"Internal Server Error"
        version = "2" if http2 else "1.1"
        await access_line(proc, CLIENT + f'"GET /crash HTTP/{version}" 500 21 ' + r"[\d.]+ms")
