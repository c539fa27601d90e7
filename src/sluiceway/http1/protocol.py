"""HOT PATH: HTTP/1.1 server protocol, an ``asyncio.Protocol`` over httptools (llhttp).

Reads in the order a request flows: ``connection_made``, ``data_received``
(with ``_read_common_heads``: the common bodyless head read in one call to
``http1/_head.c``, everything else fed to llhttp), the parser callbacks in
firing order (``on_message_begin``, ``on_url``, ``on_header``,
``on_headers_complete``, ``on_body``, ``on_message_complete``), app start,
the ``ResponseSink`` side (``send_head``/``send_body``/...), keep-alive,
closing and ``connection_lost``. What is off the per-request path is a
delegated call to a sibling: ``switching.py`` (the HTTP/2 hand-off by ALPN,
prior knowledge or ``Upgrade: h2c``, and the Upgrade dispatch, WebSocket via
``upgrade.py``), ``error_replies.py`` (4xx for the peer, 500/503 for the app).

Invariants:

* Callbacks fill the scope directly; there are no intermediate event objects.
  One ``HTTPCycle`` (``H1Cycle``) and one task exist per request.
* Responses go out in request order: one cycle is ``_active`` (its app may
  write), later pipelined cycles wait in ``_pipeline`` with reading paused.
* The head and the first body chunk are one ``transport.write``.
* Every wait on the peer is bounded: ``deadline`` (checked by the
  ``ServerState`` tick) covers the request head (slowloris), a request body
  that stops coming (408; not while we paused reading or owe a
  ``100 Continue``) and keep-alive idleness; the request head is capped in
  bytes (414/431), counting only that head's bytes, never the requests and
  bodies before it in the same read; buffered request body is capped by the
  high-water mark (reading pauses).
* ``Host`` and an absolute-form target's authority are ``uri-host [":" port]``
  (``wire.check_host``, 400 otherwise), on both head paths: http1/_head.c
  takes only plain hosts and leaves the rest to llhttp's path, which checks.
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
from collections.abc import Callable, Iterable
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
from sluiceway.asgi.scope import http_scope, split_target, target_authority, with_host
from sluiceway.connection import files
from sluiceway.connection.shared import Shared, connection_info
from sluiceway.connection.state import ConnectionInfo
from sluiceway.connection.tasks import start_eagerly
from sluiceway.errors import (
    ASGIMessageError,
    BadRequest,
    BodyTooLarge,
    ClientDisconnected,
    ConnectionClosing,
    HeadersTooLarge,
    NotImplementedByServer,
    ProtocolError,
    RequestTimeout,
    URITooLong,
    VersionNotSupported,
)
from sluiceway.forward_throw import forward_throw
from sluiceway.http1 import error_replies, switching, wire
from sluiceway.http1.cycle import CLOSE_TIMEOUT_S, NO_PARSER, H1Cycle, Phase
from sluiceway.transport.fin import cork_for_fin
from sluiceway.transport.flow import FlowControl
from sluiceway.transport.linger import LINGER_S

if TYPE_CHECKING:
    from sluiceway.http2.config import H2Config

_S_HEAD: Final = ResponseState.HEAD
_S_BODY: Final = ResponseState.BODY
_S_DONE: Final = ResponseState.DONE
_S_ABORTED: Final = ResponseState.ABORTED
_R_CONTINUE: Final = RequestState.CONTINUE

# Header names the protocol looks at while they stream past (RFC 9112 §6-7, §9.3).
_WATCHED: Final = frozenset(
    (
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"te",
        b"upgrade",
        b"connection",
    )
)
_HTTP11: Final = "1.1"


# What the C head reader returns: method, target, version, headers, keep-alive, end offset.
Head = tuple[str, bytes, str, list[tuple[bytes, bytes]], bool, int]
HeadReader = Callable[[bytes, int, int, int], Head | None]


def _load_head_reader() -> HeadReader | None:
    try:
        from sluiceway.http1._head import parse_head
    except ImportError:  # built without a C compiler: llhttp reads every head
        return None
    return parse_head


# http1/_head.c reads the common bodyless request head in one call, where
# httptools makes one Python call per part of it; what it declines goes to llhttp.
_PARSE_HEAD: Final = _load_head_reader()
_METHODS: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}
# How long a graceful shutdown leaves an idle keep-alive connection open for a
# request already on its way (shutdown()): a client loop's next request is
# microseconds behind its last response; one idle longer was not about to send.
_IDLE_CLOSE_GRACE_S: Final = 1.0
# Bodies up to this size are joined with their head or chunk framing into one
# bytes object (one write, one small copy); larger ones go out vectored.
_JOIN_MAX_BYTES: Final = 16 * 1024
# What a response writes is held and written at the end of the loop pass, one
# vectored write per connection (or sooner, once this much is held): a
# streamed download costs one writev instead of one write per chunk, and the
# apps of a pass run back to back (see _write_body). The parts are the app's
# own objects, so holding costs no copy.
_HOLD_MAX_BYTES: Final = 1024 * 1024
# And at most this many parts (many tiny chunks would otherwise be many objects).
_HOLD_MAX_PARTS: Final = 256
# Chunked request framing (size lines, chunk extensions, CRLFs, the trailer
# section) is bounded, since llhttp skips extensions without counting them
# (Node CVE-2024-22019). Allowed beyond the body: ``Shared.max_framing`` (a
# fixed 4 KiB plus the head budget, connection/shared.py), plus this much per
# body byte: every chunk but the last carries at least one, and a 1-byte chunk
# costs 5 bytes of framing ("1\r\n", "\r\n"), 12 with an 8-digit zero-padded size.
_CHUNK_FRAMING_PER_BODY_BYTE: Final = 16
# A request body makes progress when this many more of its bytes have come
# since the body deadline last moved; only then does it move again. So a
# body must keep above 1 KiB per --timeout-request-body (about 34 B/s at the
# default 30 s), and one that drips a byte every few seconds is cut off
# (issue 16). nginx's client_body_timeout moves on any byte and never cuts a
# drip; Apache's mod_reqtimeout asks for 500 B/s by default.
_BODY_PROGRESS_BYTES: Final = 1024


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
        self._parse_head: HeadReader | None = _PARSE_HEAD
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
        # Body parts not yet handed to the transport (see _write_body).
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
                data = self._read_common_heads(parse_head, data)
                if not data or self._phase is not _IDLE:
                    return
            if self._peer_closing:
                # What llhttp says of bytes after a request that asked to close.
                error_replies.reject(self, BadRequest("Data after `Connection: close`"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            switching.on_upgrade(self, data, int(exc.args[0]))
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, ProtocolError):
                error_replies.reject(self, cause)
                return
            if isinstance(cause, ConnectionClosing):
                return
            if isinstance(cause, (KeyboardInterrupt, SystemExit)):
                raise cause from None  # from an app's first step (eager start): not ours to swallow
            error_replies.internal_error(self, cause or exc)
            return
        except httptools.HttpParserInvalidMethodError:
            error_replies.reject(self, BadRequest("invalid method"))
            return
        except httptools.HttpParserError as exc:
            error_replies.reject(self, BadRequest(str(exc)))
            return
        after = self._phase
        if after is _HEAD:
            # A head arriving in pieces: llhttp buffers partial names/values
            # itself, so bound the bytes fed to it since the head began. Only
            # that head's: when it began inside this read (on_message_begin
            # set -1), what came before it in ``data`` were earlier requests
            # and their bodies, which a big read of pipelined requests holds
            # plenty of (issue 16: 431 after 8,266 valid GETs). That first
            # read of the head is not counted, since where in it the head
            # began is not known: llhttp may hold one read (256 KiB at most on
            # asyncio and uvloop) beyond the limit; every later read counts
            # whole. Complete fields are counted exactly by on_header.
            fed = self._head_fed
            fed = fed + len(data) if fed >= 0 else 0
            self._head_fed = fed
            if fed > self._shared.max_head + self._shared.max_line:
                error_replies.reject(self, HeadersTooLarge("request head too large"))
        elif after is _BODY and self._te is not None:
            if phase is _BODY and self._head_fed >= 0:
                # Inside a chunked body (``_te`` is only ever "chunked" here):
                # all of ``data`` belonged to it, so framing = fed - body.
                fed = self._chunked_fed + len(data)
                self._chunked_fed = fed
                body = self._body_bytes
                if fed - body > self._shared.max_framing + body * _CHUNK_FRAMING_PER_BODY_BYTE:
                    error_replies.reject(self, BadRequest("chunked framing too large"))
            else:
                # This read crossed the head (or an earlier request, then this
                # head): not counted, and the next read is. At most two reads
                # per request go uncounted.
                self._head_fed = 0

    def _read_common_heads(self, parse_head: HeadReader, data: bytes) -> bytes:
        """Serve the requests at the start of ``data`` that http1/_head.c reads; return the rest.

        Each is a whole bodyless request, so it goes the way llhttp's
        callbacks would take it (begin, head complete, message complete)
        without their calls. The first head the reader declines, and all
        after it, go to llhttp; what follows a request that asked to close
        is returned for data_received to refuse.
        """
        offset = 0
        size = len(data)
        while True:
            head = parse_head(data, offset, self._max_line, self._max_head)
            if head is None:
                return data[offset:] if offset else data
            method, self._url, version, self._headers, keep_alive, offset = head
            self._begin_message()
            try:
                self._head_complete(method, version, keep_alive)
                self.on_message_complete()
            except ProtocolError as exc:
                error_replies.reject(self, exc)
                return b""
            except Exception as exc:
                error_replies.internal_error(self, exc)
                return b""
            if offset == size or self._phase is not _IDLE:
                return b""  # all read, or an app that ran closed the connection
            if self._peer_closing:
                return data[offset:]

    # -- parser callbacks, in firing order ---------------------------------------------

    def on_message_begin(self) -> None:
        if self._phase is _CLOSED:
            # An app that ran during this feed closed the connection: the
            # pipelined requests after its own are not read.
            raise ConnectionClosing
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self._head_fed = -1  # this head began inside the current read
        self._body_bytes = 0
        self._host_count = 0
        self._begin_message()
        self._phase = _HEAD
        self.deadline = self._loop.time() + self._headers_timeout_s

    def _begin_message(self) -> None:
        self._fresh = False
        if self._watched:
            # Only a request that carried one of these fields changed them.
            self._watched = False
            self._content_length = -1
            self._te = None
            self._chunked_fed = 0
            self._expect_continue = False
            self._te_trailers = False
            self._upgrade = None
            self._connection_field = False

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self._max_line:
            raise URITooLong("request target too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = self._head_bytes + len(name) + len(value) + 4
        self._head_bytes = size
        if size > self._max_head:
            raise HeadersTooLarge("request header fields too large")
        if self._phase is not _HEAD:
            return  # a trailer field of a chunked body (RFC 9112 §7.1.2): not passed on
        name = name.lower()
        if name in _WATCHED:
            if name == b"host":
                self._host_count += 1
                self._host = value
            else:
                self._watch(name, value)
        self._headers.append((name, value))

    def _watch(self, name: bytes, value: bytes) -> None:
        self._watched = True
        if name == b"content-length":
            # llhttp already rejected malformed and duplicate values.
            self._content_length = int(value)
        elif name == b"transfer-encoding":
            self._te = value
        elif name == b"expect":
            self._expect_continue = value.strip(b" \t").lower() == b"100-continue"
        elif name == b"te":
            self._te_trailers = b"trailers" in value.lower()
        elif name == b"connection":
            self._connection_field = True
        else:
            self._upgrade = value.strip(b" \t").lower()

    def on_headers_complete(self) -> None:
        if self._phase is _CLOSED:
            return
        shared = self._shared
        parser = self._parser
        keep_alive = parser.should_keep_alive()
        # llhttp accepts only HTTP/0.9, 1.0, 1.1 and 2.0, and of those only 1.1
        # keeps a connection alive without a Connection field: then the version
        # is known without get_http_version(), which formats a new str per call.
        version = (
            _HTTP11 if keep_alive and not self._connection_field else parser.get_http_version()
        )
        if version == "1.1":
            # RFC 9112 §3.2: exactly one Host on HTTP/1.1.
            if self._host_count != 1:
                raise BadRequest("missing or duplicate Host header")
        elif version == "1.0":
            if self._host_count > 1:
                raise BadRequest("duplicate Host header")
            if self._te is not None:
                # RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding is faulty framing.
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        else:
            raise VersionNotSupported(f"HTTP/{version}")
        if self._host_count:
            host = self._host
            # A server's clients send the same few hosts: each new one is
            # checked (a compare instead of a byte loop, per request).
            if host != shared.last_host:
                wire.check_host(host)  # RFC 9112 §3.2: an invalid Host is a 400
                shared.last_host = host
        if self._te is not None:
            wire.check_transfer_encoding(self._te)
        if shared.max_body is not None and self._content_length > shared.max_body:
            raise BodyTooLarge("declared Content-Length over the limit")
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        if method == "CONNECT":
            raise NotImplementedByServer("CONNECT is not supported")
        self._head_complete(method, version, keep_alive)

    def _head_complete(self, method: str, version: str, keep_alive: bool) -> None:
        """The head is read and checked: build the scope and the cycle, and start or queue it."""
        shared = self._shared
        self._first_data = None  # an HTTP/1 request came: error_replies.reject answers from now on
        url = self._url
        if url[:1] == b"/":  # origin-form, nearly every request: no authority to look for
            if 63 not in url and 35 not in url:  # "?" and "#", as ints: faster
                raw_path, query = url, b""
            elif 35 not in url:
                raw_path, _, query = url.partition(b"?")
            else:
                raw_path, query = split_target(url)
        else:
            raw_path, query = split_target(url)
            authority = target_authority(url)
            if authority is not None:
                # RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
                if not authority or authority[0] == 58:  # ":"
                    raise BadRequest("absolute-form target without a host")
                if 64 in authority:  # "@"
                    # RFC 9110 §4.2.4: userinfo in a target URI is an error
                    # (http://good.example@evil.example/ names evil.example).
                    raise BadRequest("userinfo in the request target")
                wire.check_host(authority)
                self._headers = with_host(self._headers, authority)
        info = self.info
        scope = http_scope(
            method,
            version,
            info.scheme,
            raw_path,
            query,
            shared.root_path,
            self._headers,
            info.client,
            info.server,
            self._state.lifespan_state,
            info.tls,
        )
        has_body = self._content_length > 0 or self._te is not None
        cycle = H1Cycle(
            scope, self, expect_continue=self._expect_continue and has_body and version == "1.1"
        )
        cycle.keep_alive = keep_alive
        cycle.client_close = not keep_alive
        self._peer_closing = not keep_alive
        cycle.is_head = method == "HEAD"
        cycle.http10 = version == "1.0"
        cycle.te_trailers = self._te_trailers
        if self._timed:
            cycle.started = self._loop.time()
            cycle.target = url
        self._state.requests += 1
        self._parsing = cycle
        self._phase = _BODY
        if has_body:
            # A body must make progress (on_body) before this deadline, or it
            # is cut off with a 408 (on_deadline): a stalled upload must not
            # hold the connection and the app's task forever.
            self.deadline = self._loop.time() + shared.body_timeout_s
            self._progress_at = _BODY_PROGRESS_BYTES
        else:
            self.deadline = None
        if self._upgrade is not None and self._parser.should_upgrade():
            # Held until llhttp raises HttpParserUpgrade (after the body, if any).
            self._upgrade_cycle = cycle
        elif not has_body:
            # on_message_complete fires next, in this same feed: the app starts
            # there, seeing a whole request (keep-alive and the keep-alive
            # deadline are decided once the parser is past it).
            self._complete_cycle = cycle
        elif self._active is None:
            self._start(cycle)
        else:
            self._enqueue(cycle)

    def on_body(self, body: bytes) -> None:
        size = self._body_bytes + len(body)
        self._body_bytes = size
        metrics = self._metrics
        if metrics is not None:
            metrics.request_body_bytes += len(body)
        limit = self._shared.max_body
        if limit is not None and size > limit:
            raise BodyTooLarge("request body over the limit")
        if size >= self._progress_at:
            # Progress: the body deadline moves (see _BODY_PROGRESS_BYTES).
            self._progress_at = size + _BODY_PROGRESS_BYTES
            self.deadline = self._loop.time() + self._shared.body_timeout_s
        if self._parsing is not None:
            self._parsing.feed_body(body)

    def on_message_complete(self) -> None:
        if self._phase is _CLOSED:
            return
        parsing = self._parsing
        if parsing is not None and parsing is self._upgrade_cycle and switching.upgrade_body(self):
            # httptools had llhttp skip this body (an Upgrade request): it
            # follows in the bytes handed to switching.on_upgrade, not read yet.
            return
        self._phase = _IDLE
        self.deadline = None
        if parsing is not None:
            parsing.feed_end()
            self._parsing = None
        cycle = self._complete_cycle
        if cycle is not None:
            self._complete_cycle = None
            if self._active is None:
                self._start(cycle, eager=True)
            else:
                self._enqueue(cycle)

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

    # -- the ResponseSink side: send ------------------------------------------------------

    async def drain(self) -> None:
        await self._flow.drain()

    def send_continue(self) -> None:
        cycle = self._active
        if cycle is not None and cycle.response_state < _S_BODY and not self._flow.closed:
            self._flush_held()
            self._transport.write(wire.CONTINUE_100)
            if cycle is self._parsing:
                # The client waited for this to send its body: its clock starts now.
                self.deadline = self._loop.time() + self._shared.body_timeout_s

    def send_early_hint(self, links: Iterable[Any]) -> None:
        cycle = self._active
        data = wire.encode_early_hint(links)
        # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
        if cycle is not None and not cycle.http10 and not self._flow.closed:
            self._flush_held()
            self._transport.write(data)

    def send_head(
        self,
        status: int,
        headers: Iterable[Any],
        body: bytes,
        more_body: bool,
        trailers: bool,
        file_bytes: int = -1,
    ) -> None:
        if self._flow.closed:
            raise ClientDisconnected("the client has disconnected")
        cycle: H1Cycle = self._active  # type: ignore[assignment]  # only the active cycle sends
        parts, content_length, close, overrides = wire.encode_headers(headers)
        head = [wire.STATUS_LINES[status]]
        head += parts
        head.append(
            wire.default_headers_without(self._state.default_headers, overrides)
            if overrides
            else self._state.default_headers
        )
        keep = cycle.keep_alive and not close and not self._state.shutting_down
        if cycle.request_state is _R_CONTINUE:
            keep = False  # RFC 9110 §10.1.1: the body never came; we close instead of reading it
        no_body = cycle.is_head or status in wire.NO_BODY_STATUSES
        n = len(body)
        chunked = False
        remaining = -1
        if content_length >= 0:
            remaining = content_length
        elif status in wire.NO_BODY_STATUSES:
            pass
        elif not more_body:
            # Also for HEAD: the length a GET would have had (RFC 9110 §9.3.2).
            remaining = n if file_bytes < 0 else file_bytes
            head.append(b"content-length: %d\r\n" % remaining)
        elif cycle.is_head:
            pass
        elif cycle.http10:
            keep = False  # no chunked coding for HTTP/1.0 (RFC 9112 §6.1): close-delimited
        else:
            chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
        if not keep:
            if not close:
                head.append(b"connection: close\r\n")
        elif cycle.http10:
            head.append(b"connection: keep-alive\r\n")
        head.append(wire.CRLF)
        body_at = -1  # index of the body in head, when it is there
        if no_body:
            pass
        elif chunked:
            if n:
                head.append(wire.chunk_header(n))
                body_at = len(head)
                head += (body, wire.CRLF)
            if not more_body and not trailers:
                head.append(wire.LAST_CHUNK)
        elif file_bytes < 0:
            if remaining >= 0:
                if n > remaining or (not more_body and n != remaining):
                    raise ASGIMessageError(
                        f"response body is {n} bytes but Content-Length says {content_length}"
                    )
                remaining -= n
            body_at = len(head)
            head.append(body)
        elif remaining >= 0 and (
            file_bytes > remaining or (not more_body and file_bytes != remaining)
        ):
            raise ASGIMessageError(
                f"file is {file_bytes} bytes but Content-Length says {content_length}"
            )
        cycle.keep_alive = keep
        self._chunked = chunked
        self._no_body = no_body
        self._remaining = remaining
        self._sent = 0 if no_body else n
        self._trailer_parts = []
        out: tuple[bytes, ...]
        if n > _JOIN_MAX_BYTES and body_at > 0:
            # Head and a large first chunk: hand both over without copying the body
            # (FlowControl.writelines: asyncio 3.12.0-3.12.8/3.13.0-3.13.1 never pause on theirs).
            out = (b"".join(head[:body_at]), body)
            tail = b"".join(head[body_at + 1 :])  # a chunk's CRLF; nothing after a framed length
            if tail:
                out += (tail,)
        else:
            out = (b"".join(head),)
        self._write_body(out, n)

    def send_body(self, body: bytes, more_body: bool) -> None:
        if self._flow.closed:
            raise ClientDisconnected("the client has disconnected")
        if self._no_body:
            return
        n = len(body)
        if self._chunked:
            cycle = self._active
            last = b"" if more_body or (cycle is not None and cycle.trailers) else wire.LAST_CHUNK
            if n > _JOIN_MAX_BYTES:
                # Large chunk: a vectored write (uvloop) instead of copying it.
                self._write_body((wire.chunk_header(n), body, wire.CRLF + last), n)
            elif n:
                data = b"".join((wire.chunk_header(n), body, wire.CRLF, last))
                self._write_body((data,), n)
            elif last:
                self._write_body((last,), 0)
        else:
            remaining = self._remaining
            if remaining >= 0:
                if n > remaining or (not more_body and n != remaining):
                    self._close()
                    raise ASGIMessageError(
                        "response body does not match its Content-Length"
                        f" ({'longer' if n > remaining else 'shorter'} than declared)"
                    )
                self._remaining = remaining - n
            if n:
                self._write_body((body,), n)
        self._sent += n

    def _write_body(self, parts: tuple[bytes, ...], size: int) -> None:
        """Hold ``parts`` (``size`` body bytes) for the end of this loop pass, or write them now.

        A response, or a streamed body's parts, go out at the end of the loop
        pass, all connections' in a row (``flush_holding``): the apps
        of one pass then run back to back, with no socket write and the
        kernel's TCP work for it between them, so each finds its code and
        data still in the CPU's caches (scenario (b): +42 % requests/s in an
        A/B; docs/performance.md, session 5). An app that waits between its
        chunks still sends each before its next step. Held parts are written
        sooner past either ``_HOLD_MAX_*`` bound, and before any other write.
        """
        held = self._held
        held.extend(parts)
        size += self._held_bytes
        if size < _HOLD_MAX_BYTES and len(held) < _HOLD_MAX_PARTS:
            self._held_bytes = size
            if not self._flush_scheduled:
                self._flush_scheduled = True
                shared = self._shared
                shared.holding.append(self)
                if not shared.flush_scheduled:
                    shared.flush_scheduled = True
                    self._loop.call_soon(flush_holding, shared)
            return
        self._flush_held()

    def flush_at_pass_end(self) -> None:
        self._flush_scheduled = False
        self._flush_held()

    def _flush_held(self) -> None:
        held = self._held
        if held:
            self._held = []
            self._held_bytes = 0
            # A transport closing under us takes no more (uvloop raises): what
            # the app sent after the close is dropped, as a write would be, and
            # the pass-end flush of the other connections goes on.
            if self._flow.closed or self._transport.is_closing():
                return
            if len(held) == 1:
                self._transport.write(held[0])  # a small response: joined with its head
            else:
                self._flow.writelines(held)

    def open_file(self, file: Any, offset: int | None, count: int | None) -> FileSlice:
        return files.open_file(file, offset, count)

    async def send_file(self, part: FileSlice, more_body: bool) -> None:
        if self._flow.closed:
            raise ClientDisconnected("the client has disconnected")
        if self._no_body:
            return
        self._flush_held()
        n = part.count
        cycle = self._active
        last = not more_body and not (cycle is not None and cycle.trailers)
        if self._chunked:
            if n:
                self._transport.write(wire.chunk_header(n))
        elif self._remaining >= 0:
            if n > self._remaining or (not more_body and n != self._remaining):
                self._close()
                raise ASGIMessageError("file size does not match the response Content-Length")
            self._remaining -= n
        if n:
            try:
                await forward_throw(
                    files.transfer(
                        self._loop, self._transport, self._flow, part.file, part.offset, n
                    )
                )
            except ASGIMessageError:
                self._close()  # the framing promised bytes that will not come
                raise
        if self._chunked:
            tail = wire.CRLF if n else b""
            self._transport.write(tail + wire.LAST_CHUNK if last else tail)
        self._sent += n

    def send_trailers(self, headers: Iterable[Any], more_trailers: bool) -> None:
        if self._flow.closed:
            raise ClientDisconnected("the client has disconnected")
        self._flush_held()
        cycle = self._active
        parts, _, _, _ = wire.encode_headers(headers)
        self._trailer_parts += parts
        if more_trailers or self._no_body or not self._chunked:
            return  # trailers need chunked coding; without it they are dropped
        if cycle is not None and cycle.te_trailers:
            self._transport.write(b"0\r\n" + b"".join(self._trailer_parts) + wire.CRLF)
        else:
            # The client did not send "TE: trailers" (extensions spec): drop them.
            self._transport.write(wire.LAST_CHUNK)
        self._trailer_parts = []

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
        self._flush_held()
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
        self._flush_held()  # what the app sent before the close still goes out
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
        self._flush_held()
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


def flush_holding(shared: Shared) -> None:
    """The end of a loop pass: every connection writes what it held (``_write_body``)."""
    holding = cast("list[HTTP1Protocol]", shared.holding)
    shared.holding = []
    shared.flush_scheduled = False
    for conn in holding:
        conn.flush_at_pass_end()
