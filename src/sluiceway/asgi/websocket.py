"""``WebSocketCycle``: the ASGI side of one WebSocket, as a named state machine.

The cycle checks every message the application sends against the ASGI
WebSocket spec (www.rst, spec version 2.5, and the ``websocket.http.response``
denial extension of extensions.rst) and turns the valid ones into calls on a
``WebSocketSink``: the transport-side adapter (``websocket/protocol.py``). It
also holds the messages waiting for ``receive()``. It never touches bytes,
sockets or the codec.

States (``WSState``) and what moves between them::

    CONNECTING --websocket.accept-------------------------> CONNECTED
    CONNECTING --websocket.close--------------------------> CLOSED   (HTTP 403)
    CONNECTING --websocket.http.response.start------------> RESPONSE
    RESPONSE   --websocket.http.response.body more=False--> CLOSED
    CONNECTED  --websocket.close--------------------------> CLOSED   (close frame)
    any        --peer gone (``peer_closed``)--------------> CLOSED

Invariants:

* ``websocket.connect`` is the first message ``receive()`` returns, exactly once.
* After CLOSED, ``send()`` raises ``ClientDisconnected`` (an ``OSError``, ASGI
  2.4+), which ``run`` swallows without logging, as the spec asks.
* A malformed or out-of-order message raises ``ASGIMessageError`` in the app.
* ``run`` maps app failure to the wire: before accepting, HTTP 500 (the app
  failed: a server error, not a denial; 403 is kept for an explicit
  ``websocket.close``); after accepting, close 1011; both are logged. An app
  that returns while connected gets a normal close 1000.
* The inbound queue holds at most ``max_queue`` messages before the sink is
  asked to pause reading; it resumes when the app catches up. With the
  per-read chunk bound of the transport, memory stays bounded.

Imports only ``asgi.types``, ``errors`` and the standard library.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections import deque
from collections.abc import Awaitable
from typing import Protocol

from sluiceway.asgi.types import ASGIApp, HeaderList, Message, Scope
from sluiceway.errors import ASGIMessageError, ClientDisconnected

logger = logging.getLogger("sluiceway.error")

# RFC 6455 §7.4.1/§7.4.2: codes an endpoint may send. 1004-1006 and 1015 are
# reserved and must never appear on the wire; 3000-4999 are for libraries and
# applications.
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011})
_SENDABLE_CLOSE_CODES_SERVER = _SENDABLE_CLOSE_CODES | {1012, 1013, 1014}

# Headers the server owns in a 101 answer: letting the app set them would
# break the handshake (ASGI www.rst "Accept": no sec-websocket-protocol).
_RESERVED_ACCEPT_HEADERS = frozenset(
    {
        b"sec-websocket-protocol",
        b"sec-websocket-accept",
        b"sec-websocket-extensions",
        b"upgrade",
        b"connection",
        b"content-length",
        b"transfer-encoding",
    }
)

_CONNECT: Message = {"type": "websocket.connect"}


class WSState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RESPONSE = "response"  # the app is sending an HTTP denial response
    CLOSED = "closed"


class WebSocketSink(Protocol):
    """What the cycle asks of the transport side (``websocket/protocol.py``)."""

    def accept(self, subprotocol: str | None, headers: HeaderList) -> None:
        """Finish the handshake: write the 101 answer and start framing."""

    def send_response(self, status: int, headers: HeaderList, body: bytes, more: bool) -> None:
        """Write an HTTP answer instead of the 101, or one more part of its body."""

    def send_data(self, data: str | bytes) -> Awaitable[None] | None:
        """Send one text/binary message.

        Returns None when the write buffer has room (the hot path costs no
        coroutine), else an awaitable that completes once it has.
        """

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (RFC 6455 §7.1.2)."""

    def abort(self) -> None:
        """Drop the connection now (an HTTP answer cut short)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class WebSocketCycle:
    """One WebSocket connection as the application sees it.

    Args:
        scope: the ``websocket`` scope handed to the app.
        sink: the transport side.
        max_queue: messages held for ``receive()`` before reading pauses.
    """

    __slots__ = (
        "_connect_sent",
        "_disconnect",
        "_paused",
        "_queue",
        "_response_headers",
        "_response_started",
        "_response_status",
        "_waiter",
        "max_queue",
        "scope",
        "sink",
        "state",
    )

    def __init__(self, scope: Scope, sink: WebSocketSink, max_queue: int) -> None:
        self.scope = scope
        self.sink = sink
        self.max_queue = max_queue
        self.state = WSState.CONNECTING
        self._connect_sent = False
        # Created on first use: an idle connection costs no deque or future.
        self._queue: deque[Message] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._disconnect: Message | None = None
        self._response_status = 0
        self._response_headers: HeaderList = []
        self._response_started = False

    @property
    def close_code(self) -> int | None:
        """The code of the ``websocket.disconnect`` the app hears, once the connection is over."""
        disconnect = self._disconnect
        return None if disconnect is None else int(disconnect["code"])

    # -- running the app ---------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        """Run the app to its end and map how it ended onto the wire."""
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            # ASGI www.rst: an OSError we raised is no server-log error.
            self._app_done(failed=False)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                self._app_done(failed=False)
                raise
            logger.error("Exception in ASGI application (websocket)", exc_info=exc)
            self._app_done(failed=True)
        else:
            if self.state is WSState.CONNECTING or self.state is WSState.RESPONSE:
                logger.error("ASGI application returned without accepting or closing the websocket")
            self._app_done(failed=False)

    def _app_done(self, failed: bool) -> None:
        # If the peer left while we answer, there is nothing more to say.
        with contextlib.suppress(ClientDisconnected):
            self._answer_app_end(failed)

    def _answer_app_end(self, failed: bool) -> None:
        state = self.state
        self.state = WSState.CLOSED
        if state is WSState.CONNECTING or (
            state is WSState.RESPONSE and not self._response_started
        ):
            # Nothing reached the client yet: it can still get a whole answer.
            self.sink.send_response(
                500,
                [(b"content-type", b"text/plain; charset=utf-8")],
                b"Internal Server Error",
                False,
            )
        elif state is WSState.RESPONSE:
            # Part of the app's denial is out: only cutting it short is honest.
            self.sink.abort()
        elif state is WSState.CONNECTED:
            self.sink.close(1011 if failed else 1000, "")

    # -- receive -------------------------------------------------------------

    async def receive(self) -> Message:
        if not self._connect_sent:
            self._connect_sent = True
            return dict(_CONNECT)
        while True:
            queue = self._queue
            if queue:
                message = queue.popleft()
                if self._paused and len(queue) < self.max_queue:
                    self._paused = False
                    self.sink.resume_reading()
                return message
            if self._disconnect is not None:
                return dict(self._disconnect)
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def deliver(self, data: str | bytes) -> None:
        """Queue one complete message from the peer for ``receive()``."""
        if self._disconnect is not None:
            return
        if isinstance(data, str):
            message: Message = {"type": "websocket.receive", "text": data}
        else:
            message = {"type": "websocket.receive", "bytes": data}
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        queue.append(message)
        if len(queue) >= self.max_queue and not self._paused:
            self._paused = True
            self.sink.pause_reading()
        self._wake()

    def peer_closed(self, code: int, reason: str = "") -> None:
        """The connection is over: the app's next ``receive()`` past the queue
        gets ``websocket.disconnect``, and ``send()`` raises from now on."""
        if self._disconnect is not None:
            return
        self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
        # Nothing more can reach the peer, whatever the app was doing.
        self.state = WSState.CLOSED
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- send ----------------------------------------------------------------

    async def send(self, message: Message) -> None:
        try:
            kind = message["type"]
        except (KeyError, TypeError):
            raise ASGIMessageError(f"ASGI message without a 'type': {message!r:.100}") from None
        state = self.state
        if state is WSState.CONNECTED:
            if kind == "websocket.send":
                data = _message_data(message)
                if self._disconnect is not None:
                    raise ClientDisconnected("the websocket is closed")
                drain = self.sink.send_data(data)
                if drain is not None:
                    await drain
            elif kind == "websocket.close":
                code, reason = _close_args(message)
                self.state = WSState.CLOSED
                self.sink.close(code, reason)
            else:
                raise ASGIMessageError(f"{kind!r} is not allowed once the websocket is accepted")
        elif state is WSState.CONNECTING:
            if self._disconnect is not None:
                raise ClientDisconnected("the client went away during the handshake")
            if kind == "websocket.accept":
                subprotocol, headers = self._accept_args(message)
                # The sink may still refuse (ASGIMessageError): stay CONNECTING, run() answers 500.
                self.sink.accept(subprotocol, headers)
                self.state = WSState.CONNECTED
            elif kind == "websocket.close":
                # ASGI www.rst "Close": before accept, HTTP 403 and no handshake.
                self.sink.send_response(403, [], b"", False)
                self.state = WSState.CLOSED
            elif kind == "websocket.http.response.start":
                self._response_status, self._response_headers = _response_start_args(message)
                self.state = WSState.RESPONSE
            else:
                raise ASGIMessageError(
                    f"{kind!r} is not allowed before the websocket is accepted; expected "
                    "'websocket.accept', 'websocket.close' or 'websocket.http.response.start'"
                )
        elif state is WSState.RESPONSE:
            if kind != "websocket.http.response.body":
                raise ASGIMessageError(
                    f"{kind!r} sent after 'websocket.http.response.start'; "
                    "expected 'websocket.http.response.body'"
                )
            body = message.get("body", b"")
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise ASGIMessageError("'body' of 'websocket.http.response.body' must be bytes")
            more = bool(message.get("more_body", False))
            if self._disconnect is not None:
                raise ClientDisconnected("the client went away")
            # The sink validates the head on the first body: if it raises, nothing
            # went out and run() can still answer 500.
            self.sink.send_response(
                self._response_status, self._response_headers, bytes(body), more
            )
            self._response_started = True
            if not more:
                self.state = WSState.CLOSED
        else:
            if kind not in _KNOWN_SEND_TYPES:
                raise ASGIMessageError(f"unknown ASGI message type {kind!r}")
            raise ClientDisconnected("the websocket is closed")

    def _accept_args(self, message: Message) -> tuple[str | None, HeaderList]:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            if not isinstance(subprotocol, str):
                raise ASGIMessageError("'subprotocol' of 'websocket.accept' must be a str or None")
            # RFC 6455 §4.2.2 /subprotocol/: it must be one the client offered.
            if subprotocol not in self.scope.get("subprotocols", ()):
                raise ASGIMessageError(
                    f"subprotocol {subprotocol!r} was not offered by the client "
                    f"(offered: {self.scope.get('subprotocols', [])!r})"
                )
        headers = _headers_arg(message, "websocket.accept")
        for name, _ in headers:
            if name.lower() in _RESERVED_ACCEPT_HEADERS:
                raise ASGIMessageError(
                    f"'websocket.accept' must not set the {name.decode('latin-1')!r} header"
                    " (the server owns it; use 'subprotocol' for the protocol)"
                )
        return subprotocol, headers


_KNOWN_SEND_TYPES = frozenset(
    {
        "websocket.accept",
        "websocket.send",
        "websocket.close",
        "websocket.http.response.start",
        "websocket.http.response.body",
    }
)


def _message_data(message: Message) -> str | bytes:
    data_bytes = message.get("bytes")
    text = message.get("text")
    # ASGI www.rst "Send": exactly one of bytes/text is non-None.
    if text is not None:
        if data_bytes is not None:
            raise ASGIMessageError("'websocket.send' has both 'bytes' and 'text'; send exactly one")
        if not isinstance(text, str):
            raise ASGIMessageError("'text' of 'websocket.send' must be a str")
        return text
    if data_bytes is None:
        raise ASGIMessageError("'websocket.send' has neither 'bytes' nor 'text'; send exactly one")
    if not isinstance(data_bytes, (bytes, bytearray, memoryview)):
        raise ASGIMessageError("'bytes' of 'websocket.send' must be bytes")
    return bytes(data_bytes)


def _close_args(message: Message) -> tuple[int, str]:
    code = message.get("code", 1000)
    if code is None:
        code = 1000
    if not isinstance(code, int) or isinstance(code, bool):
        raise ASGIMessageError("'code' of 'websocket.close' must be an int")
    if code not in _SENDABLE_CLOSE_CODES_SERVER and not 3000 <= code <= 4999:
        raise ASGIMessageError(f"close code {code} may not be sent (RFC 6455 §7.4)")
    reason = message.get("reason") or ""
    if not isinstance(reason, str):
        raise ASGIMessageError("'reason' of 'websocket.close' must be a str")
    # RFC 6455 §5.5: a control frame payload is at most 125 bytes, 2 of them the code.
    if len(reason.encode("utf-8")) > 123:
        raise ASGIMessageError("'reason' of 'websocket.close' is over 123 bytes in UTF-8")
    return code, reason


def _headers_arg(message: Message, kind: str) -> HeaderList:
    raw = message.get("headers", ())
    if raw is None:
        return []
    headers: HeaderList = []
    try:
        for name, value in raw:
            if not isinstance(name, bytes) or not isinstance(value, bytes):
                raise ASGIMessageError(f"header names and values of {kind!r} must be bytes")
            headers.append((name, value))
    except (TypeError, ValueError):
        raise ASGIMessageError(
            f"'headers' of {kind!r} must be an iterable of (name, value) pairs"
        ) from None
    return headers


def _response_start_args(message: Message) -> tuple[int, HeaderList]:
    status = message.get("status")
    if not isinstance(status, int) or isinstance(status, bool):
        raise ASGIMessageError("'status' of 'websocket.http.response.start' must be an int")
    # A denial is a final answer: 1xx (101 above all) would be no denial.
    if not 200 <= status <= 599:
        raise ASGIMessageError(f"status {status} of 'websocket.http.response.start' is not 200-599")
    return status, _headers_arg(message, "websocket.http.response.start")
