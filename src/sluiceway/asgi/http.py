"""``HTTPCycle``: the ASGI send/receive state machine for one HTTP request.

One ``HTTPCycle`` exists per request. The protocol feeds request facts in
(``feed_body``, ``feed_end``, ``feed_disconnect``) and the application talks
to ``receive``/``send``. Responses go out through a ``ResponseSink``: the
HTTP/1.1 connection is one, an HTTP/2 stream can be another, so framing
(chunking, Content-Length accounting, HEAD) stays in the sink and the ASGI
rules live here once.

Two named state machines, no flag groups:

* ``RequestState`` (what ``receive`` returns next)::

      CONTINUE --receive()--> BODY --feed_end--> BODY_END --receive()--> DELIVERED
      (any) --feed_disconnect--> GONE

  In ``DELIVERED``, ``receive`` waits for the response to complete, unless
  the client half-closed (``feed_client_done``): then it returns
  ``http.disconnect`` at once, while ``send`` goes on working.

* ``ResponseState`` (which ``send`` messages are legal), driven by ``_SEND``,
  a table keyed by ``(state, message type)``; a pair missing from the table is
  an out-of-order message and raises ``ASGIMessageError`` naming both::

      START --start--> HEAD --body(more)--> BODY --body(last)--> DONE | TRAILERS
      TRAILERS --trailers(last)--> DONE ; any --disconnect--> ABORTED

``send`` in ``ABORTED`` raises ``ClientDisconnected`` (www spec 2.4);
``http.response.body`` after ``DONE`` is ignored (www spec: "further messages
... will be ignored"). ``receive`` returns ``http.disconnect`` once the
response is complete or the client has gone.

Hot path notes: no Event per request (a future is created only when
``receive`` must actually wait), no lock, no task; the head and the first body
chunk reach the sink in one call so a small response is one write.

Imports only ``sluiceway.asgi.types``, ``sluiceway.errors``, ``sluiceway.forward_throw`` and stdlib.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Protocol

from sluiceway.asgi.types import Message, Scope
from sluiceway.errors import ASGIMessageError, ClientDisconnected
from sluiceway.forward_throw import forward_throw

# Above this many buffered request-body bytes the sink is asked to stop reading.
BODY_HIGH_WATER_BYTES: Final = 64 * 1024


class RequestState(enum.IntEnum):
    CONTINUE = 0  # "Expect: 100-continue": body held back until the app asks
    BODY = 1  # more body may arrive
    BODY_END = 2  # the parser saw the end; the last chunk is not yet delivered
    DELIVERED = 3  # the app got more_body=False
    GONE = 4  # the client disconnected


class ResponseState(enum.IntEnum):
    START = 0  # awaiting http.response.start
    HEAD = 1  # start received, nothing written yet (a 500 can still replace it)
    BODY = 2  # head written, more body to come
    TRAILERS = 3  # body done, awaiting http.response.trailers
    DONE = 4  # response complete
    ABORTED = 5  # client went away, or the connection was cut, before DONE


_R_CONTINUE: Final = RequestState.CONTINUE
_R_BODY: Final = RequestState.BODY
_R_BODY_END: Final = RequestState.BODY_END
_R_DELIVERED: Final = RequestState.DELIVERED
_R_GONE: Final = RequestState.GONE
_S_START: Final = ResponseState.START
_S_HEAD: Final = ResponseState.HEAD
_S_BODY: Final = ResponseState.BODY
_S_TRAILERS: Final = ResponseState.TRAILERS
_S_DONE: Final = ResponseState.DONE
_S_ABORTED: Final = ResponseState.ABORTED

_DISCONNECT: Final[dict[str, Any]] = {"type": "http.disconnect"}


class ResponseSink(Protocol):
    """Where an ``HTTPCycle`` writes its response; implemented per transport.

    Methods other than ``drain`` and ``send_file`` are synchronous and must
    only buffer or write without blocking. Validation of status and headers
    is the sink's job (it knows its wire format) and raises
    ``ASGIMessageError``.
    """

    @property
    def write_paused(self) -> bool: ...

    async def drain(self) -> None:
        """Wait until the transport accepts more; raise ClientDisconnected if gone."""

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue`` (the app is about to read the body)."""

    def send_early_hint(self, links: Iterable[Any]) -> None: ...

    def send_head(
        self,
        status: int,
        headers: Iterable[Any],
        body: bytes,
        more_body: bool,
        trailers: bool,
        file_bytes: int = -1,
    ) -> None:
        """Write the head together with the first body chunk.

        ``file_bytes >= 0`` says a file of that many bytes follows as content
        (``body`` is then empty), so the sink can frame it by length.
        """

    def send_body(self, body: bytes, more_body: bool) -> None: ...

    def open_file(self, file: Any, offset: int | None, count: int | None) -> FileSlice:
        """Resolve a path (pathsend) or file object (zerocopysend) to a slice to send."""

    async def send_file(self, part: FileSlice, more_body: bool) -> None:
        """Send the slice as body content (after ``send_head`` if it was first)."""

    def send_trailers(self, headers: Iterable[Any], more_trailers: bool) -> None: ...

    def send_push(self, path: str, headers: Iterable[Any]) -> None:
        """Promise a pushed response for ``path`` (HTTP/2); a sink that cannot push drops it."""

    def response_complete(self, cycle: HTTPCycle) -> None:
        """The response is done (DONE); the sink may start the next request."""

    def resume_reading(self) -> None: ...

    def pause_reading(self) -> None: ...

    def body_read(self, n: int) -> None:
        """The app read ``n`` body bytes (HTTP/2 gives them back to the connection window)."""


