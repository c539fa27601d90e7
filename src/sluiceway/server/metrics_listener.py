"""The ``--metrics-port`` listener, and how workers' numbers reach it.

One ``GET /metrics`` for the whole server, on a listener of its own (never
the app's port, and the app's port never serves it):

* One process: ``LocalExporter`` serves scrapes on the server's event loop,
  from a snapshot taken at scrape time (``metrics.snapshot``).
* ``--workers N`` (and ``--reload``): the supervisor owns the listener
  (``SupervisorExporter``, an event loop on a thread of its own, since the
  supervisor's main thread waits in ``select``). Each worker runs a
  ``SnapshotWriter``: every ``WRITE_INTERVAL_S``, and once more as it stops,
  it writes its snapshot to ``<dir>/<pid>-<token>.json`` in a private
  directory the supervisor made, by ``os.replace`` (a reader never sees half
  a file). A worker holds an ``flock`` on its ``.lock`` file for its whole
  life; the kernel drops it when the process ends, however it ends. At
  scrape time the supervisor sums the files of live workers, and folds the
  counters of a departed one (its lock is free) into a base it keeps, then
  deletes its files: counters stay monotonic across worker restarts, and a
  departed worker's gauges drop out. A scrape may be ``WRITE_INTERVAL_S``
  old; a worker killed with SIGKILL loses at most that much of its counts.

The scrape server speaks just enough HTTP/1.x: one request per connection,
``GET``/``HEAD /metrics`` (any query) answers 200, another path 404, another
method 405; the head is capped (``_MAX_HEAD_BYTES``) and must arrive within
``_READ_TIMEOUT_S``.

Imports the standard library, ``sluiceway.config``, ``sluiceway.errors`` and
``sluiceway.server.metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from sluiceway.config import Config
from sluiceway.errors import ConfigError
from sluiceway.server.metrics import (
    CONTENT_TYPE,
    Snapshot,
    add_snapshot,
    empty_snapshot,
    render,
    snapshot,
)

if TYPE_CHECKING:
    from sluiceway.connection.state import ServerState

logger = logging.getLogger("sluiceway.error")

WRITE_INTERVAL_S = 1.0
# The key in Config.extra under which the supervisor tells its workers where
# to write (an internal knob, not an option).
SNAPSHOT_DIR_KEY = "metrics_snapshot_dir"
# The supervisor's directory: <tmpfs or tmp>/sluiceway-metrics-<its pid>-<random>.
_DIR_PREFIX = "sluiceway-metrics-"
_MAX_HEAD_BYTES = 8192
_READ_TIMEOUT_S = 10.0
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


# --- the scrape server --------------------------------------------------------------------------


def bind_metrics_socket(config: Config) -> socket.socket:
    """The listening socket for ``--metrics-host``/``--metrics-port``.

    Raises:
        ConfigError: the address does not resolve or cannot be bound.
    """
    host, port = config.metrics_host, config.metrics_port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"--metrics-host {host!r}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"--metrics-port: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    sock.setblocking(False)
    return sock


def describe(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


class _ScrapeProtocol(asyncio.Protocol):
    """One scrape: read a request head, answer, close."""

    def __init__(self, render_metrics: Callable[[], bytes]) -> None:
        self._render = render_metrics
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream server's
        self._timer = asyncio.get_running_loop().call_later(_READ_TIMEOUT_S, transport.close)

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD_BYTES:
                self._answer(431, b"Request Header Fields Too Large\n")
            return
        words = self._buffer[:end].split(b"\r\n", 1)[0].split(b" ")
        if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
            self._answer(400, b"Bad Request\n")
        elif words[1].split(b"?", 1)[0] != b"/metrics":
            self._answer(404, b"Not Found: the metrics are at /metrics\n")
        elif words[0] not in (b"GET", b"HEAD"):
            self._answer(405, b"Method Not Allowed\n", b"allow: GET, HEAD\r\n")
        else:
            try:
                body = self._render()
            except Exception:
                logger.exception("Could not collect the metrics")
                self._answer(500, b"Internal Server Error\n")
                return
            self._answer(200, body, head_only=words[0] == b"HEAD")

    def _answer(
        self, status: int, body: bytes, extra: bytes = b"", head_only: bool = False
    ) -> None:
        assert self._transport is not None  # only called from data_received
        content_type = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n"
        ).encode("ascii")
        self._transport.write(head + extra + b"\r\n" + (b"" if head_only else body))
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._transport = None


async def serve_scrapes(sock: socket.socket, render_metrics: Callable[[], bytes]) -> asyncio.Server:
    """Serve ``GET /metrics`` on ``sock`` (already listening) from ``render_metrics()``."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _ScrapeProtocol(render_metrics), sock=sock)


# --- one process ----------------------------------------------------------------------------------


class LocalExporter:
    """A single-process server's listener: scrapes read this process's numbers live."""

    def __init__(self, server: asyncio.Server) -> None:
        self._server = server

    @classmethod
    async def start(cls, state: ServerState, config: Config) -> LocalExporter:
        sock = bind_metrics_socket(config)
        try:
            server = await serve_scrapes(sock, lambda: render(snapshot(state)))
        except BaseException:
            sock.close()
            raise
        logger.info("Serving metrics on %s", describe(sock))
        return cls(server)

    async def close(self) -> None:
        self._server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)


