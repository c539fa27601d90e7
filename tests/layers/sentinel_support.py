"""A Sentinel-managed Redis for the layer tests: a primary, a replica, three sentinels.

All are real processes on free ports, persistence off, each sentinel with a
config file in a temp dir of its own (sentinel rewrites it). ``start()``
returns once the sentinels see the primary, the replica and one another, and
the replica is in sync, so a failover can be run at once. Waits poll the
processes with a deadline: there is no event to await from another process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.layers.conftest import RedisServer, _free_port

SERVICE = "sluicewaysvc"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 3000
START_TIMEOUT_S = 20.0


def command(port: int, *args: str, timeout: float = 1.0) -> list[str] | str | int | None:
    """One command over a raw socket (RESP2); a minimal reader of the reply."""
    payload = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in args
    )
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(payload)
        reader = s.makefile("rb")
        return _read(reader)


def _read(reader: object) -> list[str] | str | int | None:
    line: bytes = reader.readline()  # type: ignore[attr-defined]
    kind, rest = line[:1], line[1:-2]
    if kind in (b"+", b"-"):
        return rest.decode()
    if kind == b":":
        return int(rest)
    if kind == b"$":
        if rest == b"-1":
            return None
        data: bytes = reader.read(int(rest) + 2)  # type: ignore[attr-defined]
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        if rest == b"-1":
            return None
        return [_read(reader) for _ in range(int(rest))]  # type: ignore[misc]
    raise AssertionError(f"unexpected reply {line!r}")


class ReplicaServer(RedisServer):
    def __init__(self, primary: RedisServer) -> None:
        super().__init__()
        self.primary = primary

    def _common_args(self) -> list[str]:
        return [*super()._common_args(), "--replicaof", "127.0.0.1", str(self.primary.port)]


class SentinelProcess:
    def __init__(self, primary_port: int) -> None:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            pytest.fail("redis-sentinel is not installed: the Sentinel layer tests need it")
        self.binary = binary
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="sluiceway-sentinel-")
        self.conf = Path(self.dir) / "sentinel.conf"
        self.conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """A primary, a replica and three sentinels monitoring them as ``SERVICE``."""

    def __init__(self) -> None:
        self.primary = RedisServer()
        self.replica = ReplicaServer(self.primary)
        self.sentinels: list[SentinelProcess] = []

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        self.sentinels = [SentinelProcess(self.primary.port) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_until(self._ready, "the sentinels to see the primary, replica and each other")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it."""
        for sentinel in self.sentinels:
            try:
                reply = command(sentinel.port, "SENTINEL", "get-master-addr-by-name", SERVICE)
            except OSError:
                continue
            if isinstance(reply, list) and len(reply) == 2:
                return int(str(reply[1]))
        return None

    def _ready(self) -> bool:
        try:
            for sentinel in self.sentinels:
                info = command(sentinel.port, "SENTINEL", "master", SERVICE)
                fields = dict(zip(info[::2], info[1::2], strict=True))  # type: ignore[index]
                if fields.get("num-other-sentinels") != "2" or fields.get("num-slaves") != "1":
                    return False
            role = command(self.replica.port, "ROLE")
        except (OSError, TypeError, ValueError):
            return False
        return isinstance(role, list) and role[3] == "connected"

    def wait_until(self, ready: object, what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():  # type: ignore[operator]
                return
            time.sleep(0.05)  # polling other processes: there is no event to await
        pytest.fail(f"timed out after {timeout} s waiting for {what}")

    def flushall(self) -> None:
        self.primary_server().flushall()

    def primary_server(self) -> RedisServer:
        port = self.master_port()
        return self.replica if port == self.replica.port else self.primary

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        self.replica.close()
        self.primary.close()
