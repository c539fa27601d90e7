"""Fixtures for the layer tests: real redis-server processes on free ports.

A missing redis-server fails the run: the Redis layer is the part of the
project that must be proven against the real thing, never silently skipped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from sluiceway.layers.base import BaseChannelLayer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process with persistence off; can be stopped and restarted."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: the Redis layer tests need it")
        self.binary = binary
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="sluiceway-redis-")
        self.proc: subprocess.Popen[bytes] | None = None
        # Replaces the plain --port option (a TLS server listens on --tls-port).
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        listen = self.extra_args or ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            [self.binary, *listen, *self._common_args()],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with {self.proc.returncode}")
            # A TLS-only server cannot answer a plain PING: an accepted
            # connection is the sign of life there.
            if self._accepts() if self.extra_args else self._ping():
                return
            time.sleep(0.02)  # polling a child process: there is no event to await
        pytest.fail("redis-server did not start within 10 s")

    def _common_args(self) -> list[str]:
        return ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", self.dir]

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.2):
                return True
        except OSError:
            return False

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def kill(self) -> None:
        """Die without a word (SIGKILL): no shutdown, nothing saved; ``start()`` revives it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def close(self) -> None:
        """Stop the server for good and remove its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def flushall(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), 2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)


def _running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    yield from _running_redis()


@pytest.fixture(scope="session")
def redis_server2() -> Iterator[RedisServer]:
    """A second server, for the multi-host tests."""
    yield from _running_redis()


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A private server, for tests that stop, kill or restart it."""
    server = RedisServer()
    server.start()
    yield server
    server.close()


LayerFactory = Callable[..., BaseChannelLayer]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_layer(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[LayerFactory]:
    """Build layers of the parametrised backend; all are closed after the test."""
    made: list[BaseChannelLayer] = []
    hosts: list[str] = []
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flushall()
        hosts = [server.url]

    def factory(**options: object) -> BaseChannelLayer:
        layer: BaseChannelLayer
        if backend == "memory":
            from sluiceway.layers.memory import InMemoryChannelLayer

            layer = InMemoryChannelLayer(**options)  # type: ignore[arg-type]
        else:
            from sluiceway.layers.redis import RedisChannelLayer

            options.setdefault("hosts", hosts)
            layer = RedisChannelLayer(**options)  # type: ignore[arg-type]
        made.append(layer)
        return layer

    yield factory
    for layer in made:
        await layer.close()  # type: ignore[attr-defined]
