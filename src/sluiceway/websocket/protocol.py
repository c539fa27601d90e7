"""The asyncio adapter of one WebSocket: carrier <-> ``Connection`` <-> ``WebSocketCycle``.

The adapter knows nothing of the HTTP version under it. It talks to its
carrier through ``websocket/carrier.py``'s ``WebSocketCarrier`` (the
upgraded HTTP/1.1 connection, ``http1/ws_carrier.py``; later an HTTP/2
stream, RFC 8441), which writes the handshake's answer or the denial in its
own HTTP version, moves the frame bytes and ends its side its own way. The
carrier's owner validates the handshake, builds the scope, creates a
``WebSocketAdapter`` and calls ``start(carrier, buffered)``; the carrier then
feeds ``receive_data``/``receive_eof``/``connection_lost`` and
``pause_writing``/``resume_writing``. Per read the adapter does what the
codec's docstring asks, in order: feed the bytes, take the events, write the
pending bytes, act on the events (after the ``websockets`` asyncio adapter).

Phases (``Phase``): HANDSHAKE (the app has ``websocket.connect`` and has not
answered; bytes that arrive are held), OPEN (the accept went out; frames
flow), CLOSING (our Close or the HTTP denial is going out), HALF_CLOSED (all
said: our side of the carrier is closed, the peer's close is awaited under the
close timeout), CLOSED (the carrier is gone, or ended by a complete denial).

A refused handshake (the app's denial or 403, the 503 of a shutdown) ends
with an HTTP answer, the carrier's ``deny``; once the answer is complete the
carrier ends on its own (HTTP/1.1: a lingering close, so that no RST destroys
the answer while the client is still sending) and the adapter is done.

Timers: none of its own. Keepalive pings, the ping timeout and the close
timeout are one absolute ``deadline`` that ``ServerState``'s shared tick
checks (``on_deadline``), the contract HTTP/1 connections use for keep-alive:
an idle connection holds a float, not a timer handle or a task.

Flow control: ``send_data`` awaits while the carrier's write buffer is above
its high-water mark (``pause_writing``/``resume_writing``), and reading pauses
meanwhile, so a peer that floods pings and never reads cannot grow the buffer
of pongs without limit. The cycle asks for reading to pause once
``ws_max_queue`` messages wait for the app, and before the app accepts, at
most ``_PENDING_MAX`` bytes are held. The carrier's ``write`` and
``writelines`` are bound once, in ``start``: no extra call per message.

Shutdown: ``shutdown()`` sends Close 1001 (going away) to an open connection
and answers 503 to one still in the handshake; the close timeout bounds it.

Access log (``accesslog.log_websocket``, checked once per WebSocket): one
line when the handshake is answered (``[accepted]``, or the refusal's status
with the time it took), and for an accepted one a line when the carrier is
gone, with the close code the app heard and the session's duration.

Imports ``accesslog``, ``asgi``, ``errors``, ``connection.state`` and ``config``
(types only), ``connection.metrics`` (with ``--metrics-port`` only) and the
sibling ``websocket`` modules; nothing of ``http1`` or ``http2``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from sluiceway import accesslog
from sluiceway.asgi.types import ASGIApp, HeaderList, Scope
from sluiceway.asgi.websocket import WebSocketCycle
from sluiceway.errors import ClientDisconnected
from sluiceway.websocket.connection import (
    BytesMessage,
    Connection,
    Pong,
    State,
    TextMessage,
)

if TYPE_CHECKING:
    from sluiceway.config import Config
    from sluiceway.connection.state import ServerState
    from sluiceway.websocket.carrier import WebSocketCarrier
    from sluiceway.websocket.deflate import DeflateParams

logger = logging.getLogger("sluiceway.error")

# RFC 6455 §7.1.1 leaves the wait for the peer's Close to the endpoint; 10 s is
# the `websockets` library's close_timeout default.
CLOSE_TIMEOUT_S = 10.0
# Bytes a client may send before the app accepts (frames pipelined behind the
# handshake); past this, reading pauses until the accept is out.
_PENDING_MAX = 64 * 1024
_CLOSE_ABNORMAL = 1006
# The 503 of a shutdown during the handshake, as HTTP/1's error replies read.
_TEXT_PLAIN: HeaderList = [(b"content-type", b"text/plain; charset=utf-8")]


class Phase(enum.Enum):
    HANDSHAKE = 1  # the app has websocket.connect and has not answered
    OPEN = 2  # the accept went out; frames flow
    CLOSING = 3  # our Close (or an HTTP denial) is going out; waiting for the peer
    HALF_CLOSED = 4  # all said: we closed our side of the carrier, waiting for the peer's
    CLOSED = 5  # connection_lost, or a complete denial


class WebSocketAdapter:
    """One WebSocket over one carrier; see the module docstring.

    Args:
        app: the ASGI app (already a single callable).
        scope: the ``websocket`` scope.
        deflate: the agreed permessage-deflate parameters, or None.
        config: the server configuration.
        state: the server state (registry, tick).
    """

    __slots__ = (
        "_access",
        "_app_paused",
        "_drain",
        "_opened_at",
        "_pending",
        "_ping_outstanding",
        "_response_head_sent",
        "_write",
        "_write_paused",
        "_writelines",
        "app",
        "carrier",
        "config",
        "conn",
        "cycle",
        "deadline",
        "deflate",
        "loop",
        "phase",
        "state",
        "task",
    )

    # The carrier's, bound once by start: the hot path pays no lookup on the carrier.
    _write: Callable[[bytes], None]
    _writelines: Callable[[Iterable[bytes]], None]

    def __init__(
        self,
        app: ASGIApp,
        scope: Scope,
        deflate: DeflateParams | None,
        config: Config,
        state: ServerState,
    ) -> None:
        self.app = app
        self.deflate = deflate
        self.config = config
        self.state = state
        self.cycle = WebSocketCycle(scope, self, config.ws_max_queue)
        self.phase = Phase.HANDSHAKE
        self.conn: Connection | None = None
        self.carrier: WebSocketCarrier | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task: asyncio.Task[None] | None = None
        self.deadline: float | None = None
        self._pending = b""
        self._app_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._ping_outstanding = False
        self._response_head_sent = False
        self._access = False
        self._opened_at = 0.0

    # -- taking over the carrier ---------------------------------------------------

    def start(self, carrier: WebSocketCarrier, buffered: bytes) -> None:
        """Run over ``carrier`` (already delivering to us) and start the app.

        ``buffered`` holds bytes that came with the handshake (HTTP/1.1: read
        past the request head); they are frames that wait for the accept.
        Registers in ``state.connections`` (``server/listener.py``'s contract).
        """
        self.carrier = carrier
        self._write = carrier.write
        self._writelines = carrier.writelines
        loop = self.loop = asyncio.get_running_loop()
        # Checked once per WebSocket, as HTTP/1 checks once per connection.
        self._access = self.config.access_log and accesslog.access_enabled()
        self._opened_at = loop.time()
        self.state.add_connection(self)
        self.state.start_clock(loop)
        if buffered:
            self.receive_data(buffered)
        app = self.app
        metrics = self.state.metrics
        if metrics is not None:  # --metrics-port: count what the app raises
            from sluiceway.connection.metrics import counting_exceptions

            app = counting_exceptions(app, metrics)
        task = self.task = loop.create_task(self.cycle.run(app))
        tasks = self.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    # -- reading (the carrier calls these) -------------------------------------------

    def receive_data(self, data: bytes) -> None:
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

    def receive_eof(self) -> None:
        """The peer sends no more; the carrier ends itself and reports ``connection_lost``."""
        conn = self.conn
        if conn is not None:
            conn.receive_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        """The carrier is gone: the app hears the close code, drainers wake."""
        self.phase = Phase.CLOSED
        self.deadline = None
        self.state.remove_connection(self)
        conn = self.conn
        if conn is not None and conn.close_code is not None:
            self.cycle.peer_closed(conn.close_code, conn.close_reason)
        else:
            self.cycle.peer_closed(_CLOSE_ABNORMAL)
        if self._access and conn is not None:
            self._log_access(f"[closed {self.cycle.close_code}]", timed=True)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _lost(self) -> bool:
        return self.phase is Phase.CLOSED

    def _finish_close(self, conn: Connection) -> None:
        """The close handshake is over (or failed): tell the app, close the carrier."""
        self.cycle.peer_closed(
            conn.close_code if conn.close_code is not None else _CLOSE_ABNORMAL,
            conn.close_reason,
        )
        self._close_carrier(await_peer=True)

    def _close_carrier(self, await_peer: bool) -> None:
        phase = self.phase
        if phase is Phase.HALF_CLOSED or phase is Phase.CLOSED:
            return
        self.phase = Phase.HALF_CLOSED
        carrier = self.carrier
        assert carrier is not None
        # RFC 6455 §7.1.1: the server closes first; the close timeout bounds the
        # wait for the peer's side.
        carrier.close(await_peer)
        self._arm(CLOSE_TIMEOUT_S)

    # -- flow control ----------------------------------------------------------------

    # Reading pauses for either of two reasons: the cycle asks (queue full, or
    # bytes held before the accept) or the write buffer is above its high-water
    # mark. The second bounds what a peer that sends but never reads can make us
    # buffer (pongs, close echoes): no read, no answer to queue. The carrier
    # tracks its own paused state (pause and resume are idempotent there).

    def pause_reading(self) -> None:
        self._app_paused = True
        self._update_reading()

    def resume_reading(self) -> None:
        self._app_paused = False
        self._update_reading()

    def _update_reading(self) -> None:
        carrier = self.carrier
        if carrier is None or self.phase is Phase.CLOSED:
            return
        if self._app_paused or self._write_paused:
            carrier.pause_reading()
        else:
            carrier.resume_reading()

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
        carrier = self.carrier
        assert carrier is not None
        # Raises ASGIMessageError with nothing written: the cycle answers 500.
        carrier.accept(subprotocol, headers)
        self.conn = Connection(max_size_bytes=self.config.ws_max_size_bytes, deflate=self.deflate)
        self.phase = Phase.OPEN
        if self._access:
            self._log_access("[accepted]", timed=False)
        self._arm_keepalive()
        # Resume before parsing what was held: if those messages fill the queue,
        # the cycle's pause must be the last word.
        self.resume_reading()
        pending = self._pending
        if pending:
            self._pending = b""
            self.receive_data(pending)

    def send_data(self, data: str | bytes) -> Awaitable[None] | None:
        conn = self.conn
        if self.phase is not Phase.OPEN or conn is None or conn.state is not State.OPEN:
            raise ClientDisconnected("the websocket is closed")
        if type(data) is str:
            conn.send_text(data)
        else:
            conn.send_binary(data)  # type: ignore[arg-type]  # str handled above
        out = conn.data_to_send()
        if len(out) == 1:
            self._write(out[0])
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
        carrier = self.carrier
        assert carrier is not None
        if self._response_head_sent:
            carrier.deny_body(body, more)
        elif self.phase is Phase.HANDSHAKE:
            # Raises ASGIMessageError with nothing written: the cycle answers 500.
            carrier.deny(status, headers, body, more)
            self._response_head_sent = True
            self.phase = Phase.CLOSING
            if self._access:
                self._log_access(str(status), timed=True)
        else:
            return  # the 503 of a shutdown went out instead
        if not more:
            self._denied()

    def _log_access(self, outcome: str, timed: bool) -> None:
        """The access line of the handshake's answer (``[accepted]``, a status) or of the end."""
        assert self.loop is not None
        scope = self.cycle.scope
        accesslog.log_websocket(
            accesslog.format_client(scope.get("client")),
            accesslog.websocket_line(scope),
            outcome,
            self.loop.time() - self._opened_at if timed else None,
        )

    def _denied(self) -> None:
        """The HTTP answer is complete and the carrier ends on its own: the app hears 1006."""
        self.cycle.peer_closed(_CLOSE_ABNORMAL)
        self.phase = Phase.CLOSED
        self.deadline = None
        self._pending = b""
        self.state.remove_connection(self)

    def abort(self) -> None:
        carrier = self.carrier
        if carrier is not None:
            carrier.abort()

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
        elif phase is Phase.CLOSING or phase is Phase.HALF_CLOSED:
            # The peer never finished the close handshake (or never read the answer).
            self.deadline = None
            self.abort()
        else:
            self.deadline = None

    def _fail_keepalive(self, conn: Connection) -> None:
        # websockets and uvicorn report a keepalive timeout as 1011; the peer
        # will most likely never read the frame, so the carrier goes at once,
        # without waiting for the peer's side.
        conn.send_close(1011, "keepalive ping timeout")
        self._writelines(conn.data_to_send())
        self.cycle.peer_closed(1011, "keepalive ping timeout")
        self._close_carrier(await_peer=False)

    def shutdown(self) -> None:
        """Server shutdown: Close 1001 (RFC 6455 §7.4.1 "going away")."""
        phase = self.phase
        if phase is Phase.OPEN:
            self.close(1001, "server shutting down")
        elif phase is Phase.HANDSHAKE:
            self.cycle.peer_closed(1001, "server shutting down")
            # Not the app's answer: the cycle is closed, so it sends no other.
            self.send_response(503, _TEXT_PLAIN, b"Service Unavailable", False)
