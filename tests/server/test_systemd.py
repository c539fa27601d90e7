"""systemd integration, without systemd: the test plays its part.

* ``sd_notify``: the test binds the datagram socket named by
  ``NOTIFY_SOCKET`` (a path, or an ``@`` abstract name) and reads what
  ``sluiceway run`` sends, with the sender's pid from ``SO_PASSCRED``: READY=1
  once serving, WATCHDOG=1 pings, RELOADING=1/READY=1 around a SIGHUP restart,
  STOPPING=1, and all of it from the main process only.
* Socket activation: the test binds the listening sockets, as a ``.socket``
  unit would, and starts the server through a small shim that puts them at
  fd 3, 4, ... and sets ``LISTEN_PID`` to its own pid before it execs, as
  systemd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import struct
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sluiceway.server import systemd
from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server
from tests.server.test_workers import READY

HERE = Path(__file__).parent
APP = ["restart_apps:app", "--app-dir", str(HERE)]

Message = tuple[int, dict[str, str]]  # (sender pid, fields)


class NotifySocket:
    """The receiving end of ``NOTIFY_SOCKET``: datagrams with their sender's pid."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.seen: list[Message] = []
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
                pid = 0
                for level, kind, payload in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                        pid = struct.unpack("iII", payload[:12])[0]
                fields = dict(line.split("=", 1) for line in data.decode().split("\n"))
                self.messages.put_nowait((pid, fields))
                self.seen.append((pid, fields))

    async def next_with(self, key: str) -> Message:
        """The next message that has ``key`` (earlier ones are skipped, still in ``seen``)."""

        async def scan() -> Message:
            while True:
                message = await self.messages.get()
                if key in message[1]:
                    return message

        return await asyncio.wait_for(scan(), TIMEOUT_S)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="sw-") as name:
        yield Path(name)


async def get(port: int, path: str = "/") -> str:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        response = await client.get(f"http://127.0.0.1:{port}{path}")
        return response.text


async def test_single_process_notifies_ready_watchdog_and_stopping(short_dir: Path) -> None:
    path = str(short_dir / "notify")
    notify = NotifySocket(path)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"}  # a ping every 50 ms
    try:
        async with cli_server(*APP, "--port", "0", env=env) as proc:
            pid, ready = await notify.next_with("READY")
            assert pid == proc.process.pid and ready["READY"] == "1"
            assert ready["MAINPID"] == str(proc.process.pid)
            for _ in range(3):
                assert (await notify.next_with("WATCHDOG"))[1] == {"WATCHDOG": "1"}
            # Unset for the app and anything it starts: only the server notifies.
            for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):
                assert await get(proc.port, f"/env/{name}") == "-"
            proc.signal(signal.SIGTERM)
            pid, stopping = await notify.next_with("STOPPING")
            assert pid == proc.process.pid and stopping["STOPPING"] == "1"
            assert await proc.wait_exit() == 0
    finally:
        notify.close()
    # STOPPING=1 was said once; READY=1 came before any watchdog ping.
    keys = [next(iter(fields)) for _, fields in notify.seen]
    assert keys.count("STOPPING") == 1 and keys.index("READY") < keys.index("WATCHDOG")


async def test_supervisor_notifies_for_all_workers_and_around_a_sighup_restart() -> None:
    name = f"sluiceway-test-{uuid.uuid4().hex}"
    notify = NotifySocket(b"\0" + name.encode())  # the abstract namespace: "@name"
    env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000"}
    try:
        async with cli_server(*APP, "--port", "0", "--workers", "2", env=env) as proc:
            supervisor = proc.process.pid
            _, ready = await notify.next_with("READY")
            assert ready["STATUS"] == "2 worker(s) serving"
            assert ready["MAINPID"] == str(supervisor)
            await notify.next_with("WATCHDOG")
            proc.signal(signal.SIGHUP)
            _, reloading = await notify.next_with("RELOADING")
            assert reloading["MONOTONIC_USEC"].isdigit()
            _, ready = await notify.next_with("READY")
            # Logged before READY is sent, but stderr and the notify socket race to the test.
            await proc.wait_for_line("Restart complete: every worker replaced.")
            assert len(await proc.wait_for_lines(READY, 4)) == 4
            await notify.next_with("WATCHDOG")
            proc.signal(signal.SIGTERM)
            await notify.next_with("STOPPING")
            assert await proc.wait_exit() == 0
    finally:
        notify.close()
    # The workers never notified in the supervisor's name (nor in theirs).
    assert {pid for pid, _ in notify.seen} == {supervisor}


