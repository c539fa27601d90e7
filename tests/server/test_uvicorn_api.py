"""uvicorn's Python API on sluiceway: ``Config(app, ...)`` with uvicorn's keyword names,
``Server(config)``, ``server.run()`` in a thread, the ``started`` bool, ``should_exit`` and
``force_exit`` from another thread, the ``install_signal_handlers`` override, and the
options with a meaning here (``ssl_version``, ``reset_contextvars``).

Servers made the uvicorn way set up logging when they serve, as uvicorn's do; that runs
in subprocesses (tests/server/test_uvicorn_examples.py), never in this pytest process.
Here servers are made as ``Server(config, app)``, which leaves logging alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import uvicorn

import sluiceway
from sluiceway.config import Config
from sluiceway.errors import ConfigError
from sluiceway.options import BY_KEYWORD, OPTIONS, UVICORN_ONLY
from sluiceway.server.runner import Server
from tests.server.serving import TIMEOUT_S, running


async def hello(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


# --- Config: the app first, uvicorn's keyword names and Python values ----------------------


def test_config_takes_the_app_first_and_uvicorns_keywords() -> None:
    config = sluiceway.Config(
        hello,
        host="0.0.0.0",
        port=5000,
        timeout_keep_alive=2,
        timeout_graceful_shutdown=None,  # uvicorn's "no bound": ours stays
        ws_max_size=1024,
        ws_ping_interval=None,  # uvicorn's "no pings": 0 here
        limit_concurrency=3,
        proxy_headers=False,
        forwarded_allow_ips="10.0.0.1, 10.0.0.0/8",
        reload_dirs="src",
        headers=[("X-One", "1")],
        log_level=logging.DEBUG,
        workers=None,
        ssl_cert_reqs=ssl.CERT_NONE,
        h11_max_incomplete_event_size=32768,
        limit_max_requests=10,
        backlog=100,
        app_dir=Path("/srv"),
    )
    assert config.app is hello
    assert (config.host, config.port) == ("0.0.0.0", 5000)
    assert config.keep_alive_timeout_s == 2
    assert config.graceful_shutdown_timeout_s == Config().graceful_shutdown_timeout_s
    assert (config.ws_max_size_bytes, config.ws_ping_interval_s) == (1024, 0.0)
    assert (config.limit_concurrency, config.proxy_headers) == (3, False)
    assert config.forwarded_allow_ips == ("10.0.0.1", "10.0.0.0/8")
    assert config.reload_dirs == ("src",)
    assert config.headers == (("X-One", "1"),)
    assert (config.log_level, config.workers) == ("debug", 1)
    assert config.max_request_headers_bytes == 32768
    assert (config.limit_max_requests, config.backlog, config.app_dir) == (10, 100, "/srv")


def test_field_names_still_work_and_the_app_is_not_a_setting() -> None:
    config = Config(port=0, keep_alive_timeout_s=1.5)
    assert (config.app, config.port, config.keep_alive_timeout_s) == (None, 0, 1.5)
    assert Config(app="main:app").app == "main:app"
    copy = Config(hello, port=1).replace(port=2)
    assert (copy.app, copy.port) == (hello, 2)
    assert Config(hello) == Config("other:app")  # equality compares the settings only


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"timeout_keepalive": 5},
            "unknown option 'timeout_keepalive' (did you mean 'timeout_keep_alive'?)",
        ),
        ({"ws_max_sise": 5}, "unknown option 'ws_max_sise' (did you mean 'ws_max_size'?)"),
        ({"zzz": 1}, "unknown option 'zzz'"),
        (
            {"timeout_keep_alive": 1, "keep_alive_timeout_s": 2},
            "options 'timeout_keep_alive' and 'keep_alive_timeout_s' are the same setting",
        ),
        ({"ssl_context_factory": lambda config, default: default()}, "is not supported: "),
        ({"http": object}, "http expected one of auto, httptools"),
        ({"loop": "zuvloop"}, "'zuvloop' is not supported"),
        ({"ssl_version": ssl.PROTOCOL_TLSv1}, "TLS 1.0 and 1.1 are deprecated (RFC 8996)"),
        ({"log_level": 7}, "7 is not a logging level"),
        # A number given as text: named, not a TypeError from a comparison.
        ({"port": "8000"}, "port must be a number, got '8000'"),
        ({"timeout_keep_alive": "5"}, "keep_alive_timeout_s must be a number, got '5'"),
    ],
)
def test_bad_keywords_are_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(hello, **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_run_names_the_nearest_keyword() -> None:
    # Before the change: a TypeError traceback from the dataclass.
    with pytest.raises(ConfigError, match=r"did you mean 'timeout_keep_alive'\?"):
        sluiceway.run(hello, timeout_keepalive=5)


def test_ignored_uvicorn_keywords_say_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "sluiceway.error"):
        config = Config(hello, timeout_notify=30, callback_notify=None)
    assert config.app is hello
    assert "Option 'timeout_notify' is ignored" in caplog.text
    assert "Option 'callback_notify' is ignored" in caplog.text


@pytest.mark.parametrize("function", [uvicorn.Config.__init__, uvicorn.run])
def test_every_uvicorn_keyword_is_mapped_or_explained(function: Any) -> None:
    missing = [
        name
        for name in inspect.signature(function).parameters
        if name not in ("self", "app") and name not in BY_KEYWORD and name not in UVICORN_ONLY
    ]
    assert not missing


def test_keyword_names_are_unambiguous() -> None:
    seen: dict[str, str] = {}
    for option in OPTIONS:
        for name in {option.field, *option.uvicorn_names}:
            assert seen.setdefault(name, option.field) == option.field, name


def test_server_takes_the_app_from_the_config() -> None:
    server = Server(Config(hello))
    assert server.app_source is hello
    with pytest.raises(ConfigError, match=r"needs the app: Config\(app, \.\.\.\)"):
        Server(Config())


# --- Server in a thread: started, should_exit, force_exit ----------------------------------


def serving_thread(server: Server) -> threading.Thread:
    """``server.run()`` in a thread, once ``server.started`` (uvicorn's pattern, bounded)."""
    assert server.started is False
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.001)
    assert server.started is True
    return thread