# --- a worker ----------------------------------------------------------------------------------


class SnapshotWriter:
    """A worker's side: its snapshot into the supervisor's directory, once a second and at exit."""

    def __init__(self, state: ServerState, directory: str) -> None:
        self._state = state
        name = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._path = Path(directory, name + ".json")
        self._temporary = Path(directory, name + ".tmp")
        # Held until this process ends: the supervisor reads a free lock as
        # "this worker is gone" (the kernel frees it even after SIGKILL).
        self._lock: IO[bytes] | None = open(Path(directory, name + ".lock"), "wb")  # noqa: SIM115
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._timer: asyncio.TimerHandle | None = None
        self.write()
        self._schedule()

    def _schedule(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(WRITE_INTERVAL_S, self._tick)

    def _tick(self) -> None:
        try:
            self.write()
        except OSError as exc:
            # The supervisor is gone (its directory with it): nothing to report to.
            logger.debug("Could not write the metrics snapshot: %s", exc)
        except Exception:
            # A layer's stats() that fails must not stop the counting for good.
            logger.exception("Could not take the metrics snapshot")
        finally:
            self._schedule()

    def write(self) -> None:
        self._temporary.write_text(json.dumps(snapshot(self._state)))
        os.replace(self._temporary, self._path)

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(OSError):
            self.write()  # the last counts, which the supervisor folds in
        if self._lock is not None:
            self._lock.close()  # frees the lock: this worker's file is final
            self._lock = None


async def start_exporter(state: ServerState, config: Config) -> LocalExporter | SnapshotWriter:
    """The metrics side of a ``Server`` with ``--metrics-port``: a listener, or a worker's writer.

    Raises:
        ConfigError: the metrics address cannot be bound.
    """
    directory = dict(config.extra).get(SNAPSHOT_DIR_KEY)
    if directory is not None:
        return SnapshotWriter(state, str(directory))
    return await LocalExporter.start(state, config)


# --- the supervisor ----------------------------------------------------------------------------


class SupervisorExporter:
    """The supervisor's listener: sums its workers' snapshot files at scrape time."""

    def __init__(self, sock: socket.socket, directory: str) -> None:
        self._sock = sock
        self.directory = directory
        # Counters of workers that are gone (their gauges are not kept).
        self._base = empty_snapshot()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="sluiceway-metrics", daemon=True)
        self._started = threading.Event()
        self._failure: BaseException | None = None

    @classmethod
    def start(cls, config: Config) -> SupervisorExporter:
        """Bind, make the snapshot directory, serve on a thread.

        Raises:
            ConfigError: the metrics address cannot be bound.
        """
        sock = bind_metrics_socket(config)
        # tmpfs when there is one: a write a second per worker never touches a disk.
        base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
        remove_orphan_directories(base)
        directory = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=base)
        exporter = cls(sock, directory)
        exporter._thread.start()
        exporter._started.wait()
        if exporter._failure is not None:
            exporter.close()
            raise ConfigError(f"--metrics-port: {exporter._failure}")
        logger.info("Serving metrics on %s", describe(sock))
        return exporter

    def worker_config(self, config: Config) -> Config:
        """``config`` for the workers: it names the directory they write to."""
        return config.replace(extra=(*config.extra, (SNAPSHOT_DIR_KEY, self.directory)))

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(serve_scrapes(self._sock, self.render))
        except BaseException as exc:
            self._failure = exc
            loop.close()
            return
        finally:
            self._started.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            # Bounded: a scrape still open (3.12+ waits for it) has its own timeout.
            with contextlib.suppress(asyncio.TimeoutError):
                loop.run_until_complete(asyncio.wait_for(server.wait_closed(), 1.0))
            loop.close()

    def render(self) -> bytes:
        return render(self.collect())

    def collect(self) -> Snapshot:
        """The base plus every live worker's last snapshot; departed workers are folded in."""
        total = empty_snapshot()
        add_snapshot(total, self._base)
        for path in sorted(Path(self.directory).glob("*.json")):
            # The lock first: once it is free the file is final (a worker
            # writes its last snapshot before its lock goes).
            lock = path.with_suffix(".lock")
            alive = _is_held(lock)
            try:
                snap = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if alive:
                add_snapshot(total, snap)
                continue
            add_snapshot(self._base, snap, gauges=False)
            add_snapshot(total, snap, gauges=False)
            for gone in (path, lock):
                with contextlib.suppress(OSError):
                    gone.unlink()
        return total

    def close(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5.0)
        elif not self._loop.is_closed():
            self._loop.close()
        self._sock.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def remove_orphan_directories(base: str) -> None:
    """Remove the directories of supervisors that died without cleaning up (SIGKILL)."""
    for path in Path(base).glob(_DIR_PREFIX + "*"):
        pid = path.name[len(_DIR_PREFIX) :].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue  # removed meanwhile
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass  # alive, someone else's


def _is_held(lock: Path) -> bool:
    """Whether a live worker holds ``lock`` (a missing lock file: no)."""
    try:
        handle = open(lock, "rb")  # noqa: SIM115
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