class FileSlice:
    """A byte range of an open file, as the sink will send it."""

    __slots__ = ("count", "file", "offset", "owned")

    def __init__(self, file: Any, offset: int, count: int, owned: bool) -> None:
        self.file = file
        self.offset = offset
        self.count = count
        self.owned = owned  # opened by us (pathsend): we close it

    def close(self) -> None:
        if self.owned:
            self.file.close()


def breaks_length(n: int, remaining: int, more_body: bool) -> bool:
    """A body chunk of ``n`` bytes breaks a declared length with ``remaining`` left (RFC 9110 §8.6).

    Longer than what is left, or the last chunk and shorter. Every sink
    checks its later body chunks with this; ``length_error`` words the error.
    """
    return n > remaining or (not more_body and n != remaining)


def length_error(n: int, remaining: int) -> ASGIMessageError:
    longer = "longer" if n > remaining else "shorter"
    return ASGIMessageError(
        f"response body does not match its Content-Length ({longer} than declared)"
    )


def _body_of(message: Message) -> bytes:
    body = message.get("body", b"")
    if type(body) is not bytes:
        if isinstance(body, (bytearray, memoryview)):
            return bytes(body)
        raise ASGIMessageError(
            f"'body' of http.response.body must be bytes, got {type(body).__name__}"
        )
    return body


