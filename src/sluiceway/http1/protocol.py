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
  body writes and their batching, files, trailers, 1xx).

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
import sys
from collections import deque
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Final, cast

import httptools

if sys.platform != "win32":
    import fcntl
    import termios

from sluiceway import accesslog
from sluiceway.asgi.http import (
    BODY_HIGH_WATER_BYTES,
    FileSlice,
    HTTPCycle,
    RequestState,
    ResponseState,
)
from sluiceway.connection import files
from sluiceway.connection.shared import Shared, connection_info
from sluiceway.connection.state import ConnectionInfo
from sluiceway.connection.tasks import start_eagerly
from sluiceway.errors import BadRequest, RequestTimeout
from sluiceway.forward_throw import forward_throw
from sluiceway.http1 import error_replies, request_reader, response_writer, switching
from sluiceway.http1.cycle import CLOSE_TIMEOUT_S, NO_PARSER, H1Cycle, Phase
from sluiceway.http1.request_reader import PARSE_HEAD, HeadReader
from sluiceway.transport.fin import cork_for_fin
from sluiceway.transport.flow import FlowControl
from sluiceway.transport.linger import LINGER_S

if TYPE_CHECKING:
    from sluiceway.http2.config import H2Config

_S_DONE: Final = ResponseState.DONE
_R_CONTINUE: Final = RequestState.CONTINUE

# How long a graceful shutdown leaves an idle keep-alive connection open for a
# request already on its way (shutdown()): a client loop's next request is
# microseconds behind its last response; one idle longer was not about to send.
_IDLE_CLOSE_GRACE_S: Final = 1.0

