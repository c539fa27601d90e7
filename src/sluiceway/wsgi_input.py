"""``RequestBody``: the WSGI ``wsgi.input`` stream, fed from ASGI ``http.request`` messages.

Two threads meet here. On the event loop, a reader task (``_pump``) awaits
``receive()`` and appends each chunk to a buffer; in a worker thread, the
WSGI app's ``read()`` / ``readline()`` / iteration (PEP 3333 "Input and
Error Streams") take bytes out, blocking the worker, never the loop, until
the bytes they asked for, the end of the body, or an error is there.

Invariants:

* Memory is bounded: the reader pauses once ``buffer_bytes`` are buffered
  and no read is waiting, and resumes when a read drains it or waits for
  more. The client feels back-pressure instead of the process buffering a
  whole upload.
* Every wait on the peer has a limit: a read waits at most ``timeout_s``
  for the next chunk, then raises ``TimeoutError``.
* A body that will not finish never reads as a short one: ``http.disconnect``
  mid-body, or the request ending (``stop``), makes reads raise
  ``ClientDisconnected`` (an ``OSError``).
* With ``on_disconnect`` set, a disconnect is reported mid-body or after
  it: past the body's end the reader goes on awaiting ``receive()`` until
  ``http.disconnect`` (or ``stop``), then calls it. ``WsgiToAsgi`` sets it
  under servers older than www spec 2.4, whose ``send()`` after a disconnect
  is silently dropped (uvicorn), so a response stops streaming to a client
  that is gone.
* Buffer, EOF and error state change only under ``_cond``, held for an
  append or a copy and released across every wait, so the loop never waits
  on a slow reader.

Imports the standard library, ``sluiceway.asgi`` and ``sluiceway.errors``;
never the server side.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator

from sluiceway.asgi.types import Receive
from sluiceway.errors import ClientDisconnected

__all__ = ["RequestBody"]


class RequestBody:
    """``wsgi.input``: the request body, readable in the worker as it arrives.

    Reads block the worker thread (never the loop) for at most ``timeout_s``
    between chunks; a client that disconnects mid-body makes the read raise
    ``ClientDisconnected`` (an ``OSError``) rather than look like a short body.
    ``on_disconnect``, if given, is called on the loop when the client
    disconnects, during the body or after it.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        receive: Receive,
        buffer_bytes: int,
        timeout_s: float | None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self._loop = loop
        self._on_disconnect = on_disconnect
        self._receive = receive
        self._limit = buffer_bytes
        self._timeout_s = timeout_s
        self._buffer = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()
        self._readers_waiting = 0
        self._pump_paused = False
        self._resume = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- loop side -----------------------------------------------------------

    def start(self) -> None:
        self._task = self._loop.create_task(self._pump())

    def stop(self) -> None:
        """The request is over: stop reading and release any blocked reader."""
        if self._task is not None:
            self._task.cancel()
        with self._cond:
            if not self._eof and self._error is None:
                self._error = ClientDisconnected("the request is over")
            self._cond.notify_all()

    async def _pump(self) -> None:
        try:
            while True:
                with self._cond:
                    pause = (
                        not self._eof
                        and len(self._buffer) >= self._limit
                        and not self._readers_waiting
                    )
                    if pause:
                        self._pump_paused = True
                        self._resume.clear()
                if pause:
                    await self._resume.wait()
                    continue
                message = await self._receive()
                kind = message.get("type")
                if kind != "http.request":
                    # http.disconnect, or anything else: the client is gone.
                    self._disconnected()
                    return
                if self._eof:
                    # Past the end only http.disconnect may come (www spec): a
                    # server that says otherwise is not watched further.
                    return
                with self._cond:
                    self._buffer += message.get("body", b"")
                    if not message.get("more_body", False):
                        self._eof = True
                    self._cond.notify_all()
                if self._eof and self._on_disconnect is None:
                    return
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            with self._cond:
                self._error = exc
                self._cond.notify_all()

    def _disconnected(self) -> None:
        with self._cond:
            if not self._eof:
                self._error = ClientDisconnected("the client disconnected mid-body")
            self._cond.notify_all()
        if self._on_disconnect is not None:
            self._on_disconnect()

    # -- worker side (call with self._cond held) -----------------------------

    def _wait(self, ready: Callable[[], bool]) -> None:
        deadline = None if self._timeout_s is None else time.monotonic() + self._timeout_s
        while not ready():
            if self._eof:
                return
            if self._error is not None:
                raise self._error
            self._readers_waiting += 1
            if self._pump_paused:
                self._pump_paused = False
                self._loop.call_soon_threadsafe(self._resume.set)
            try:
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or not self._cond.wait(remaining):
                    raise TimeoutError(f"no request body for {self._timeout_s} s")
            finally:
                self._readers_waiting -= 1

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        if self._pump_paused and len(self._buffer) < self._limit:
            self._pump_paused = False
            self._loop.call_soon_threadsafe(self._resume.set)
        return data

    # -- the file-like API (PEP 3333 "Input and Error Streams") --------------

    def read(self, size: int | None = -1) -> bytes:
        with self._cond:
            if size is None or size < 0:
                parts: list[bytes] = []
                while True:
                    self._wait(lambda: bool(self._buffer))
                    if not self._buffer:
                        return b"".join(parts)
                    parts.append(self._take(len(self._buffer)))
            self._wait(lambda: len(self._buffer) >= size)
            return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        with self._cond:
            limit = None if size is None or size < 0 else size

            def ready() -> bool:
                if limit is not None and len(self._buffer) >= limit:
                    return True
                return b"\n" in self._buffer

            self._wait(ready)
            end = self._buffer.find(b"\n")
            n = len(self._buffer) if end < 0 else end + 1
            if limit is not None:
                n = min(n, limit)
            return self._take(n)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line
