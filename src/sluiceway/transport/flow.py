"""Flow control for one transport: idempotent read pause/resume and a drain waiter.

Reading: ``pause_reading``/``resume_reading`` may be called any number of
times; the transport only sees state changes (uvloop raises on a double
pause, asyncio warns). Writing: the transport calls the protocol's
``pause_writing``/``resume_writing`` when its buffer crosses the high/low
marks; the protocol forwards them here and ``drain()`` waits while paused.
When the connection is lost, ``connection_lost`` wakes every drainer with
``ClientDisconnected`` (an ``OSError``, per the ASGI www spec 2.4).

Invariants: at most one future exists for all drainers; no future is created
while writing is not paused (the hot path never allocates here).

Imports only asyncio and ``sluiceway.errors``.
"""

from __future__ import annotations

import asyncio

from sluiceway.errors import ClientDisconnected


class FlowControl:
    __slots__ = ("_drain_waiter", "_transport", "closed", "read_paused", "write_paused")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
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
        await asyncio.shield(waiter)

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
