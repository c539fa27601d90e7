"""``gunicorn -k sluiceway.workers.SluicewayWorker``: a real gunicorn arbiter, real clients.

Each test runs ``python -m gunicorn`` on a port picked free (gunicorn's
``-b 127.0.0.1:0`` does not say which port it got), reads its stderr for the
worker's start line (``sluiceway X (pid N, ...``: the worker is accepting),
then talks to it with httpx and the websockets client. The settings mapping
is checked in-process against gunicorn's own ``Config``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import websockets
from gunicorn.config import Config as GunicornConfig

from sluiceway.errors import ConfigError
from sluiceway.workers import config_from_gunicorn
from tests.server.serving import TIMEOUT_S, CLIProcess
from tests.support import local_tls

APP = """
import asyncio, os, sys, time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if os.environ.get("GW_FAIL_STARTUP"):
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "echo " + message["text"]})
        await send({"type": "websocket.close"})
        return
    path = scope["path"]
    if path.startswith("/sleep/"):
        print("sleeping", path, flush=True, file=sys.stderr)
        await asyncio.sleep(float(path.rsplit("/", 1)[1]))
    elif path.startswith("/block/"):
        time.sleep(float(path.rsplit("/", 1)[1]))  # a blocked event loop
    body = f"{os.getpid()} {scope['http_version']} {scope['scheme']} {path}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""

WORKER_STARTED = r"sluiceway \S+ \(pid (\d+),"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gunicorn(CLIProcess):
    url = ""

    async def worker_pids(self, count: int) -> list[int]:
        """The pids of the first ``count`` workers that started serving (waits for them)."""
        return [int(m.group(1)) for m in await self.wait_for_lines(WORKER_STARTED, count)]

    async def get(self, path: str, **kwargs: object) -> httpx.Response:
        # A connection per request: a worker that stops closes its idle ones.
        async with httpx.AsyncClient(timeout=TIMEOUT_S, **kwargs) as client:  # type: ignore[arg-type]
            return await client.get(self.url + path, headers={"connection": "close"})


@contextlib.asynccontextmanager
async def gunicorn(
    tmp_path: Path,
    *args: str,
    scheme: str = "http",
    env: dict[str, str] | None = None,
    wait_started: bool = True,
) -> AsyncIterator[Gunicorn]:
    (tmp_path / "gw_app.py").write_text(APP)
    port = free_port()
    extra = ["--no-control-socket"] if "--no-control-socket" in _gunicorn_flags() else []
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        "sluiceway.workers.SluicewayWorker",
        "-b",
        f"127.0.0.1:{port}",
        "--chdir",
        str(tmp_path),
        *extra,
        *args,
        "gw_app:app",
        cwd=tmp_path,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    proc = Gunicorn(process)
    proc.url = f"{scheme}://127.0.0.1:{port}"
    try:
        if wait_started:
            await proc.wait_for_line(WORKER_STARTED)
        yield proc
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)  # a quick stop of arbiter and workers
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        # A worker outlives a killed arbiter until its heartbeat sees it gone
        # (or forever, if the test caught that broken): ours are named by their command line.
        for match in map(re.compile(WORKER_STARTED).search, proc.stderr):
            with contextlib.suppress(OSError):
                if match and b"gw_app" in Path(f"/proc/{match.group(1)}/cmdline").read_bytes():
                    os.kill(int(match.group(1)), signal.SIGKILL)
        await asyncio.wait_for(process.wait(), TIMEOUT_S)
        proc._reader.cancel()


def _gunicorn_flags() -> set[str]:
    from gunicorn.config import KNOWN_SETTINGS

    return {flag for setting in KNOWN_SETTINGS for flag in getattr(setting, "cli", None) or ()}


# --- the settings mapping -------------------------------------------------------------------


def gunicorn_config(**settings: object) -> GunicornConfig:
    cfg = GunicornConfig()
    for name, value in settings.items():
        cfg.set(name, value)
    return cfg


def test_gunicorn_settings_map_to_config(tmp_path: Path) -> None:
    tls = local_tls(tmp_path)
    cfg = gunicorn_config(
        backlog=64,
        keepalive=7,
        graceful_timeout=3,
        limit_request_line=2000,
        limit_request_fields=20,
        limit_request_field_size=1000,
        forwarded_allow_ips="10.0.0.0/8,127.0.0.1",
        accesslog="-",
        certfile=str(tls.cert_file),
        keyfile=str(tls.key_file),
        ca_certs=str(tls.cert_file),
        cert_reqs=2,
        ciphers="ECDHE+AESGCM",
    )
    config = config_from_gunicorn(cfg, 123)
    assert config.backlog == 64
    assert config.keep_alive_timeout_s == 7.0
    assert config.graceful_shutdown_timeout_s == 3.0
    assert config.limit_max_requests == 123
    assert config.limit_max_requests_jitter == 0  # gunicorn drew it into the 123
    assert config.max_request_line_bytes == 2000
    assert config.max_request_headers_bytes == 20 * 1000
    assert config.forwarded_allow_ips == ("10.0.0.0/8", "127.0.0.1")
    assert config.proxy_headers and config.access_log
    assert (config.ssl_certfile, config.ssl_keyfile) == (str(tls.cert_file), str(tls.key_file))
    assert config.ssl_ca_certs == str(tls.cert_file)
    assert (config.ssl_cert_reqs, config.ssl_ciphers) == (2, "ECDHE+AESGCM")


