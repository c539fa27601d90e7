"""The asyncio adapter of one HTTP/2 connection.

Transport <-> ``H2Connection`` <-> one ``HTTPCycle`` per stream.

It reads in the order bytes flow: ``start`` (the HTTP/1.1 protocol hands the
transport over: ALPN "h2", the prior-knowledge preface, or ``Upgrade: h2c``),
``data_received`` (feed the sans-I/O connection, act on its events), the
request side (``_request``: a scope, an ``H2Stream`` sink and the app's
task, in ``http2/request_start.py``), the response side (the streams call
``send_headers``/``send_data``, output leaves in one write at the end of
the loop pass), deadlines, shutdown and ``connection_lost``.

Invariants:

* The adapter is thin: every HTTP/2 rule lives in ``http2/connection.py``;
  the ASGI rules in ``asgi/http.py``; this file only moves bytes and events.
* Everything the connection queues is written at the end of the loop pass
  (``_schedule_flush``), so the responses of all the streams that one read
  started leave in one write.
* Every wait on the peer is bounded: the keep-alive timeout closes a
  connection with no open stream (GOAWAY NO_ERROR first), and flow control
  waits are bounded by the app's own send (the client holding its window
  shut holds only that stream's one pending message).
* A client's mistake is a RST_STREAM or GOAWAY with the RFC's error code,
  decided by the connection; an app's mistake is a 500 before its head, a
  RST_STREAM INTERNAL_ERROR after (``error_replies.py``).

Imports ``sluiceway.asgi``, ``sluiceway.transport``, ``sluiceway.accesslog``,
``sluiceway.connection`` and its ``http2`` siblings; never the HTTP/1.1
protocol (which imports this module to hand connections over).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final, Protocol

from sluiceway import accesslog
from sluiceway.asgi.http import HTTPCycle
from sluiceway.http2 import request_start
from sluiceway.http2.config import H2Config
from sluiceway.http2.connection import H2Connection
from sluiceway.http2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowOpened,
)
from sluiceway.http2.frames import ErrorCode
from sluiceway.http2.headers import parse_default_headers
from sluiceway.http2.stream import H2Stream
from sluiceway.transport.flow import FlowControl

if TYPE_CHECKING:
    from sluiceway.connection.shared import Shared
    from sluiceway.connection.state import ConnectionInfo


class StreamHandler(Protocol):
    """What the connection asks of whatever runs one stream.

    An ``H2Stream`` (a request and its ``HTTPCycle``) or, for an RFC 8441
    extended CONNECT, the WebSocket's stream carrier (``http2/websocket.py``).
    A handler leaves ``streams`` through ``H2Protocol.forget`` when it is done.
    """

    stream_id: int

    def receive_body(self, data: bytes, flow_controlled: int) -> None: ...

    def receive_end(self) -> None: ...

    def window_opened(self) -> None: ...

    def reset_by_peer(self) -> None: ...

    def waiting_on_peer(self) -> bool:
        """True while only the client can move this stream (a shut window, a body to come)."""
        ...


# Output below this is joined into one write; above, the parts go to a vectored write.
_JOIN_MAX_BYTES: Final = 32 * 1024
# DATA payload bytes the connection may hold unwritten before ``send_data``
# writes at once rather than at the end of the loop pass; see ``send_data``.
_WRITE_NOW_BYTES: Final = 1024 * 1024
# After our GOAWAY or a close, how long the peer gets to read it and close.
_CLOSE_TIMEOUT_S: Final = 5.0


class H2Protocol:
    """One HTTP/2 connection; see the module docstring.

    An ``asyncio.Protocol`` by its methods, as ``HTTP1Protocol`` is.
    """

    def __init__(self, shared: Shared, config: H2Config) -> None:
        self._shared = shared
        self._state = shared.state
        self._app = shared.app
        loop = shared.loop
        if loop is None:
            loop = shared.loop = asyncio.get_running_loop()
        self._loop = loop
        self._conn = H2Connection(config)
        self._transport: asyncio.Transport = None  # type: ignore[assignment]  # set by start
        self.flow: FlowControl = None  # type: ignore[assignment]  # same
        self.info: ConnectionInfo = None  # type: ignore[assignment]  # same
        self.streams: dict[int, StreamHandler] = {}
        self._flush_scheduled = False
        self._unwritten = 0  # DATA payload bytes queued since the last flush
        self._closing = False
        self._going_away = False
        self.deadline: float | None = None
        self._access = False
        self._metrics = shared.metrics
        # Exchanges are timed: for the access log, the metrics, or both.
        self._timed = False
        self._client_text = "-"
        self._defaults_raw = b""
        self._defaults: list[tuple[bytes, bytes]] = []

    # -- start: the HTTP/1.1 protocol hands the transport over -------------------------

    def start(
        self,
        transport: asyncio.Transport,
        info: ConnectionInfo,
        data: bytes = b"",
        upgrade_settings: bytes | None = None,
        upgraded: HTTPCycle | None = None,
    ) -> None:
        """Take over ``transport`` (already this protocol's) and read ``data``.

        ``upgraded`` (with ``upgrade_settings``, for ``Upgrade: h2c``): the
        whole request read over HTTP/1.1, answered here on stream 1.
        """
        self._transport = transport
        self.flow = FlowControl(transport)
        self.info = info
        self._state.add_connection(self)
        self._access = self._shared.access_log and accesslog.access_enabled()
        if self._access:
            self._client_text = accesslog.format_client(info.client)
        self._timed = self._access or self._metrics is not None
        self._conn.initiate(upgrade_settings=upgrade_settings)
        self._idle_deadline()
        if upgraded is not None:
            request_start.upgraded_request(self, upgraded)
        if self._state.shutting_down:
            self._conn.start_graceful_shutdown()
            self._going_away = True
        if data:
            self.data_received(data)
        else:
            self.flush()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Only when a server is built for HTTP/2 alone (tests); start does the work."""

    @property
    def shared(self) -> Shared:
        """The server's per-server facts (app, config, state), for what runs a stream."""
        return self._shared

    # -- data_received ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        if self.streams:
            self._progress()
        for event in self._conn.receive_data(data):
            # By frequency: h2load and browsers mostly send bodiless requests.
            if isinstance(event, RequestReceived):
                self._request(event)
            elif isinstance(event, DataReceived):
                self._data(event)
            elif isinstance(event, WindowOpened):
                self._window_opened(event.stream_id)
            elif isinstance(event, StreamReset):
                self._stream_reset(event.stream_id)
            elif isinstance(event, TrailersReceived):
                self._trailers(event)
            elif isinstance(event, ConnectionTerminated):
                self._terminated(event)
                break
        self.flush()

    def _request(self, event: RequestReceived) -> None:
        request_start.start_request(self, event)

    def _data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            # The response is complete and the app gone: the connection window
            # still counts these bytes, so give them back.
            self._conn.acknowledge_received_data(event.stream_id, event.flow_controlled_length)
            return
        if event.data:
            metrics = self._metrics
            if metrics is not None:
                metrics.request_body_bytes += len(event.data)
            stream.receive_body(event.data, event.flow_controlled_length)
        elif event.flow_controlled_length:
            self.acknowledge(event.stream_id, event.flow_controlled_length)  # padding only
        if event.end_stream:
            stream.receive_end()

    def _trailers(self, event: TrailersReceived) -> None:
        # ASGI has no request trailers: the body simply ends.
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.receive_end()

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.window_opened()
            return
        for stream in list(self.streams.values()):  # the connection window: everyone may move
            stream.window_opened()

    def _stream_reset(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.reset_by_peer()
        self._idle_deadline()

    def _terminated(self, event: ConnectionTerminated) -> None:
        """The peer's GOAWAY, or ours after a connection error.

        A peer's GOAWAY NO_ERROR is graceful (it opens no new streams; the
        ones below its last id still get their answers), so the connection
        closes once they finish; anything else closes now, after the write.
        """
        if event.error_code == ErrorCode.NO_ERROR and self.streams:
            self._going_away = True
            return
        self._close()

    # -- what the streams call ------------------------------------------------------------

    def default_fields(self) -> list[tuple[bytes, bytes]]:
        raw = self._state.default_headers
        if raw is not self._defaults_raw:  # refreshed once a second (Date)
            self._defaults_raw = raw
            self._defaults = parse_default_headers(raw)
        return self._defaults

    def send_headers(self, stream_id: int, fields: list[tuple[bytes, bytes]], end: bool) -> None:
        self._conn.send_headers(stream_id, fields, end)
        self._schedule_flush()

    def send_data(self, stream_id: int, data: bytes, end: bool) -> int:
        taken = self._conn.send_data(stream_id, data, end)
        unwritten = self._unwritten + taken
        if unwritten >= _WRITE_NOW_BYTES:
            # The end of the loop pass writes everything every stream queued
            # in one go, but an app that sends without yielding never reaches
            # it: with the peer's windows wide open its whole body would pile
            # up here, unseen by the transport's pause_writing. Write now, so
            # ``write_paused`` holds the next send. The bound is per
            # connection, so it holds however many streams send at once; it
            # is large because one big vectored write per MiB costs the
            # kernel far less than sixteen (1 MiB downloads: +35 % req/s).
            self.flush()
        else:
            self._unwritten = unwritten
            self._schedule_flush()
        return taken

    def push(self, parent_id: int, fields: list[tuple[bytes, bytes]]) -> None:
        """PUSH_PROMISE on ``parent_id``, then run the app for the promised request."""
        promised = self._conn.push_promise(parent_id, fields)
        if promised is None:
            return  # the client disabled push, or cannot take another stream
        self._schedule_flush()
        request_start.start_request(self, RequestReceived(promised, fields, True))

    def acknowledge(self, stream_id: int, n: int) -> None:
        self._conn.acknowledge_received_data(stream_id, n)
        self._schedule_flush()

    def open_stream_window(self, stream_id: int, n: int) -> None:
        self._conn.open_stream_window(stream_id, n)
        self._schedule_flush()

    def give_back(self, stream_id: int, n: int) -> None:
        self._conn.give_back(stream_id, n)
        self._schedule_flush()

    def reset(self, stream_id: int, code: int = ErrorCode.INTERNAL_ERROR) -> None:
        """RST_STREAM ``code``; the caller marks its own side ended."""
        self._conn.reset_stream(stream_id, code)
        self._schedule_flush()

    def response_complete(self, stream: H2Stream) -> None:
        cycle = stream.cycle
        metrics = self._metrics
        if metrics is not None:
            # --metrics-port: status, body size and time are all known here, once per exchange.
            metrics.observe(cycle.status, stream.sent, self._loop.time() - stream.started)
        if self._access:
            accesslog.log_exchange(
                self._client_text,
                self.info.client,
                cycle.scope,
                stream.target,
                cycle.status,
                stream.sent,
                self._loop.time() - stream.started,
            )
        stream.forget_if_done()

    def forget(self, stream: StreamHandler) -> None:
        """``stream`` is over on both sides: it leaves the connection's map."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        self._idle_deadline()

    # -- writing ----------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        self._unwritten = 0
        parts, size = self._conn.parts_to_send()
        if size and not self.flow.closed and not self._transport.is_closing():
            if size < _JOIN_MAX_BYTES:
                self._transport.write(b"".join(parts))  # small answers: one buffer
            else:
                self.flow.write_parts(parts, size)  # large bodies: vectored, no copy here
        if self._going_away and not self.streams and not self._closing:
            self._close()

    # -- deadlines and shutdown ------------------------------------------------------------

    def _progress(self) -> None:
        """The client did something (sent bytes, or drained our writes): a held stream waits anew.

        With streams open the deadline is the stall timeout (HTTP/1.1's
        ``--timeout-request-body``): a client that neither sends nor reads
        for that long cannot hold the streams that wait on it (on_deadline).
        """
        self.deadline = self._loop.time() + self._shared.body_timeout_s

    def _idle_deadline(self) -> None:
        if not self.streams and not self._closing:
            timeout = self._shared.keep_alive_s
            self.deadline = self._loop.time() + timeout
            if self._going_away:
                self._schedule_flush()  # the last stream ended: close after the write

    def on_deadline(self) -> None:
        """Idle past the keep-alive timeout, a client that stalled its streams, or a slow close.

        Stalled (CVE-2019-9517 and slow-body holds): a client that does not
        read loses the connection; each stream that waits on a client that
        neither sends nor opens its window is reset with CANCEL and its app
        gets ``http.disconnect``. Streams whose apps are busy (a long poll)
        are not the client's doing and stay.
        """
        self.deadline = None
        if self._closing:
            self._transport.abort()
            return
        if not self.streams:
            self._conn.close(ErrorCode.NO_ERROR)
            self.flush()
            self._close()
            return
        if self.flow.write_paused:
            accesslog.error_logger.info(
                "Dropped an HTTP/2 connection from %s that stopped reading",
                accesslog.format_client(self.info.client),
            )
            self.abort()
            return
        for stream in [s for s in self.streams.values() if s.waiting_on_peer()]:
            self.forget(stream)
            self._conn.reset_stream(stream.stream_id, ErrorCode.CANCEL)
            stream.reset_by_peer()
        self._schedule_flush()
        if self.streams:
            self._progress()

    def shutdown(self) -> None:
        """Graceful: GOAWAY with the last stream id; in-flight streams finish, then close."""
        if self._closing:
            return
        self._going_away = True
        self._conn.start_graceful_shutdown()
        self.flush()

    def abort(self) -> None:
        """Drop the connection now (after the graceful timeout)."""
        self._closing = True
        self._transport.abort()

    def _close(self) -> None:
        if self._closing:
            return
        self._closing = True
        data = self._conn.data_to_send()
        transport = self._transport
        if not transport.is_closing():
            if data:
                transport.write(data)
            self.flow.resume_reading()
            transport.close()
        self.deadline = self._loop.time() + _CLOSE_TIMEOUT_S

    # -- transport callbacks -----------------------------------------------------------------

    def pause_writing(self) -> None:
        # A client that does not read must not make us queue replies to what
        # it keeps sending (CVE-2019-9517): stop reading until it catches up,
        # and let the connection budget the control frames already owed.
        self.flow.pause_writing()
        self.flow.pause_reading()
        self._conn.pause_writing()

    def resume_writing(self) -> None:
        self._conn.resume_writing()
        self.flow.resume_writing()
        if self.streams:
            self._progress()  # the client is reading again
        if not self._closing:
            self.flow.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # HTTP/2 has no half-close of the connection: close

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self.deadline = None
        if self.flow is not None:
            self.flow.connection_lost()
        self._state.remove_connection(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for stream in streams:
            stream.reset_by_peer()