class HTTPCycle:
    """One request/response exchange. See the module docstring."""

    __slots__ = (
        "_body",
        "_body_size",
        "_client_done",
        "_start_headers",
        "_waiter",
        "request_state",
        "response_state",
        "scope",
        "sink",
        "status",
        "task",
        "trailers",
    )

    def __init__(self, scope: Scope, sink: ResponseSink, *, expect_continue: bool = False) -> None:
        self.scope = scope
        self.sink = sink
        self.request_state = _R_CONTINUE if expect_continue else _R_BODY
        self.response_state = _S_START
        self._body: list[bytes] = []
        self._body_size = 0
        self._waiter: asyncio.Future[None] | None = None
        # The client half-closed after this whole request (see feed_client_done).
        self._client_done = False
        self.status = 0
        self.trailers = False
        self.task: asyncio.Task[None] | None = None
        # Set by http.response.start, consumed by the first body message.
        self._start_headers: Iterable[Any] = ()

    # -- input from the protocol ------------------------------------------------

    def feed_body(self, data: bytes) -> bool:
        """Buffer request body bytes; asks the sink to pause above the mark.

        Returns:
            False: nobody will read them, and they were dropped.
        """
        if self.response_state >= _S_DONE or self.request_state is _R_GONE:
            return False  # discard (the sink keeps framing)
        self._body.append(data)
        self._body_size += len(data)
        if self._body_size > BODY_HIGH_WATER_BYTES:
            self.sink.pause_reading()
        if self._waiter is not None:
            self._wake()
        return True

    def feed_client_done(self) -> None:
        """The client half-closed after the whole request: it will send nothing more.

        Once the body is delivered, ``receive`` returns ``http.disconnect`` (the
        client may be gone: a full close looks the same until a write fails), but
        ``send`` still works: RFC 9112 §9.6 says a half-close does not mean the
        client stopped waiting for the response.
        """
        self._client_done = True
        if self._waiter is not None:
            self._wake()

    def feed_end(self) -> None:
        """The request body is complete."""
        if self.request_state is _R_BODY or self.request_state is _R_CONTINUE:
            self.request_state = _R_BODY_END
            if self._waiter is not None:
                self._wake()

    def feed_disconnect(self) -> None:
        """The client has gone: receive returns http.disconnect, send raises."""
        self.request_state = _R_GONE
        if self.response_state < _S_DONE:
            self.response_state = _S_ABORTED
        if self._waiter is not None:
            self._wake()

    def take_body(self) -> bytes:
        """All the body buffered so far, removed from this cycle (whose app never ran).

        For ``Upgrade: h2c``: the request read over HTTP/1.1 is answered over
        HTTP/2, by a new cycle that gets this body.
        """
        body = b"".join(self._body)
        self._body = []
        self._body_size = 0
        return body

    @property
    def buffered_bytes(self) -> int:
        return self._body_size

    @property
    def body_complete(self) -> bool:
        """True once the whole request body was read off the wire."""
        return self.request_state is _R_BODY_END or self.request_state is _R_DELIVERED

    def _wake(self) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- receive ----------------------------------------------------------------------

    async def receive(self) -> Message:
        while True:
            if self.response_state >= _S_DONE:
                return _DISCONNECT.copy()
            state = self.request_state
            if state is _R_BODY_END:
                self.request_state = _R_DELIVERED
                return {"type": "http.request", "body": self._take(), "more_body": False}
            if state is _R_BODY:
                if self._body:
                    return {"type": "http.request", "body": self._take(), "more_body": True}
            elif state is _R_CONTINUE:
                self.request_state = _R_BODY
                self.sink.send_continue()
            elif state is _R_GONE or (state is _R_DELIVERED and self._client_done):
                return _DISCONNECT.copy()
            # BODY with nothing buffered, or DELIVERED: wait for the peer or the response.
            self._waiter = asyncio.get_running_loop().create_future()
            await forward_throw(self._waiter)

    def _take(self) -> bytes:
        chunks = self._body
        if not chunks:
            return b""
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._body = []
        size = self._body_size
        self._body_size = 0
        if size > BODY_HIGH_WATER_BYTES:
            self.sink.resume_reading()
        self.sink.body_read(size)
        return body

    # -- send ---------------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        try:
            handler = _SEND.get((self.response_state, message["type"]))
        except (KeyError, TypeError) as exc:
            raise ASGIMessageError(
                f"ASGI message must be a dict with a 'type', got {message!r}"
            ) from exc
        if handler is None:
            self._reject(message)
            return
        waitable = handler(self, message)
        if waitable is not None:
            await waitable
        if self.sink.write_paused and self.response_state is not _S_ABORTED:
            await self.sink.drain()

    def _reject(self, message: Message) -> None:
        state = self.response_state
        mtype = message["type"]
        if state is _S_ABORTED:
            raise ClientDisconnected("the client has disconnected")
        if state is _S_DONE and mtype in _AFTER_DONE_IGNORED:
            return
        if mtype not in _KNOWN:
            raise ASGIMessageError(f"unknown ASGI message type {mtype!r} for an http scope")
        raise ASGIMessageError(f"unexpected {mtype!r} while the response is in state {state.name}")

    def _on_start(self, message: Message) -> None:
        status = message.get("status")
        if type(status) is not int or not 100 <= status <= 599:
            raise ASGIMessageError(f"response status must be an int in 100..599, got {status!r}")
        self.status = status
        self.trailers = bool(message.get("trailers", False))
        self._start_headers = message.get("headers", ())
        self.response_state = _S_HEAD

    def _on_first_body(self, message: Message) -> None:
        body = message.get("body", b"")
        if type(body) is not bytes:
            body = _body_of(message)
        more = bool(message.get("more_body", False))
        # The sink validates before it writes: if it raises, nothing went out
        # and the state stays HEAD, so the server can still answer 500.
        self.sink.send_head(self.status, self._start_headers, body, more, self.trailers)
        self.response_state = _S_BODY
        self._start_headers = ()
        if not more:
            self._body_ended()

    def _on_body(self, message: Message) -> None:
        body = message.get("body", b"")
        if type(body) is not bytes:
            body = _body_of(message)
        more = bool(message.get("more_body", False))
        self.sink.send_body(body, more)
        if not more:
            self._body_ended()

    def _body_ended(self) -> None:
        if self.trailers:
            self.response_state = _S_TRAILERS
        else:
            self._complete()

    def _on_trailers(self, message: Message) -> None:
        more = bool(message.get("more_trailers", False))
        self.sink.send_trailers(message.get("headers", ()), more)
        if not more:
            self._complete()

    def _on_early_hint(self, message: Message) -> None:
        self.sink.send_early_hint(message.get("links", ()))

    def _on_push(self, message: Message) -> None:
        """Extensions spec, "HTTP/2 Server Push": legal between the start and the last body."""
        path = message.get("path")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ASGIMessageError("http.response.push needs a 'path' string starting with '/'")
        self.sink.send_push(path, message.get("headers", ()))

    def _on_late_early_hint(self, message: Message) -> None:
        """The head is already out, so a 103 can no longer precede it.

        The extensions spec lets the server ignore hints, so it does.
        """

    def _on_pathsend(self, message: Message) -> Awaitable[None]:
        path = message.get("path")
        if not isinstance(path, str):
            raise ASGIMessageError("http.response.pathsend needs a 'path' string")
        return self._send_file(path, None, None, False)

    def _on_zerocopysend(self, message: Message) -> Awaitable[None]:
        file = message.get("file")
        if file is None:
            raise ASGIMessageError("http.response.zerocopysend needs a 'file'")
        offset = message.get("offset")
        count = message.get("count")
        more = bool(message.get("more_body", False))
        return self._send_file(file, offset, count, more)

    async def _send_file(
        self, file: Any, offset: int | None, count: int | None, more: bool
    ) -> None:
        part = self.sink.open_file(file, offset, count)  # a bad path raises before any write
        try:
            if self.response_state is _S_HEAD:
                self.sink.send_head(
                    self.status, self._start_headers, b"", more, self.trailers, part.count
                )
                self.response_state = _S_BODY
                self._start_headers = ()
            await self.sink.send_file(part, more)
        finally:
            part.close()
        if not more and self.response_state is _S_BODY:
            self._body_ended()

    def _complete(self) -> None:
        self.response_state = _S_DONE
        # Nobody reads the body after this (receive() says disconnect); drop
        # it so the buffer cannot hold reading paused.
        self._body = []
        self._body_size = 0
        if self._waiter is not None:
            self._wake()
        self.sink.response_complete(self)


