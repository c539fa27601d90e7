"""HOT PATH: HTTP/1.1 server protocol, an ``asyncio.Protocol`` over httptools (llhttp).

Reads in the order a request flows: ``connection_made``, ``data_received``,
the parser callbacks in firing order, app start, the ``ResponseSink`` side
(``send_head``/``send_body``/...), keep-alive, closing, deadlines and
``connection_lost``. ``HTTP1Protocol`` holds the connection's state; the
per-request work on either side of the app is a delegated call to a
sibling that takes the protocol:

* ``request_reader.py``: the bytes that come in (the common head in one
  call to ``http1/_head.c``, everything else fed to llhttp, the callbacks'
  work, the checks llhttp leaves to us, the scope and the cycle);
* ``response_writer.py``: the bytes that go out (head encoding and framing,
  body writes and their batching, files, trailers, 1xx);
* ``closing.py``: how the connection ends (the close after the last answer,
  lingering close, the client's half-close, deadlines, graceful shutdown).

Off the per-request path: ``switching.py`` (the HTTP/2 hand-off by ALPN,
prior knowledge or ``Upgrade: h2c``, and the Upgrade dispatch, WebSocket via
``upgrade.py``), ``error_replies.py`` (4xx for the peer, 500/503 for the app).

Invariants:

* One ``HTTPCycle`` (``H1Cycle``) and one task exist per request.
* Responses go out in request order: one cycle is ``_active`` (its app may
  write), later pipelined cycles wait in ``_pipeline`` with reading paused.
* Every wait on the peer is bounded: ``deadline`` (checked by the
  ``ServerState`` tick) covers the request head (slowloris), a request body
  that stops coming (408; not while we paused reading or owe a
  ``100 Continue``) and keep-alive idleness; the request head is capped in
  bytes (414/431, ``request_reader.py``); buffered request body is capped by
  the high-water mark (reading pauses).
* A client's mistake gets a status code and a closed connection, never a
  traceback; the app's mistake gets a 500 (or a closed connection once the
  head is out) and one logged traceback on ``sluiceway.error``.

Imports ``sluiceway.asgi``, ``sluiceway.transport``, ``sluiceway.http1.*``,
``sluiceway.connection`` and ``sluiceway.accesslog``; never the toolkit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

from sluiceway import accesslog
from sluiceway.asgi.http import (
    BODY_HIGH_WATER_BYTES,
    FileSlice,
    HTTPCycle,
    ResponseState,
)
from sluiceway.connection import files
from sluiceway.connection.shared import Shared, connection_info
from sluiceway.connection.state import ConnectionInfo
from sluiceway.connection.tasks import start_eagerly
from sluiceway.errors import BadRequest
from sluiceway.forward_throw import forward_throw
from sluiceway.http1 import closing, error_replies, request_reader, response_writer, switching
from sluiceway.http1.cycle import NO_PARSER, H1Cycle, Phase
from sluiceway.http1.request_reader import PARSE_HEAD, HeadReader
from sluiceway.transport.flow import FlowControl

if TYPE_CHECKING:
    from sluiceway.http2.config import H2Config

_S_DONE: Final = ResponseState.DONE
_IDLE: Final = Phase.IDLE
_BODY: Final = Phase.BODY
_CLOSED: Final = Phase.CLOSED


class HTTP1Protocol:
    """One HTTP/1.1 connection. Also the ``ResponseSink`` of its active cycle.

    An ``asyncio.Protocol`` by its methods, not by inheritance: mypyc compiles
    this class to a C type, and a compiled class with a Python base (such as
    ``asyncio.Protocol``) is freed without clearing weak references to it.
    """

    def __init__(self, shared: Shared) -> None:
        self._shared = shared
        self._state = shared.state
        self._app = shared.app
        loop = shared.loop
        if loop is None:
            loop = shared.loop = asyncio.get_running_loop()
        self._loop = loop
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # set at once by connection_made
        self._flow: FlowControl = None  # type: ignore[assignment]  # same
        self._parser = httptools.HttpRequestParser(self)
        # None without the C extension: llhttp reads every head (tests set it too).
        self._parse_head: HeadReader | None = PARSE_HEAD
        self.info: ConnectionInfo = None  # type: ignore[assignment]  # same
        self.deadline: float | None = None
        # Mirrors the transport's pause_writing/resume_writing for HTTPCycle.send
        # (a plain attribute: it is read after every send).
        self.write_paused = False
        self._phase = _IDLE
        # No request has begun on this connection yet (see shutdown).
        self._fresh = True
        # The start of an HTTP/2 preface cut across reads (see switching.sniff_h2).
        self._h2_head = b""
        # The connection's first read, until a request head in it is read
        # whole (see error_replies.reject: a first line of neither protocol).
        self._first_data: bytes | None = None
        # Body bytes still owed by an Upgrade request llhttp skipped (switching.read_raw_body),
        # and, for h2c, the switch that waits for them.
        self._raw_body_left = 0
        self._h2c_pending: tuple[H2Config, bytes] | None = None
        # Shutdown began after the client started to use this connection:
        # its next request is served (with Connection: close), not refused.
        self._last_request = False
        # The client half-closed (eof_received kept the transport open for us).
        self._peer_eof = False
        # The last request read asked to close (Connection: close, or HTTP/1.0
        # without keep-alive): any byte after it is a protocol error.
        self._peer_closing = False
        self._access = False
        self._metrics = shared.metrics
        # Exchanges are timed: for the access log, the metrics, or both.
        self._timed = False
        self._client_text = "-"
        # Request being parsed.
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        # Bytes fed to llhttp since the head being read began; -1 while it
        # began inside the current read (see data_received).
        self._head_fed = 0
        self._body_bytes = 0
        # Body size at which the body deadline moves next (_BODY_PROGRESS_BYTES).
        self._progress_at = 0
        # Bytes fed to llhttp while a chunked body streams (reads that begin
        # and end inside it), for the framing bound in data_received.
        self._chunked_fed = 0
        self._host_count = 0
        self._host = b""
        self._content_length = -1
        self._te: bytes | None = None
        self._expect_continue = False
        self._te_trailers = False
        self._upgrade: bytes | None = None
        self._connection_field = False
        self._watched = False
        self._parsing: H1Cycle | None = None
        self._upgrade_cycle: H1Cycle | None = None
        # A bodyless request whose app starts at on_message_complete.
        self._complete_cycle: H1Cycle | None = None
        # Per-server limits, copied here: read on every request.
        self._max_head = shared.max_head
        self._max_line = shared.max_line
        self._headers_timeout_s = shared.headers_timeout_s
        # Responses, in request order.
        self._active: H1Cycle | None = None
        self._pipeline: deque[H1Cycle] = deque()
        self._pending_error = 0
        # Framing of the active response.
        self._chunked = False
        self._no_body = False
        self._remaining = -1
        self._sent = 0
        self._trailer_parts: list[bytes] = []
        # Body parts not yet handed to the transport (response_writer._write_body).
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._flush_scheduled = False

    # -- connection_made ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._flow = FlowControl(transport)
        self.info = connection_info(transport, self._shared)
        state = self._state
        state.add_connection(self)
        self._access = self._shared.access_log and accesslog.access_enabled()
        if self._access:
            self._client_text = accesslog.format_client(self.info.client)
        self._timed = self._access or self._metrics is not None
        # Accepted as shutdown began: the client is about to send its request.
        self._last_request = state.shutting_down
        state.start_clock(self._loop)  # idempotent; covers servers started without it
        # A new connection must send its first head within the header timeout.
        self.deadline = self._loop.time() + self._shared.headers_timeout_s
        ssl_object = self.info.ssl_object
        h2 = self._shared.h2
        if (
            ssl_object is not None
            and h2 is not None
            and ssl_object.selected_alpn_protocol() == "h2"
        ):
            switching.hand_to_h2(self, h2, b"")  # RFC 9113 §3.2: ALPN chose HTTP/2 before any byte

    # -- data_received -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase is _CLOSED:
            return
        if self._raw_body_left:
            data = switching.read_raw_body(self, data)
            if not data:
                return
            phase = self._phase
        if phase is _IDLE:
            if self._fresh and not self._shared.tls:
                # One compare per new connection on the hot path; the rest of
                # the sniff only for what may be the HTTP/2 preface.
                self._first_data = data
                h2 = self._shared.h2
                if h2 is not None and (data[:1] == b"P" or self._h2_head):
                    data = switching.sniff_h2(self, h2, data)
                    if not data:
                        return
            # Between requests llhttp holds nothing: whole common heads at the
            # front of data can be read without it.
            parse_head = self._parse_head
            if parse_head is not None and not self._peer_closing:
                data = request_reader.read_common_heads(self, parse_head, data)
                if not data or self._phase is not _IDLE:
                    return
            if self._peer_closing:
                # What llhttp says of bytes after a request that asked to close.
                error_replies.reject(self, BadRequest("Data after `Connection: close`"))
                return
        request_reader.feed(self, data, phase)

    # -- parser callbacks, in firing order (their work: http1/request_reader.py) -------

    def on_message_begin(self) -> None:
        request_reader.on_message_begin(self)

    def on_url(self, url: bytes) -> None:
        request_reader.on_url(self, url)

    def on_header(self, name: bytes, value: bytes) -> None:
        request_reader.on_header(self, name, value)

    def on_headers_complete(self) -> None:
        request_reader.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        request_reader.on_body(self, body)

    def on_message_complete(self) -> None:
        request_reader.on_message_complete(self)

    # -- app start ------------------------------------------------------------------------

    def _enqueue(self, cycle: H1Cycle) -> None:
        if self._active is None:
            self._start(cycle)
        else:
            # Pipelined: answer in order; stop reading until the queue drains.
            self._pipeline.append(cycle)
            self._flow.pause_reading()

    def _start(self, cycle: H1Cycle, eager: bool = False) -> None:
        """Run ``cycle``'s app; ``eager`` (only from a parser callback): its first step at once.

        Eagerly (Python 3.12+, connection/tasks.py), an app that answers without
        waiting finishes inside this call and is never scheduled or counted
        in ``state.tasks``. From response_complete (inside the previous app's
        ``send``) the start is never eager, so pipelined apps do not nest in
        each other's stacks.
        """
        self._active = cycle
        state = self._state
        limit = self._shared.limit_concurrency
        if state.shutting_down and not self._last_request:
            error_replies.finish_with_error(self, cycle, 503)
            return
        if limit is not None and len(state.tasks) >= limit:
            error_replies.finish_with_error(self, cycle, 503)
            return
        if eager:
            task = start_eagerly(self._loop, self._run_app(cycle))
            if task is None:
                return  # answered already
        else:
            task = self._loop.create_task(self._run_app(cycle))
        cycle.task = task
        state.tasks.add(task)

    async def _run_app(self, cycle: H1Cycle) -> None:
        try:
            await forward_throw(self._app(cycle.scope, cycle.receive, cycle.send))
        except asyncio.CancelledError:
            # The runner cancels leftovers after the graceful timeout.
            if cycle.response_state < _S_DONE:
                self._close()
            raise
        except BaseException as exc:
            error_replies.app_failed(self, cycle, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if cycle.response_state < _S_DONE:
                error_replies.app_returned_early(self, cycle)
        finally:
            if cycle.task is not None:
                self._state.tasks.discard(cycle.task)

    # -- the ResponseSink side: send (the bytes: http1/response_writer.py) -------------

    async def drain(self) -> None:
        await self._flow.drain()

    def send_continue(self) -> None:
        response_writer.send_continue(self)

    def send_early_hint(self, links: Iterable[Any]) -> None:
        response_writer.send_early_hint(self, links)

    def send_head(
        self,
        status: int,
        headers: Iterable[Any],
        body: bytes,
        more_body: bool,
        trailers: bool,
        file_bytes: int = -1,
    ) -> None:
        response_writer.send_head(self, status, headers, body, more_body, trailers, file_bytes)

    def send_body(self, body: bytes, more_body: bool) -> None:
        response_writer.send_body(self, body, more_body)

    def open_file(self, file: Any, offset: int | None, count: int | None) -> FileSlice:
        return files.open_file(file, offset, count)

    def send_file(self, part: FileSlice, more_body: bool) -> Coroutine[Any, Any, None]:
        # The writer's coroutine itself, awaited by the cycle: no second one around it.
        return response_writer.send_file(self, part, more_body)

    def send_trailers(self, headers: Iterable[Any], more_trailers: bool) -> None:
        response_writer.send_trailers(self, headers, more_trailers)

    def send_push(self, path: str, headers: Iterable[Any]) -> None:
        """HTTP/1.1 cannot push: dropped, as the spec asks of a server that cannot.

        (The scope does not offer ``http.response.push`` over HTTP/1.1.)
        """

    def pause_reading(self) -> None:
        self._flow.pause_reading()

    def resume_reading(self) -> None:
        if not self._pipeline and self._phase is not _CLOSED:
            self._flow.resume_reading()
            self._restart_body_clock()

    def body_read(self, n: int) -> None:
        """Nothing to do: TCP's own window follows what the transport reads."""

    # -- keep-alive: the response is complete ------------------------------------------

    def response_complete(self, cycle: HTTPCycle) -> None:
        cycle = cast(H1Cycle, cycle)  # this sink only ever gets its own cycles
        metrics = self._metrics
        if metrics is not None:
            # --metrics-port: status, body size and time are all known here, once per exchange.
            metrics.observe(cycle.status, self._sent, self._loop.time() - cycle.started)
        if self._access:
            accesslog.log_exchange(
                self._client_text,
                self.info.client,
                cycle.scope,
                cycle.target,
                cycle.status,
                self._sent,
                self._loop.time() - cycle.started,
            )
        if cycle is not self._active:
            return
        self._active = None
        if not cycle.keep_alive or self._state.shutting_down:
            if cycle.client_close and self._phase is _IDLE:
                # The client asked for this close and all it sent is read: it
                # must send nothing more (RFC 9112 §9.6), so nothing can reset
                # the answer, and waiting for its EOF would only cost time.
                self._close()
            else:
                self._linger_close()
            return
        if self._pipeline:
            self._start_next()
            return
        if self._pending_error:
            error_replies.write_error(self, self._pending_error)
            return
        if self._phase is _CLOSED:
            self._close()  # the client broke the protocol after this request
            return
        # A body the app did not read is parsed and discarded (the cycle drops it).
        self._resume_if_room()
        if self._phase is _IDLE and self._active is None:
            self.deadline = self._loop.time() + self._shared.keep_alive_s

    def _start_next(self) -> None:
        # A method of its own, not inline in response_complete: there the
        # checker has narrowed _active to None, and mypyc would enforce that.
        # _start may answer at once (503) and come back to response_complete.
        self._start(self._pipeline.popleft())
        if not self._pipeline and self._active is not None and self._phase is not _CLOSED:
            self._resume_if_room()  # the request now running may still await its body

    def _resume_if_room(self) -> None:
        """Resume reading once nothing is queued and the body buffer has room."""
        parsing = self._parsing
        if self._flow.read_paused and (
            parsing is None or parsing.buffered_bytes <= BODY_HIGH_WATER_BYTES
        ):
            self._flow.resume_reading()
            self._restart_body_clock()

    def _restart_body_clock(self) -> None:
        """Reading resumes: a body on its way gets a whole timeout again.

        While reading was paused the client could not send (on_deadline
        re-arms the deadline meanwhile); it must not find its time used up.
        """
        if self._phase is _BODY and self.deadline is not None:
            self.deadline = self._loop.time() + self._shared.body_timeout_s

    # -- closing, deadlines and shutdown (their work: http1/closing.py) --------------------

    def _close(self) -> None:
        closing.close(self)

    def _linger_close(self) -> None:
        closing.linger_close(self)

    def _last_write_then_fin(self) -> None:
        closing.last_write_then_fin(self)

    def on_deadline(self) -> None:
        """The ``ServerState`` tick: this connection's ``deadline`` has passed."""
        closing.on_deadline(self)

    def shutdown(self) -> None:
        """Graceful shutdown began (the runner): finish what the client is owed, then close."""
        closing.shutdown(self)

    def abort(self) -> None:
        """Drop the connection at once (after the graceful timeout)."""
        self._phase = _CLOSED
        self._held = []
        self._transport.abort()

    # -- flow control callbacks from the transport --------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flow.resume_writing()

    def eof_received(self) -> bool | None:
        return closing.eof_received(self)

    # -- connection_lost -------------------------------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self._phase = _CLOSED
        self.deadline = None
        self.write_paused = False
        self._flow.connection_lost()
        self._state.remove_connection(self)
        for cycle in (self._active, self._parsing, self._upgrade_cycle, *self._pipeline):
            if cycle is not None:
                cycle.feed_disconnect()
        self._pipeline.clear()
        self._parsing = None
        self._upgrade_cycle = None
        self._held = []
        # The parser holds bound methods of this protocol: drop it so the pair
        # is freed by reference counting at once instead of waiting, with the
        # connection's other objects, for the cyclic GC (one such cycle per
        # connection; scenario (e) makes thousands a second).
        self._parser = NO_PARSER
