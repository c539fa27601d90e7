"""A real Redis Cluster for the layer tests: six redis-server processes on free ports.

Three primaries and three replicas, made with ``redis-cli --cluster create``
(``--cluster-replicas 1``); ``cluster-node-timeout`` is 1 s, so a killed
primary's replica takes over within a few seconds. Each node has its own
directory (its ``cluster-config-file``). The data port and the cluster bus port are both picked
free (``cluster-port``), never ``port + 10000``, which may be taken or
beyond 65535.

A missing redis-server or redis-cli fails the run, as in ``conftest.py``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.layers.conftest import RedisServer

_NODE_TIMEOUT_MS = 1000
# How long the cluster may take to form, or to fail a primary over.
_SETTLE_S = 30.0


def _command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """One command in RESP over a raw socket; the raw reply (enough for INFO-like text)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(b"".join(parts))
        reply = b""
        # A bulk reply: read until the announced length has arrived.
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return reply
            reply += chunk
            if reply[:1] != b"$":
                if reply.endswith(b"\r\n"):
                    return reply
                continue
            head, _, body = reply.partition(b"\r\n")
            if int(head[1:]) < 0 or len(body) >= int(head[1:]) + 2:
                return body[: int(head[1:])]


class ClusterNode(RedisServer):
    """One node of the cluster: a RedisServer with cluster mode on."""

    def __init__(self) -> None:
        super().__init__()
        self.bus_port = _free_port_except(self.port)

    def _common_args(self) -> list[str]:
        return [
            *super()._common_args(),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            f"{self.dir}/nodes.conf",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-node-timeout",
            str(_NODE_TIMEOUT_MS),
        ]

    @property
    def alive(self) -> bool:
        return self.proc is not None

    def command(self, *args: str) -> bytes:
        return _command(self.port, *args)

    def info(self) -> dict[str, str]:
        text = self.command("CLUSTER", "INFO").decode()
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)

    def node_id(self) -> str:
        return self.command("CLUSTER", "MYID").decode()

    def role(self) -> str:
        return self.command("ROLE").split(b"\r\n")[2].decode()


def _free_port_except(taken: int) -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port != taken:
            return port


class RedisCluster:
    """Six nodes, three primaries with a replica each."""

    def __init__(self, size: int = 6) -> None:
        if shutil.which("redis-cli") is None:
            pytest.fail("redis-cli is not installed: the Redis Cluster tests need it")
        self.nodes = [ClusterNode() for _ in range(size)]

    @property
    def url(self) -> str:
        """The layer URL, naming two seeds (one is enough; two survive one dead seed)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:2])

    @property
    def seeds(self) -> list[str]:
        return [n.url for n in self.nodes]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        result = subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=_SETTLE_S,
        )
        if result.returncode != 0:
            pytest.fail(f"redis-cli --cluster create failed: {result.stdout[-2000:]!r}")
        self.wait_ok()
        self.wait_replicas()

    def wait_replicas(self, timeout_s: float = _SETTLE_S) -> None:
        """Until every live replica is in sync with its primary.

        A replica whose link never came up has no data age, and refuses to
        fail over: a primary killed right after the cluster was made would
        stay dead.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                replicas = [n for n in self.nodes if n.alive and n.role() == "slave"]
                if replicas and all(
                    b"master_link_status:up" in n.command("INFO", "replication") for n in replicas
                ):
                    return
            except OSError:
                pass
            time.sleep(0.05)  # polling other processes: there is no event to await
        pytest.fail("the replicas did not sync with their primaries")

    def wait_ok(self, timeout_s: float = _SETTLE_S) -> None:
        """Until every live node says cluster_state:ok, with all 16384 slots served."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                infos = [n.info() for n in self.nodes if n.alive]
            except OSError:
                infos = []
            if infos and all(
                i.get("cluster_state") == "ok" and i.get("cluster_slots_ok") == "16384"
                for i in infos
            ):
                return
            time.sleep(0.05)  # polling other processes: there is no event to await
        pytest.fail("the Redis Cluster did not reach cluster_state:ok")

    def primaries(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive and n.role() == "master"]

    def owner(self, slot: int) -> ClusterNode:
        """The live primary that serves ``slot``."""
        for node in self.primaries():
            for line in node.command("CLUSTER", "NODES").decode().splitlines():
                fields = line.split()
                if "myself" not in fields[2]:
                    continue
                for part in fields[8:]:
                    low, _, high = part.partition("-")
                    if not low.isdigit():
                        continue
                    if int(low) <= slot <= int(high or low):
                        return node
        raise LookupError(f"no live primary serves slot {slot}")

    def flushall(self) -> None:
        for node in self.primaries():
            node.command("FLUSHALL")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def running_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