_Handler = Callable[[HTTPCycle, Message], "Awaitable[None] | None"]

_SEND: Final[dict[tuple[ResponseState, str], _Handler]] = {
    (_S_START, "http.response.start"): HTTPCycle._on_start,
    (_S_START, "http.response.early_hint"): HTTPCycle._on_early_hint,
    (_S_HEAD, "http.response.early_hint"): HTTPCycle._on_early_hint,
    (_S_HEAD, "http.response.body"): HTTPCycle._on_first_body,
    (_S_HEAD, "http.response.push"): HTTPCycle._on_push,
    (_S_BODY, "http.response.push"): HTTPCycle._on_push,
    (_S_HEAD, "http.response.pathsend"): HTTPCycle._on_pathsend,
    (_S_HEAD, "http.response.zerocopysend"): HTTPCycle._on_zerocopysend,
    (_S_BODY, "http.response.body"): HTTPCycle._on_body,
    (_S_BODY, "http.response.early_hint"): HTTPCycle._on_late_early_hint,
    (_S_BODY, "http.response.pathsend"): HTTPCycle._on_pathsend,
    (_S_BODY, "http.response.zerocopysend"): HTTPCycle._on_zerocopysend,
    (_S_TRAILERS, "http.response.trailers"): HTTPCycle._on_trailers,
}
"""The transition table: (state, message type) -> handler. Anything else is illegal."""

_KNOWN: Final = frozenset(mtype for _, mtype in _SEND)
_AFTER_DONE_IGNORED: Final = frozenset(
    (
        "http.response.body",
        "http.response.trailers",
        "http.response.early_hint",
        "http.response.push",
    )
)


def transition_table() -> list[tuple[str, str]]:
    """``(state, message type)`` pairs that are legal, for the docs' state table."""
    return [(state.name, mtype) for state, mtype in _SEND]