def test_watchdog_and_notify_variables() -> None:
    env = {"NOTIFY_SOCKET": "@name", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = systemd.Notifier.from_environ(env)
    assert notifier is not None
    assert notifier.address == b"\0name" and notifier.watchdog_interval_s == 1.5
    assert env == {}  # unset, as sd_notify(unset_environment=1)
    # A watchdog meant for another process (WATCHDOG_PID) is not ours to ping.
    env = {"NOTIFY_SOCKET": "/run/notify", "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}
    notifier = systemd.Notifier.from_environ(env)
    assert notifier is not None and notifier.watchdog_interval_s is None
    assert systemd.Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert systemd.Notifier.from_environ({}) is None


def test_listen_fds_for_another_process_are_ignored_and_unset() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b"}
    assert systemd.listen_sockets(env) == []
    assert env == {}


# --- socket activation --------------------------------------------------------------------

# Puts the given fds at 3, 4, ... and sets LISTEN_PID to its own pid, then
# execs the server (same pid): what systemd does between fork and exec.
SHIM = """
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for index, fd in enumerate(high):
    os.dup2(fd, 3 + index)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "sluiceway", "run", *sys.argv[2:]])
"""


def activated(
    sockets: list[socket.socket], names: str | None, *args: str, wait_listening: bool = True
) -> contextlib.AbstractAsyncContextManager[CLIProcess]:
    fds = [sock.fileno() for sock in sockets]
    env = {"LISTEN_FDS": str(len(fds))}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    shim = ("-c", SHIM, ",".join(map(str, fds)))
    return cli_server(*args, env=env, pass_fds=fds, python_args=shim, wait_listening=wait_listening)


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_socket_activation_serves_every_passed_socket(short_dir: Path, workers: str) -> None:
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    port = tcp.getsockname()[1]
    uds_path = str(short_dir / "api.sock")
    uds = socket.socket(socket.AF_UNIX)
    uds.bind(uds_path)
    uds.listen()
    # --uds names another path: with systemd's sockets, the unit's addresses win.
    ignored = str(short_dir / "ignored.sock")
    args = [*APP, "--uds", ignored, "--workers", workers]
    try:
        async with activated([tcp, uds], "web:api", *args) as proc:
            await proc.wait_for_line(rf"Listening on http://127\.0\.0\.1:{port} \(systemd: web\)")
            await proc.wait_for_line(rf"Listening on unix:{uds_path} \(systemd: api\)")
            if workers == "2":
                await proc.wait_for_lines(READY, 2)
            else:
                await proc.wait_for_line("Application startup complete")
            assert int(await get(port)) != proc.process.pid or workers == "1"
            transport = httpx.AsyncHTTPTransport(uds=uds_path)
            async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S) as client:
                assert (await client.get("http://systemd/")).text.isdigit()
                # Unset once taken: nothing the app starts takes them again.
                for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
                    assert (await client.get(f"http://systemd/env/{name}")).text == "-"
            proc.signal(signal.SIGTERM)
            assert await proc.wait_exit() == 0
    finally:
        tcp.close()
        uds.close()
    assert os.path.exists(uds_path)  # systemd's socket file: not ours to remove
    assert not os.path.exists(ignored)


async def test_a_passed_datagram_socket_is_a_usage_error() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        async with activated([udp], None, *APP, wait_listening=False) as proc:
            assert await proc.wait_exit() == 2
    finally:
        udp.close()
    assert (
        "sluiceway: error: systemd socket 'fd 3' (fd 3): not a listening stream socket "
        "(use Accept=no, ListenStream=)" in proc.stderr
    )
