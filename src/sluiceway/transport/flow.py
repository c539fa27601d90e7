"""Flow control for one transport: idempotent read pause/resume and a drain waiter.

Reading: ``pause_reading``/``resume_reading`` may be called any number of
times; the transport only sees state changes (uvloop raises on a double
pause, asyncio warns). Writing: the transport calls the protocol's
``pause_writing``/``resume_writing`` when its buffer crosses the high/low
marks; the protocol forwards them here and ``drain()`` waits while paused.
When the connection is lost, ``connection_lost`` wakes every drainer with
``ClientDisconnected`` (an ``OSError``, per the ASGI www spec 2.4).

Vectored writes go through ``writelines_for(transport)`` (kept as
``FlowControl.writelines``): asyncio's selector transport on CPython 3.12.0-3.12.8
and 3.13.0-3.13.1 queues ``writelines`` data without checking the high-water
mark (CVE-2024-12254, fixed in 3.12.9 and 3.13.2), so the protocol never gets
``pause_writing`` and a peer that does not read grows the buffer without limit.
And from 3.12 on, that transport sends a ``writelines`` with ``sendmsg`` and
leaves an empty last part in its buffer: the buffer never looks empty, so a
``write_eof`` never shuts the socket and the loop polls for writability while
the connection idles. The wrapper drops empty parts there.

``write_parts`` is the vectored write of a large body (HTTP/2's DATA frames,
views of the app's bytes between 9-byte frame headers): when the transport
has nothing queued it hands the parts straight to ``os.writev`` on the
socket, and gives the transport only what the kernel did not take. uvloop's
``writelines`` wraps every part in two more memoryviews and a write context
before its own ``writev``; for a 1 MiB download in 16 KiB frames that was a
fifth of the server's user time (docs/performance.md, session 11). Only for
uvloop's plain TCP and Unix transports (TLS must go through its transport);
only when the transport's buffer is empty (so bytes stay in order) and it is
not closing (after a close the descriptor may already be another socket's).

Invariants: at most one future exists for all drainers; no future is created
while writing is not paused (the hot path never allocates here).

Imports only asyncio, os, sys, ``sluiceway.errors`` and ``sluiceway.forward_throw``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from asyncio import selector_events
from collections.abc import Callable, Iterable
from typing import Any

from sluiceway.errors import ClientDisconnected
from sluiceway.forward_throw import forward_throw

# The releases whose selector transport writelines() never pauses the protocol.
_V = sys.version_info
_WRITELINES_SKIPS_PAUSE = (3, 12) <= _V < (3, 12, 9) or (3, 13) <= _V < (3, 13, 2)
# From 3.12 the selector transport's writelines() keeps empty parts (see above).
_WRITELINES_KEEPS_EMPTY = _V >= (3, 12)
_SELECTOR_SOCKET_TRANSPORT: type[Any] = getattr(
    selector_events, "_SelectorSocketTransport", type(None)
)
# Transports whose socket write_parts may write to directly (see above).
_DIRECT_TRANSPORTS = frozenset((("uvloop.loop", "TCPTransport"), ("uvloop.loop", "UnixTransport")))
# Linux's IOV_MAX: writev refuses more parts (EINVAL); such a write goes to the transport.
_IOV_MAX = 1024


def direct_fd(transport: asyncio.BaseTransport) -> int:
    """The socket descriptor ``write_parts`` may write to, or -1 (see the module docstring)."""
    kind = type(transport)
    if not hasattr(os, "writev") or (kind.__module__, kind.__name__) not in _DIRECT_TRANSPORTS:
        return -1
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno())
    except (AttributeError, OSError, ValueError):
        return -1


def unsent(parts: list[bytes | memoryview], sent: int) -> list[bytes | memoryview]:
    """What is left of ``parts`` once the first ``sent`` bytes were written."""
    for i, part in enumerate(parts):
        n = len(part)
        if sent < n:
            rest = parts[i + 1 :]
            rest.insert(0, memoryview(part)[sent:] if sent else part)
            return rest
        sent -= n
    return []


def writelines_for(
    transport: asyncio.WriteTransport,
) -> Callable[[Iterable[bytes | memoryview]], None]:
    """``transport.writelines``, made safe on the asyncio releases that need it (see above).

    Call once per connection and keep the result: everywhere but the affected
    asyncio transports it is the bound method itself, at no cost per write.
    """
    if not _WRITELINES_KEEPS_EMPTY or not isinstance(transport, _SELECTOR_SOCKET_TRANSPORT):
        return transport.writelines
    selector_transport: Any = transport
    pause = _WRITELINES_SKIPS_PAUSE

    def writelines(parts: Iterable[bytes | memoryview]) -> None:
        selector_transport.writelines([part for part in parts if part])
        if pause:
            # The one line CPython 3.12.9 and 3.13.2 added to writelines() (gh-127655).
            # Only these past releases get here, so their private method cannot change.
            selector_transport._maybe_pause_protocol()

    return writelines


class FlowControl:
    __slots__ = (
        "_drain_waiter",
        "_fd",
        "_transport",
        "closed",
        "read_paused",
        "write_paused",
        "writelines",
    )

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        # The transport's writelines, or one that pauses where asyncio's does not.
        self.writelines = writelines_for(transport)
        self._fd = direct_fd(transport)
        self.read_paused = False
        self.write_paused = False
        self.closed = False
        self._drain_waiter: asyncio.Future[None] | None = None

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self._transport.resume_reading()

    def write_parts(self, parts: list[bytes | memoryview], size: int) -> None:
        """Write ``parts`` (``size`` bytes in all) in order, as few system calls as it takes."""
        fd = self._fd
        transport = self._transport
        if (
            fd >= 0
            and len(parts) <= _IOV_MAX
            and not transport.get_write_buffer_size()
            and not transport.is_closing()
        ):
            try:
                sent = os.writev(fd, parts)
            except OSError:
                # Would block, or an error the transport's own write meets
                # next and reports (connection_lost), as it would have anyway.
                sent = 0
            if sent == size:
                return
            if sent:
                parts = unsent(parts, sent)
        self.writelines(parts)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drain(self) -> None:
        """Wait while the write buffer is above its high-water mark."""
        if self.closed:
            raise ClientDisconnected("the client has disconnected")
        if not self.write_paused:
            return
        waiter = self._drain_waiter
        if waiter is None:
            waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
        # Shielded: one app cancelling its send must not fail the shared waiter.
        await forward_throw(asyncio.shield(waiter))

    def connection_lost(self) -> None:
        self.closed = True
        self.write_paused = False
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_exception(ClientDisconnected("the client has disconnected"))
                # Retrieved here so an unobserved failure does not log a warning.
                waiter.exception()
