"""systemd integration: socket activation (``LISTEN_FDS``) and ``sd_notify``, without libsystemd.

Socket activation (``sd_listen_fds(3)``): systemd binds the sockets of a
``.socket`` unit and starts the service with them open from fd 3 on
(``SD_LISTEN_FDS_START``), ``LISTEN_FDS`` saying how many, ``LISTEN_PID``
whose they are, and ``LISTEN_FDNAMES`` (optional) their ``FileDescriptorName=``.
``listen_sockets()`` takes them once per process: only when ``LISTEN_PID`` is
our pid (the variables may have leaked from a parent), and it unsets the
three variables, as ``sd_listen_fds(unset_environment=1)`` does, so nothing
this process starts (a worker, the app's subprocesses) takes them again. The
fds are made close-on-exec; the supervisor hands them to its workers itself.

Notification (``sd_notify(3)``): ``Notifier.from_environ()`` reads
``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace) and
``WATCHDOG_USEC``/``WATCHDOG_PID``, and unsets them, so a worker never
notifies in the main process's name. ``send()`` writes one datagram of
``KEY=VALUE`` lines: ``READY=1`` once serving, ``RELOADING=1`` while a SIGHUP
replaces the workers, ``STOPPING=1`` when the stop begins, ``WATCHDOG=1``
every half ``WATCHDOG_USEC`` (the interval ``sd_watchdog_enabled(3)``
advises) when the watchdog is on and meant for us. A notification that
cannot be sent is logged once at WARNING and never fails the server: the
service then looks stuck to systemd, which is what it should report.

``ServerNotifier`` does the single-process server's part (the supervisor
does its own from its select loop).

Imports only the standard library and ``sluiceway.errors``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sluiceway.errors import ConfigError

if TYPE_CHECKING:
    from sluiceway.server.runner import Server

logger = logging.getLogger("sluiceway.error")

LISTEN_FDS_START = 3  # SD_LISTEN_FDS_START, sd-daemon.h
_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_NOTIFY_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# The sockets taken here -> their LISTEN_FDNAMES entry, for the log's "Listening on".
_activated: weakref.WeakKeyDictionary[socket.socket, str] = weakref.WeakKeyDictionary()


def listen_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed to this process (none without socket activation).

    Raises:
        ConfigError: the variables are malformed, or a passed fd is not a
            listening stream socket (``Accept=yes`` passes connections;
            ``ListenDatagram=`` a datagram socket).
    """
    env = os.environ if environ is None else environ
    values = {name: env.get(name) for name in _LISTEN_VARIABLES}
    if values["LISTEN_FDS"] is None:
        return []
    for name in _LISTEN_VARIABLES:
        env.pop(name, None)
    pid_text, count_text = values["LISTEN_PID"] or "", values["LISTEN_FDS"] or ""
    if not pid_text.isdigit() or int(pid_text) != os.getpid():
        # Meant for another process (ours inherited them by mistake): ignored,
        # as sd_listen_fds does.
        return []
    if not count_text.isdigit():
        raise ConfigError(f"LISTEN_FDS={count_text!r}: not a number of file descriptors")
    count = int(count_text)
    names = (values["LISTEN_FDNAMES"] or "").split(":")
    sockets: list[socket.socket] = []
    try:
        for index in range(count):
            fd = LISTEN_FDS_START + index
            name = names[index] if index < len(names) and names[index] else f"fd {fd}"
            sock = _take_listening_socket(fd, name)
            sockets.append(sock)
            _activated[sock] = name
    except BaseException:
        for sock in sockets:
            sock.detach()  # systemd's sockets: not ours to close on a failed start
        raise
    return sockets


def _take_listening_socket(fd: int, name: str) -> socket.socket:
    where = f"systemd socket {name!r} (fd {fd})"
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror or exc}") from None
    listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(
        socket.SOL_SOCKET, socket.SO_ACCEPTCONN
    )
    if not listening:
        sock.detach()
        raise ConfigError(f"{where}: not a listening stream socket (use Accept=no, ListenStream=)")
    os.set_inheritable(fd, False)
    return sock


def activation_name(sock: socket.socket) -> str | None:
    """The ``FileDescriptorName=`` (or ``fd N``) of a socket systemd passed, else None."""
    return _activated.get(sock)


def notify_address(text: str) -> str | bytes | None:
    """``NOTIFY_SOCKET`` as a ``sendto`` address: a path, or ``@name`` in the abstract namespace."""
    if text.startswith("/"):
        return text
    if text.startswith("@") and len(text) > 1:
        return b"\0" + text[1:].encode()
    return None  # vsock: and others: not for a server on this host


@dataclass
class Notifier:
    """Sends ``sd_notify`` datagrams to ``address`` (see the module docstring)."""

    address: str | bytes
    watchdog_interval_s: float | None = None  # half WATCHDOG_USEC, when the watchdog is ours
    _sock: socket.socket | None = field(default=None, repr=False)
    _failed: bool = field(default=False, repr=False)

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier | None:
        """Read (and unset) ``NOTIFY_SOCKET`` and the watchdog's variables; None without them."""
        env = os.environ if environ is None else environ
        values = {name: env.pop(name, None) for name in _NOTIFY_VARIABLES}
        address = notify_address(values["NOTIFY_SOCKET"] or "")
        if address is None:
            return None
        usec, watchdog_pid = values["WATCHDOG_USEC"] or "", values["WATCHDOG_PID"]
        # sd_watchdog_enabled: a WATCHDOG_PID of another process means not ours.
        ours = watchdog_pid is None or watchdog_pid == str(os.getpid())
        interval = int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and ours else None
        return cls(address, interval)

    def send(self, *fields: str) -> None:
        """One datagram, one ``KEY=VALUE`` per field; a failure is logged once, never raised."""
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                logger.warning("Cannot notify systemd (NOTIFY_SOCKET): %s", exc.strerror or exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def reloading(self, status: str) -> None:
        # MONOTONIC_USEC: Type=notify-reload matches it with the reload it asked for.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ServerNotifier:
    """The single-process server's notifications: READY once serving, STOPPING, the watchdog.

    ``started(server)`` is chained into ``serve_config``'s on-started hook.
    The watchdog pings come from the event loop, so a loop blocked for longer
    than ``WatchdogSec=`` gets the process restarted by systemd; they go on
    during the graceful drain (which may be longer than the watchdog period).
    """

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._task: asyncio.Task[None] | None = None

    def started(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        self.notifier.ready("Serving requests")
        self._task = loop.create_task(self._stopping(server))
        if self.notifier.watchdog_interval_s is not None:
            self._ping(loop, self.notifier.watchdog_interval_s)

    async def _stopping(self, server: Server) -> None:
        await server.wait_exit_requested()
        self.notifier.stopping("Draining connections")

    def _ping(self, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        self.notifier.watchdog()
        loop.call_later(interval_s, self._ping, loop, interval_s)
