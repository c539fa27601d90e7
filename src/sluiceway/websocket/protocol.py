"""The asyncio adapter of one WebSocket: transport <-> ``Connection`` <-> ``WebSocketCycle``.

``http1/upgrade.py`` validates the handshake, builds the scope, creates a
``WebSocketProtocol``, switches the transport to it and calls ``start``. From
then on this object is the transport's protocol. Per read it does what the
codec's docstring asks, in order: feed the bytes, take the events, write the
pending bytes, act on the events (after the ``websockets`` asyncio adapter).

Phases (``Phase``): HANDSHAKE (the app has ``websocket.connect`` and has not
answered; bytes that arrive are held), OPEN (the 101 went out; frames flow),
CLOSING (our Close or the HTTP denial is going out), TCP_CLOSING (all said: our
side of TCP is closed, the peer's close is awaited under the close timeout),
CLOSED (the transport is gone, or handed to ``LingeringClose``).

A refused handshake (the app's denial or 403, the 503 of a shutdown) ends
with an HTTP answer while the client may still be sending: the transport then
goes to ``http1/linger.py``'s ``LingeringClose``, which drops what still
comes until the client's EOF or a short linger, so no RST destroys the answer.

Timers: none of its own. Keepalive pings, the ping timeout and the close
timeout are one absolute ``deadline`` that ``ServerState``'s shared tick
checks (``on_deadline``), the contract HTTP/1 connections use for keep-alive:
an idle connection holds a float, not a timer handle or a task.

Flow control: ``send_data`` awaits while the transport's write buffer is above
its high-water mark (``pause_writing``/``resume_writing``), and reading pauses
meanwhile, so a peer that floods pings and never reads cannot grow the buffer
of pongs without limit. Vectored writes go through ``transport/flow.py``'s
``writelines_for``: asyncio's own ``writelines`` on CPython 3.12.0-3.12.8 and
3.13.0-3.13.1 never calls ``pause_writing``. The cycle asks for
reading to pause once ``ws_max_queue`` messages wait for the app, and before
the app accepts, at most ``_PENDING_MAX`` bytes are held.

Shutdown: ``shutdown()`` sends Close 1001 (going away) to an open connection
and answers 503 to one still in the handshake; the close timeout bounds it.

Imports ``asgi``, ``errors``, ``http1.wire`` (HTTP heads for the denial
response), ``server.state`` (types only), ``transport.flow`` and the sibling
codec modules;
never ``http1.protocol``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from sluiceway.asgi.types import ASGIApp, HeaderList, Scope
from sluiceway.asgi.websocket import WebSocketCycle
from sluiceway.errors import ASGIMessageError, ClientDisconnected
from sluiceway.http1 import wire
from sluiceway.http1.linger import LingeringClose
from sluiceway.transport.flow import writelines_for
from sluiceway.websocket.connection import (
    BytesMessage,
    Connection,
    Pong,
    State,
    TextMessage,
)
from sluiceway.websocket.handshake import Handshake, Rejection, build_accept_response

if TYPE_CHECKING:
    from sluiceway.config import Config
    from sluiceway.server.state import ServerState

logger = logging.getLogger("sluiceway.error")

# RFC 6455 §7.1.1 leaves the wait for the peer's Close to the endpoint; 10 s is
# the `websockets` library's close_timeout default.
CLOSE_TIMEOUT_S = 10.0
# Bytes a client may send before the app accepts (frames pipelined behind the
# handshake); past this, reading pauses until the 101 is out.
_PENDING_MAX = 64 * 1024
_CLOSE_ABNORMAL = 1006


class Phase(enum.Enum):
    HANDSHAKE = 1  # the app has websocket.connect and has not answered
    OPEN = 2  # the 101 went out; frames flow
    CLOSING = 3  # our Close (or an HTTP denial) is going out; waiting for the peer
    TCP_CLOSING = 4  # all said: we closed our side of TCP, waiting for the peer's
    CLOSED = 5  # connection_lost


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection on one transport; see the module docstring.

    Args:
        app: the ASGI app (already a single callable).
        scope: the ``websocket`` scope.
        handshake: the validated handshake (key, subprotocols, deflate).
        config: the server configuration.
        state: the server state (registry, tick, default headers).
    """

    __slots__ = (
        "_app_paused",
        "_drain",
        "_pending",
        "_ping_outstanding",
        "_reading_paused",
        "_response_chunked",
        "_response_head_sent",
        "_write_paused",
        "_writelines",
        "app",
        "config",
        "conn",
        "cycle",
        "deadline",
        "handshake",
        "loop",
        "phase",
        "state",
        "task",
        "transport",
    )

    _writelines: Callable[[Iterable[bytes]], None]  # set by start, with the transport

    def __init__(
        self,
        app: ASGIApp,
        scope: Scope,
        handshake: Handshake,
        config: Config,
        state: ServerState,
    ) -> None:
        self.app = app
        self.handshake = handshake
        self.config = config
        self.state = state
        self.cycle = WebSocketCycle(scope, self, config.ws_max_queue)
        self.phase = Phase.HANDSHAKE
        self.conn: Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None
        self._pending = b""
        self._reading_paused = False
        self._app_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._ping_outstanding = False
        self._response_head_sent = False
        self._response_chunked = False

    # -- taking over the transport -------------------------------------------------

    def start(self, transport: asyncio.Transport, buffered: bytes) -> None:
        """Adopt ``transport`` (already switched to us) and run the app.

        ``buffered`` holds bytes read past the request head; they are frames
        the client sent right behind the handshake and wait for the accept.
        """
        self.transport = transport
        self._writelines = writelines_for(transport)
        loop = self.loop = asyncio.get_running_loop()
        self.state.add_connection(self)
        self.state.start_clock(loop)
        if buffered:
            self.data_received(buffered)
        task = self.task = loop.create_task(self.cycle.run(self.app))
        tasks = self.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # ``set_protocol`` does not call this; ``start`` adopts the transport.
        pass

    # -- reading -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            if self.phase is Phase.HANDSHAKE:
                self._pending += data
                if len(self._pending) > _PENDING_MAX:
                    self.pause_reading()
            # After a denial, whatever the client sends is ignored.
            return
        conn.receive_data(data)
        events = conn.events_received()
        out = conn.data_to_send()
        if out:
            self._writelines(out)
        cycle = self.cycle
        for event in events:
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                cycle.deliver(event.data)  # type: ignore[union-attr]  # narrowed by kind
            elif kind is Pong and self._ping_outstanding:
                self._ping_outstanding = False
                self._arm_keepalive()
            # Ping was answered by the codec; CloseReceived and ConnectionFailed
            # set conn.close_transport, handled once below.
        if conn.close_transport:
            self._finish_close(conn)

    def eof_received(self) -> bool | None:
        conn = self.conn
        if conn is not None:
            conn.receive_eof()
        # Returning None lets the transport close itself; connection_lost follows.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = Phase.CLOSED
        self.deadline = None
        self.state.remove_connection(self)
        conn = self.conn
        if conn is not None and conn.close_code is not None:
            self.cycle.peer_closed(conn.close_code, conn.close_reason)
        else:
            self.cycle.peer_closed(_CLOSE_ABNORMAL)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _lost(self) -> bool:
        return self.phase is Phase.CLOSED

    def _finish_close(self, conn: Connection) -> None:
        """The close handshake is over (or failed): tell the app, close TCP."""
        self.cycle.peer_closed(
            conn.close_code if conn.close_code is not None else _CLOSE_ABNORMAL,
            conn.close_reason,
        )
        self._close_tcp()

    def _close_tcp(self) -> None:
        phase = self.phase
        if phase is Phase.TCP_CLOSING or phase is Phase.CLOSED:
            return
        self.phase = Phase.TCP_CLOSING
        transport = self.transport
        assert transport is not None
        # RFC 6455 §7.1.1: the server closes TCP first. A FIN (write_eof) lets the
        # Close frame arrive intact; closing with unread input would send a RST.
        # Either way the close timeout bounds the wait for the peer.
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        self._arm(CLOSE_TIMEOUT_S)

    # -- flow control ----------------------------------------------------------------

    # Reading pauses for either of two reasons: the cycle asks (queue full, or
    # bytes held before the accept) or the write buffer is above its high-water
    # mark. The second bounds what a peer that sends but never reads can make us
    # buffer (pongs, close echoes): no read, no answer to queue.

    def pause_reading(self) -> None:
        self._app_paused = True
        self._update_reading()

    def resume_reading(self) -> None:
        self._app_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        paused = self._app_paused or self._write_paused
        if paused is not self._reading_paused:
            # Tracked here: uvloop raises on a double pause.
            self._reading_paused = paused
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- the sink the cycle drives (WebSocketSink) ---------------------------------

    def accept(self, subprotocol: str | None, headers: HeaderList) -> None:
        if self.phase is not Phase.HANDSHAKE:
            raise ClientDisconnected("the connection is closed")
        head = build_accept_response(self.handshake, subprotocol, headers)
        if isinstance(head, Rejection):
            raise ASGIMessageError(head.reason)
        transport = self.transport
        assert transport is not None
        transport.write(head)
        self.conn = Connection(
            max_size_bytes=self.config.ws_max_size_bytes, deflate=self.handshake.deflate
        )
        self.phase = Phase.OPEN
        self._arm_keepalive()
        # Resume before parsing what was held: if those messages fill the queue,
        # the cycle's pause must be the last word.
        self.resume_reading()
        pending = self._pending
        if pending:
            self._pending = b""
            self.data_received(pending)

    def send_data(self, data: str | bytes) -> Awaitable[None] | None:
        conn = self.conn
        if self.phase is not Phase.OPEN or conn is None or conn.state is not State.OPEN:
            raise ClientDisconnected("the websocket is closed")
        if type(data) is str:
            conn.send_text(data)
        else:
            conn.send_binary(data)  # type: ignore[arg-type]  # str handled above
        transport = self.transport
        assert transport is not None
        out = conn.data_to_send()
        if len(out) == 1:
            transport.write(out[0])
        else:
            self._writelines(out)
        if self._write_paused:
            return self._wait_drained()
        return None

    async def _wait_drained(self) -> None:
        drain = self._drain
        if drain is None or drain.done():
            assert self.loop is not None
            drain = self._drain = self.loop.create_future()
        # Several app tasks may wait on the one future: a cancelled waiter must
        # not cancel it for the others.
        await asyncio.shield(drain)
        if self._lost():
            raise ClientDisconnected("the connection was lost while sending")

    def close(self, code: int, reason: str) -> None:
        conn = self.conn
        if self.phase is not Phase.OPEN or conn is None or conn.state is not State.OPEN:
            return
        conn.send_close(code, reason)
        self._writelines(conn.data_to_send())
        self.phase = Phase.CLOSING
        self._ping_outstanding = False
        self._arm(CLOSE_TIMEOUT_S)

    def send_response(self, status: int, headers: HeaderList, body: bytes, more: bool) -> None:
        if self.phase is Phase.CLOSED:
            raise ClientDisconnected("the connection is closed")
        parts: list[bytes] = []
        if not self._response_head_sent:
            if self.phase is not Phase.HANDSHAKE:
                return
            parts.append(self._response_head(status, headers, body, more))
            self._response_head_sent = True
            self.phase = Phase.CLOSING
        if self._response_chunked:
            if body:
                parts += (b"%x\r\n" % len(body), body, b"\r\n")
            if not more:
                parts.append(wire.LAST_CHUNK)
        elif body:
            parts.append(body)
        self._writelines(parts)
        if not more:
            self._close_after_response()

    def _response_head(self, status: int, headers: HeaderList, body: bytes, more: bool) -> bytes:
        encoded, content_length, _, overrides = wire.encode_headers(headers)
        head = [wire.STATUS_LINES[status], *encoded]
        if content_length < 0:
            if more:
                self._response_chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
            else:
                head.append(b"content-length: %d\r\n" % len(body))
        # The connection ends with the answer: it was never going to be HTTP again.
        head.append(b"connection: close\r\n")
        head.append(wire.default_headers_without(self.state.default_headers, overrides))
        head.append(wire.CRLF)
        return b"".join(head)

    def _close_after_response(self) -> None:
        """The HTTP answer is out: the app hears 1006, the transport lingers."""
        self.cycle.peer_closed(_CLOSE_ABNORMAL)
        transport = self.transport
        assert transport is not None
        self.phase = Phase.CLOSED
        self.deadline = None
        self._pending = b""
        self.state.remove_connection(self)
        LingeringClose(self.state).start(transport, self._reading_paused)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()

    # -- keepalive, close timeout, shutdown (ServerState's tick) ------------------

    def _arm(self, seconds: float) -> None:
        assert self.loop is not None
        self.deadline = self.loop.time() + seconds

    def _arm_keepalive(self) -> None:
        interval = self.config.ws_ping_interval_s
        if interval > 0:
            self._arm(interval)
        else:
            self.deadline = None

    def on_deadline(self) -> None:
        phase = self.phase
        if phase is Phase.OPEN:
            conn = self.conn
            assert conn is not None
            if self._ping_outstanding:
                # No pong within ws_ping_timeout_s: the peer is gone or stuck.
                self._fail_keepalive(conn)
                return
            conn.send_ping(b"")
            self._writelines(conn.data_to_send())
            timeout = self.config.ws_ping_timeout_s
            if timeout > 0:
                self._ping_outstanding = True
                self._arm(timeout)
            else:
                self._arm_keepalive()
        elif phase is Phase.CLOSING or phase is Phase.TCP_CLOSING:
            # The peer never finished the close handshake (or never read the answer).
            self.deadline = None
            self.abort()
        else:
            self.deadline = None

    def _fail_keepalive(self, conn: Connection) -> None:
        # websockets and uvicorn report a keepalive timeout as 1011; the peer
        # will most likely never read the frame, so the transport goes at once.
        self.deadline = None
        conn.send_close(1011, "keepalive ping timeout")
        transport = self.transport
        assert transport is not None
        self._writelines(conn.data_to_send())
        self.cycle.peer_closed(1011, "keepalive ping timeout")
        self.phase = Phase.TCP_CLOSING
        transport.close()
        self._arm(CLOSE_TIMEOUT_S)

    def shutdown(self) -> None:
        """Server shutdown: Close 1001 (RFC 6455 §7.4.1 "going away")."""
        phase = self.phase
        if phase is Phase.OPEN:
            self.close(1001, "server shutting down")
        elif phase is Phase.HANDSHAKE:
            self.cycle.peer_closed(1001, "server shutting down")
            transport = self.transport
            assert transport is not None
            transport.write(wire.error_response(503, self.state.default_headers))
            self.phase = Phase.CLOSING
            self._close_after_response()