def test_run_in_a_thread_started_and_should_exit() -> None:
    server = Server(Config(port=0, lifespan="off"), hello)
    thread = serving_thread(server)
    assert httpx.get(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT_S).text == "hello"
    assert server.should_exit is False
    server.should_exit = True  # from this thread, not the server's
    thread.join(TIMEOUT_S)
    assert not thread.is_alive()
    assert server.should_exit is True and not server.forced


def test_force_exit_from_another_thread_skips_the_drain() -> None:
    entered = threading.Event()

    async def stuck(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            entered.set()
            await asyncio.Event().wait()  # never answers: only a forced exit ends it

    # A drain of 60 s: the join below (15 s) ends in time only if it was skipped.
    server = Server(Config(port=0, lifespan="off", timeout_graceful_shutdown=60), stuck)
    thread = serving_thread(server)
    with socket.create_connection(("127.0.0.1", server.port or 0), TIMEOUT_S) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert entered.wait(TIMEOUT_S)
        server.should_exit = True
        server.force_exit = True
        thread.join(TIMEOUT_S)
    assert not thread.is_alive()
    assert server.forced and server.force_exit


def test_should_exit_before_run_stops_at_once() -> None:
    server = Server(Config(port=0, lifespan="off"), hello)
    server.should_exit = True
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive()


async def test_overriding_install_signal_handlers_leaves_the_signals_alone() -> None:
    class QuietServer(Server):
        def install_signal_handlers(self) -> None:
            pass

    before = signal.getsignal(signal.SIGTERM)
    server = QuietServer(Config(port=0, lifespan="off"), hello)
    serving = asyncio.ensure_future(server.serve())
    await asyncio.wait_for(server.started_event.wait(), TIMEOUT_S)
    assert signal.getsignal(signal.SIGTERM) is before  # the loop's handler was not put in
    server.should_exit = True
    await asyncio.wait_for(serving, TIMEOUT_S)


# --- Options with a meaning here --------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = (str(directory / name) for name in ("cert.pem", "key.pem", "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    ca.cert_pem.write_to_path(ca_file)
    yield cert, key, ca_file


@pytest.mark.parametrize(
    ("ssl_version", "negotiated"),
    [(ssl.PROTOCOL_TLS_SERVER, "TLSv1.3"), (5, "TLSv1.2"), ("TLSv1.3", "TLSv1.3")],
)
async def test_ssl_version_pins_the_protocol(
    cert_files: tuple[str, str, str], ssl_version: Any, negotiated: str
) -> None:
    cert, key, ca_file = cert_files
    client = ssl.create_default_context(cafile=ca_file)  # offers 1.2 and 1.3
    options = {"ssl_certfile": cert, "ssl_keyfile": key, "ssl_version": ssl_version}
    async with running(hello, lifespan="off", **options) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client)
        assert writer.get_extra_info("ssl_object").version() == negotiated
        writer.close()


REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


async def context_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": REQUEST_VAR.get().encode()})


@pytest.mark.parametrize(("reset", "seen"), [(False, "set before the server"), (True, "unset")])
async def test_reset_contextvars_hides_the_starting_context(reset: bool, seen: str) -> None:
    # What instrumentation does: set a variable before the server starts.
    token = REQUEST_VAR.set("set before the server")
    try:
        async with (
            running(context_app, lifespan="off", reset_contextvars=reset) as server,
            httpx.AsyncClient(timeout=TIMEOUT_S) as client,
        ):
            assert (await client.get(f"http://127.0.0.1:{server.port}/")).text == seen
    finally:
        REQUEST_VAR.reset(token)