def test_gunicorn_defaults_and_unlimited_values() -> None:
    config = config_from_gunicorn(gunicorn_config(limit_request_line=0), None)
    assert config.limit_max_requests is None
    assert config.max_request_line_bytes == 1024 * 1024  # gunicorn's own cap for "0"
    assert config.max_request_headers_bytes == 100 * 8190  # its default fields x field size
    assert not config.access_log and not config.is_ssl
    assert config.http2 is False  # gunicorn's --http-protocols default is h1 alone
    cfg = gunicorn_config(http2_cleartext="prior-knowledge", http2_max_concurrent_streams=7)
    assert (config_from_gunicorn(cfg, None).http2, config.h2_max_concurrent_streams) == (True, 100)
    assert config_from_gunicorn(cfg, None).h2_max_concurrent_streams == 7
    assert config_from_gunicorn(gunicorn_config(http_protocols="h2,h1"), None).http2


def test_overrides_win_and_unsupported_settings_are_refused() -> None:
    config = config_from_gunicorn(gunicorn_config(keepalive=2), None, {"keep_alive_timeout_s": 9})
    assert config.keep_alive_timeout_s == 9
    with pytest.raises(ConfigError, match="PROXY protocol"):
        config_from_gunicorn(gunicorn_config(proxy_protocol="v1"), None)


# --- a real arbiter --------------------------------------------------------------------------


async def test_http1_websocket_and_h2c_through_the_worker(tmp_path: Path) -> None:
    async with gunicorn(tmp_path, "--http2-cleartext", "prior-knowledge") as proc:
        (pid,) = await proc.worker_pids(1)
        response = await proc.get("/plain")
        assert response.text == f"{pid} 1.1 http /plain"
        response = await proc.get("/h2", http1=False, http2=True)
        assert (response.http_version, response.text) == ("HTTP/2", f"{pid} 2 http /h2")
        ws_url = proc.url.replace("http", "ws") + "/ws"
        async with websockets.connect(ws_url, open_timeout=TIMEOUT_S) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT_S) == "echo hello"


async def test_tls_settings_reach_the_worker(tmp_path: Path) -> None:
    tls = local_tls(tmp_path)
    tls_args = ["--certfile", str(tls.cert_file), "--keyfile", str(tls.key_file)]
    async with gunicorn(tmp_path, *tls_args, "--http-protocols", "h2,h1", scheme="https") as proc:
        response = await proc.get("/secure", verify=tls.client_context, http2=True)
        assert response.http_version == "HTTP/2"  # ALPN, as --http-protocols asked
        assert response.text.endswith(" 2 https /secure")


async def test_term_drains_the_request_in_flight(tmp_path: Path) -> None:
    async with gunicorn(tmp_path) as proc:
        slow = asyncio.ensure_future(proc.get("/sleep/1"))
        await proc.wait_for_line("sleeping /sleep/1")
        proc.signal(signal.SIGTERM)
        response = await slow
        assert response.status_code == 200 and response.text.endswith("/sleep/1")
        assert await proc.wait_exit() == 0
        assert "Received SIGTERM: shutting down" in proc.text


async def test_quit_stops_without_draining(tmp_path: Path) -> None:
    async with gunicorn(tmp_path) as proc:
        slow = asyncio.ensure_future(proc.get("/sleep/60"))
        await proc.wait_for_line("sleeping /sleep/60")
        proc.signal(signal.SIGQUIT)
        # Well inside the 60 s request and the 30 s graceful timeout.
        assert await proc.wait_exit() == 0
        with pytest.raises(httpx.TransportError):
            await slow
        assert "Received SIGQUIT: stopping now, without draining." in proc.text
        assert "Server stopped." in proc.text
        assert "SIGKILL" not in proc.text


