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
from typing import TYPE_CHECKING

import pytest

from sluiceway.layers.base import BaseChannelLayer

if TYPE_CHECKING:
    from tests.layers.cluster_support import RedisCluster
    from tests.layers.sentinel_support import SentinelSet


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


@pytest.fixture(scope="session")
def sentinel_set() -> Iterator[SentinelSet]:
    """A primary, a replica and three sentinels, shared (tests that fail over make their own)."""
    from tests.layers.sentinel_support import SentinelSet

    sentinels = SentinelSet()
    sentinels.start()
    yield sentinels
    sentinels.close()


# Conformance tests that rely on a queue (a message sent before anyone
# receives its channel, or ChannelFull seen by the sender): not applicable to
# the pub/sub layer, which keeps no queue; tests/layers/test_pubsub.py holds
# their pub/sub counterparts.
PUBSUB_NOT_APPLICABLE = {
    "test_send_receive_roundtrip": "sent before anyone receives the channel",
    "test_sender_edits_after_send_are_not_seen": "sent before anyone receives the channel",
    "test_order_is_kept_per_channel": "sent before anyone receives the channel",
    "test_channel_full": "the sender cannot see a remote buffer: no ChannelFull",
    "test_capacity_overrides_by_glob_and_regex": "no ChannelFull for the sender",
    "test_group_send_skips_full_member_and_counts_it": "fullness is seen by the receiver",
    "test_message_expires_in_the_queue": "sent before anyone receives the channel",
    "test_group_membership_expires": "sent before anyone receives the channel",
    "test_flush": "sent before anyone receives the channel",
    "test_good_names_at_the_limit": "sent before anyone receives the channel",
    "test_group_send_honours_capacity_overrides": "fullness is seen by the receiver",
}


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A six-node Redis Cluster, shared (tests that kill or reshard make their own)."""
    from tests.layers.cluster_support import running_cluster

    yield from running_cluster()


@pytest.fixture(params=["memory", "redis", "sentinel", "pubsub", "cluster", "pubsub-cluster"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def make_layer(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[LayerFactory]:
    """Build layers of the parametrised backend; all are closed after the test."""
    made: list[BaseChannelLayer] = []
    hosts: list[str] = []
    name = request.node.originalname
    if backend.startswith("pubsub") and name in PUBSUB_NOT_APPLICABLE:
        pytest.skip(f"not applicable to pub/sub: {PUBSUB_NOT_APPLICABLE[name]}")
    if backend in ("redis", "pubsub"):
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flushall()
        hosts = [server.url]
    elif backend == "sentinel":
        sentinels: SentinelSet = request.getfixturevalue("sentinel_set")
        sentinels.flushall()
        hosts = [sentinels.url]
    elif backend in ("cluster", "pubsub-cluster"):
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        hosts = cluster.seeds[:2]

    def factory(**options: object) -> BaseChannelLayer:
        layer: BaseChannelLayer
        if backend == "memory":
            from sluiceway.layers.memory import InMemoryChannelLayer

            layer = InMemoryChannelLayer(**options)  # type: ignore[arg-type]
        elif backend.startswith("pubsub"):
            from sluiceway.layers.redis_pubsub import RedisPubSubChannelLayer

            options.setdefault("hosts", hosts)
            if backend == "pubsub-cluster":
                options.setdefault("cluster", True)
            layer = RedisPubSubChannelLayer(**options)  # type: ignore[arg-type]
        else:
            from sluiceway.layers.redis import RedisChannelLayer

            options.setdefault("hosts", hosts)
            if backend == "cluster":
                options.setdefault("cluster", True)
            layer = RedisChannelLayer(**options)  # type: ignore[arg-type]
        made.append(layer)
        return layer

    yield factory
    for layer in made:
        await layer.close()  # type: ignore[attr-defined]
