"""The runner on its own: binding, start/stop, drain and forced exit, with a line protocol.

These tests swap the HTTP protocol for a tiny line protocol (``ping`` ->
``pong``; ``slow`` holds a request in flight until released) so that the
runner's duties are checked in isolation: what it binds, that it asks every
connection to shut down, waits for in-flight work up to the graceful timeout,
aborts the rest and cancels app tasks, and runs lifespan around all that.
The HTTP end-to-end tests live in test_cli.py and test_server.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send
from sluiceway.config import Config
from sluiceway.connection.state import ServerState
from sluiceway.errors import ConfigError, LifespanFailed
from sluiceway.server.runner import Server, bind_sockets

TIMEOUT = 10


class LineProtocol(asyncio.Protocol):
    """ping -> pong; slow -> in flight until ``release`` is set, then done."""

    release: asyncio.Event

    def __init__(self, state: ServerState, release: asyncio.Event) -> None:
        self.state = state
        self.release = release
        self.deadline: float | None = None
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.state.add_connection(self)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for line in data.split(b"\n"):
            if line == b"ping":
                self.transport.write(b"pong\n")
            elif line == b"slow":
                self.busy = True
                task = asyncio.get_running_loop().create_task(self._slow())
                self.state.tasks.add(task)
                task.add_done_callback(self.state.tasks.discard)

    async def _slow(self) -> None:
        assert self.transport is not None
        self.transport.write(b"started\n")
        await self.release.wait()
        self.transport.write(b"done\n")
        self.busy = False
        if self.closing:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.remove_connection(self)

    def shutdown(self) -> None:
        self.closing = True
        if not self.busy and self.transport is not None:
            self.transport.close()

    def on_deadline(self) -> None:
        pass

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def line_factory(release: asyncio.Event) -> Callable[..., Callable[[], asyncio.Protocol]]:
    def make(
        config: Config, app: ASGIApp, state: ServerState, ssl_context: object
    ) -> Callable[[], asyncio.Protocol]:
        return lambda: LineProtocol(state, release)

    return make


class LifespanApp:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        message = await receive()
        self.events.append(message["type"])
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        self.events.append(message["type"])
        await send({"type": "lifespan.shutdown.complete"})


async def start(config: Config, app: Any = None, release: asyncio.Event | None = None) -> Server:
    server = Server(
        config,
        app if app is not None else LifespanApp(),
        protocol_factory=line_factory(release or asyncio.Event()),
    )
    await asyncio.wait_for(server.start(), TIMEOUT)
    return server


async def talk(
    port: int | None = None, uds: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if uds is not None:
        return await asyncio.wait_for(asyncio.open_unix_connection(uds), TIMEOUT)
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)


async def line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), TIMEOUT)


async def test_start_binds_port_zero_and_reports_the_real_port() -> None:
    app = LifespanApp()
    server = await start(Config(port=0), app)
    assert server.port is not None and server.port > 0
    assert app.events == ["lifespan.startup"]
    reader, writer = await talk(server.port)
    writer.write(b"ping\n")
    assert await line(reader) == b"pong\n"
    await asyncio.wait_for(server.shutdown(), TIMEOUT)
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # idle: closed at once
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    writer.close()
    with pytest.raises(OSError):
        await talk(server.port)


async def test_in_flight_work_finishes_before_shutdown_returns() -> None:
    release = asyncio.Event()
    app = LifespanApp()
    server = await start(Config(port=0), app, release)
    reader, writer = await talk(server.port)
    writer.write(b"slow\n")
    assert await line(reader) == b"started\n"
    stopping = asyncio.ensure_future(server.shutdown())
    await asyncio.sleep(0)  # let shutdown stop accepting; the request is still in flight
    assert not stopping.done()
    assert app.events == ["lifespan.startup"]  # lifespan shutdown waits for the drain
    release.set()
    assert await line(reader) == b"done\n"
    await asyncio.wait_for(stopping, TIMEOUT)
    assert app.events == ["lifespan.startup", "lifespan.shutdown"]
    writer.close()


async def test_graceful_timeout_aborts_and_cancels() -> None:
    server = await start(Config(port=0, graceful_shutdown_timeout_s=0.1))
    reader, writer = await talk(server.port)
    writer.write(b"slow\n")
    assert await line(reader) == b"started\n"
    (task,) = server.state.tasks
    await asyncio.wait_for(server.shutdown(), TIMEOUT)
    assert task.cancelled()
    assert not server.state.connections
    with contextlib.suppress(ConnectionError):
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    writer.close()


async def test_forced_exit_skips_the_drain_and_lifespan_shutdown() -> None:
    app = LifespanApp()
    server = Server(Config(port=0), app, protocol_factory=line_factory(asyncio.Event()))
    serving = asyncio.ensure_future(server.serve())
    await asyncio.wait_for(server.started_event.wait(), TIMEOUT)
    reader, writer = await talk(server.port)
    writer.write(b"slow\n")
    assert await line(reader) == b"started\n"
    server.request_exit()
    for _ in range(100):  # a few loop turns: serve() wakes and enters shutdown()
        if server.state.shutting_down:
            break
        await asyncio.sleep(0)
    assert server.state.shutting_down
    assert not serving.done()  # draining: waiting for the slow request (30 s graceful timeout)
    server.request_exit()  # the second signal
    await asyncio.wait_for(serving, TIMEOUT)
    assert server.forced
    assert app.events == ["lifespan.startup"]
    writer.close()


async def test_failed_startup_leaves_nothing_bound() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    server = Server(Config(port=0), app, protocol_factory=line_factory(asyncio.Event()))
    with pytest.raises(LifespanFailed, match="no database"):
        await asyncio.wait_for(server.start(), TIMEOUT)
    assert all(sock.fileno() == -1 for sock in server.sockets)


async def test_port_in_use_is_a_config_error_before_lifespan_runs() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    app = LifespanApp()
    try:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: address already in use"):
            await start(Config(port=port), app)
    finally:
        holder.close()
    assert app.events == []


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    server = await start(Config(uds=path))
    assert server.port is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    reader, writer = await talk(uds=path)
    writer.write(b"ping\n")
    assert await line(reader) == b"pong\n"
    writer.close()
    await asyncio.wait_for(server.shutdown(), TIMEOUT)
    assert not os.path.exists(path)


async def test_unix_socket_stale_file_is_replaced_but_live_one_is_not(tmp_path: Path) -> None:
    path = str(tmp_path / "app.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays: a crashed server's leftover
    server = await start(Config(uds=path))
    with pytest.raises(ConfigError, match="another server listens on it"):
        bind_sockets(Config(uds=path))
    await asyncio.wait_for(server.shutdown(), TIMEOUT)


def test_unix_socket_path_that_is_a_regular_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("precious")
    with pytest.raises(ConfigError, match="a file that is not a socket"):
        bind_sockets(Config(uds=str(path)))
    assert path.read_text() == "precious"


async def test_inherited_fd() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = await start(Config(fd=listener.detach()))
    assert server.port == port
    reader, writer = await talk(port)
    writer.write(b"ping\n")
    assert await line(reader) == b"pong\n"
    writer.close()
    await asyncio.wait_for(server.shutdown(), TIMEOUT)


def test_bad_fd_is_a_config_error() -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        with pytest.raises(ConfigError, match=f"--fd {fd}"):
            bind_sockets(Config(fd=fd))
    finally:
        os.close(fd)
    with pytest.raises(ConfigError, match="--fd 999: Bad file descriptor"):
        bind_sockets(Config(fd=999))


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_ipv6() -> None:
    server = await start(Config(host="::1", port=0))
    reader, writer = await asyncio.wait_for(asyncio.open_connection("::1", server.port), TIMEOUT)
    writer.write(b"ping\n")
    assert await line(reader) == b"pong\n"
    writer.close()
    await asyncio.wait_for(server.shutdown(), TIMEOUT)


def test_unresolvable_host() -> None:
    with pytest.raises(ConfigError, match="cannot resolve host"):
        bind_sockets(Config(host="no-such-host.invalid", port=0))


def test_address_not_available() -> None:
    with pytest.raises(ConfigError) as info:
        bind_sockets(Config(host="192.0.2.1", port=0))  # TEST-NET-1: never local
    assert os.strerror(errno.EADDRNOTAVAIL) in str(info.value)