async def test_hup_replaces_the_worker_while_serving(tmp_path: Path) -> None:
    async with gunicorn(tmp_path) as proc:
        (old,) = await proc.worker_pids(1)
        proc.signal(signal.SIGHUP)
        # Requests keep being answered, by the old worker then by the new one.
        deadline = time.monotonic() + TIMEOUT_S
        pids = set()
        while time.monotonic() < deadline:
            response = await proc.get("/during-hup")
            assert response.status_code == 200
            pids.add(int(response.text.split()[0]))
            if pids - {old}:
                break
        (new,) = pids - {old}
        assert (await proc.worker_pids(2))[1] == new
        await proc.wait_for_line(rf"\[{old}\] \[INFO\] Server stopped")  # drained, not killed
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_usr1_reopens_the_access_log(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    async with gunicorn(tmp_path, "--access-logfile", str(log)) as proc:
        await proc.get("/before")
        assert '"GET /before HTTP/1.1" 200' in log.read_text()
        log.rename(tmp_path / "access.log.1")
        proc.signal(signal.SIGUSR1)
        # The arbiter reopens its files then signals the worker: poll until
        # a request's line lands in a fresh access.log.
        deadline = time.monotonic() + TIMEOUT_S
        while not (log.exists() and "/after" in log.read_text()):
            assert time.monotonic() < deadline, proc.text
            await proc.get("/after")
        assert "/before" not in log.read_text()
        assert "/before" in (tmp_path / "access.log.1").read_text()


async def test_max_requests_restarts_the_worker(tmp_path: Path) -> None:
    async with gunicorn(tmp_path, "--max-requests", "2") as proc:
        (old,) = await proc.worker_pids(1)
        for _ in range(2):
            assert (await proc.get("/counted")).text.startswith(f"{old} ")
        (_, new) = await proc.worker_pids(2)
        assert (await proc.get("/fresh")).text.startswith(f"{new} ")
        assert "Served 2 requests, the limit was 2" in proc.text


async def test_heartbeat_keeps_a_busy_worker_and_a_blocked_loop_is_killed(
    tmp_path: Path,
) -> None:
    async with gunicorn(tmp_path, "--timeout", "1") as proc:
        (first,) = await proc.worker_pids(1)
        # Longer than the timeout, but the loop runs: notify() keeps it alive.
        response = await proc.get("/sleep/2.5")
        assert response.text.startswith(f"{first} ")
        # A blocked loop sends no heartbeat: the arbiter aborts the worker.
        with pytest.raises(httpx.TransportError):
            await proc.get("/block/10")
        await proc.wait_for_line(f"WORKER TIMEOUT \\(pid:{first}\\)")
        (_, second) = await proc.worker_pids(2)
        assert (await proc.get("/after")).text.startswith(f"{second} ")


async def test_failed_startup_halts_the_arbiter(tmp_path: Path) -> None:
    env = {"GW_FAIL_STARTUP": "1"}
    async with gunicorn(tmp_path, env=env, wait_started=False) as proc:
        # gunicorn's WORKER_BOOT_ERROR: the arbiter stops instead of a restart loop.
        assert await proc.wait_exit() == 3
        assert "application startup failed: no database" in proc.text
        assert "Worker failed to boot" in proc.text


async def test_a_worker_stops_when_the_arbiter_is_gone(tmp_path: Path) -> None:
    async with gunicorn(tmp_path, "--timeout", "2") as proc:
        (pid,) = await proc.worker_pids(1)
        proc.process.kill()
        await proc.wait_for_line(rf"\[{pid}\] \[WARNING\] The gunicorn arbiter is gone")
        await proc.wait_for_line(rf"\[{pid}\] \[INFO\] Server stopped")
        assert await proc.wait_exit() == -signal.SIGKILL  # and the worker let go of stderr


async def test_gunicorn_reload_restarts_the_worker(tmp_path: Path) -> None:
    async with gunicorn(tmp_path, "--reload", "--reload-engine", "poll") as proc:
        (old,) = await proc.worker_pids(1)
        app = tmp_path / "gw_app.py"
        app.write_text(app.read_text().replace("body = f", "body = b'reloaded ' + f"))
        # gunicorn's poll reloader takes its first look at the modules' mtimes
        # some time after the worker boots, and a change before that look is
        # its baseline, not a change: move the mtime on again until it sees one.
        deadline = time.monotonic() + TIMEOUT_S
        for step in itertools.count(1):
            stamp = time.time_ns() + step * 2_000_000_000
            os.utime(app, ns=(stamp, stamp))
            try:
                (_, new) = await proc.wait_for_lines(WORKER_STARTED, 2, timeout=2.5)
                new = int(new.group(1))
                break
            except asyncio.TimeoutError:
                assert time.monotonic() < deadline, "gunicorn's reloader never restarted"
        response = await proc.get("/code")
        assert response.text == f"reloaded {new} 1.1 http /code"
        assert f"[{old}] [INFO] Server stopped." in proc.text  # drained, not killed
