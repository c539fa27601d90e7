"""Signals for a ``select`` loop: the supervisor's SIGINT, SIGTERM and SIGHUP.

The supervisor waits in one ``multiprocessing.connection.wait`` for workers,
their pipes and the reload poll; a signal must wake that wait, not only
interrupt whatever Python line runs. ``SignalCatcher`` records each signal in
a list (the handler does nothing else, as a signal handler should) and
``signal.set_wakeup_fd`` writes a byte to a socket pair the wait watches;
``drain`` empties it once the lists are read.

Imports only the standard library.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from types import FrameType
from typing import Any


def drain(wakeup: socket.socket) -> None:
    """Read every wake-up byte waiting, so the next wait blocks again."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while wakeup.recv(512):
            pass


class SignalCatcher:
    """SIGINT/SIGTERM append to ``signals``, SIGHUP to ``hups``; each wakes the ``select``.

    A context manager: entering installs the handlers and the wake-up socket
    (returned, to wait on), leaving puts the previous ones back.
    """

    def __init__(self, signals: list[int], hups: list[int]) -> None:
        self._signals = signals
        self._hups = hups
        self._previous: dict[int, Any] = {}
        self._old_wakeup = -1
        self._pair = socket.socketpair()
        for sock in self._pair:
            sock.setblocking(False)

    def __enter__(self) -> socket.socket:
        self._old_wakeup = signal.set_wakeup_fd(self._pair[1].fileno(), warn_on_full_buffer=False)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self._pair[0]

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        for sock in self._pair:
            sock.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        (self._hups if signum == signal.SIGHUP else self._signals).append(signum)