_IDLE: Final = Phase.IDLE
_HEAD: Final = Phase.HEAD
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

    # -- closing after the last answer (error answers: http1/error_replies.py) --------------

    def _linger_close(self) -> None:
        """Close after the last answer as RFC 9112 §9.6 advises: half-close first.

        Closing with request bytes unread makes the kernel send a RST, which can
        destroy the answer before the client reads it (a pipelined request
        behind a ``Connection: close``, the rest of a refused body). So the
        write side closes (the FIN follows the answer), what still arrives is
        read and dropped (data_received ignores it once CLOSED), and the
        transport closes at the client's EOF or ``LINGER_S`` later. The client
        then closes first, as the RFC's staged close intends, and nothing it
        sent can reset the answer. TLS cannot half-close and a client that
        already half-closed has nothing left to send: those close at once.
        """
        self._phase = _CLOSED
        transport = self._transport
        if self._peer_eof or not transport.can_write_eof() or transport.is_closing():
            self._close()
            return
        if self._held:
            self._last_write_then_fin()
        response_writer.flush_held(self)
        transport.write_eof()
        self._flow.resume_reading()
        self.deadline = self._loop.time() + LINGER_S

    def _last_write_then_fin(self) -> None:
        """The next write is the connection's last: let the FIN ride in its segment.

        Our callers close or half-close right after that write, which the
        cork needs (transport/fin.py). One segment and one client wake-up
        fewer per closed connection; not under TLS, whose close must first
        get the peer's close_notify, nor on a Unix socket.
        """
        server = self.info.server
        if not self._shared.tls and server is not None and server[1] is not None:
            cork_for_fin(self._transport)  # TCP: a Unix socket's address has no port

    # -- deadlines and shutdown (the ServerState tick and the runner call these) ------------

    def on_deadline(self) -> None:
        """Keep-alive idle or request-head timeout: close quietly; a stalled body: 408."""
        self.deadline = None
        if self._transport.is_closing():
            self._transport.abort()  # our close did not finish in time
            return
        if self._phase is _BODY:
            parsing = self._parsing
            if self._flow.read_paused or (
                parsing is not None and parsing.request_state is _R_CONTINUE
            ):
                # We stopped reading (the app does not consume, or answers
                # ahead of this request are pending), or the client waits for
                # a 100 Continue the app has not asked for: the app's choice,
                # not the client's stall. The clock restarts when we resume.
                self.deadline = self._loop.time() + self._shared.body_timeout_s
            elif parsing is not None and parsing.response_state >= _S_DONE:
                self._close()  # answered already: the rest of the body would be dropped
            else:
                # RFC 9110 §15.5.9. An app reading the body sees http.disconnect;
                # one that already started its response is cut short instead.
                error_replies.reject(self, RequestTimeout("request body timed out"))
        elif self._active is None and not self._pipeline:
            self._close()
        elif self._phase is _HEAD:
            # A pipelined head that never completes: finish what is in
            # flight, read nothing more, then close (response_complete).
            self._phase = _CLOSED
            self._flow.pause_reading()

    def shutdown(self) -> None:
        """Graceful: finish the in-flight response, or the request on its way, then close.

        No connection the client may be using is closed under it: a new
        connection that has not sent its first request yet (as Go's server
        does, it gets its header timeout to send it), a head partly received,
        or request bytes waiting unread in the socket. Closing those would lose
        a request the client has every reason to think was accepted (the peers'
        "connection reset during worker restart" reports); instead that one
        request is answered with Connection: close. An idle keep-alive
        connection gets ``_IDLE_CLOSE_GRACE_S`` (at most its keep-alive timeout)
        for a request already on its way to arrive, the same way: closed at
        once, it would cross a busy client's next request, which then gets no
        response (RFC 9112 §9.3.1), on every SIGHUP restart.
        """
        self._pipeline.clear()
        self._pending_error = 0
        if self._active is not None:
            self._flow.pause_reading()
            self._active.keep_alive = False
        elif self._phase is _HEAD or self._fresh or _has_unread_bytes(self._transport):
            self._last_request = True
            if self._phase is _IDLE and not self._fresh:
                self.deadline = self._loop.time() + self._headers_timeout_s
        else:
            self._last_request = True
            self.deadline = self._loop.time() + min(_IDLE_CLOSE_GRACE_S, self._shared.keep_alive_s)

    def abort(self) -> None:
        """Drop the connection at once (after the graceful timeout)."""
        self._phase = _CLOSED
        self._held = []
        self._transport.abort()

    def _close(self) -> None:
        self._phase = _CLOSED
        transport = self._transport
        if transport.is_closing():
            return
        if self._held:
            self._last_write_then_fin()
        response_writer.flush_held(self)  # what the app sent before the close still goes out
        # Keep reading while the transport closes: TLS finishes its close by
        # reading the peer's close_notify, and with reading paused Python
        # 3.10's SSL transport never completes it. data_received drops what
        # arrives. The deadline cuts off a close the peer never lets finish.
        self._flow.resume_reading()
        transport.close()
        self.deadline = self._loop.time() + CLOSE_TIMEOUT_S

    # -- flow control callbacks from the transport --------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True
        self._flow.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._flow.resume_writing()

    def eof_received(self) -> bool | None:
        """The client half-closed. RFC 9112 §9.6: that "does not delimit a request
        message, nor does it imply that the client is no longer interested in a
        response". So the requests it completed are answered, in order, and the
        connection closes after the last answer (marked Connection: close if its
        head is not out yet); their apps see http.disconnect from receive() once
        they have their body. A request cut short, an idle connection, or TLS
        (which cannot half-close): returning None lets the transport close, and
        connection_lost follows.
        """
        # An answer held for the end of this loop pass goes to the transport now:
        # returning None below closes it, after what it has buffered.
        response_writer.flush_held(self)
        active = self._active
        if active is None or self._phase is not _IDLE or self._shared.tls:
            return None
        self._peer_eof = True
        pipeline = self._pipeline
        for cycle in (active, *pipeline):
            cycle.feed_client_done()
        (pipeline[-1] if pipeline else active).keep_alive = False
        return True

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


def _has_unread_bytes(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes wait in the socket that the loop has not handed to us yet."""
    if sys.platform == "win32":
        return False
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return False  # closed meanwhile, or not a socket the ioctl knows
    return int.from_bytes(raw, sys.byteorder) > 0
