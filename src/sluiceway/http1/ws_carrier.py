"""The HTTP/1.1 carrier of one WebSocket: the upgraded TCP transport (RFC 6455 §4).

``http1/upgrade.py`` makes a ``WebSocketAdapter`` and an ``HTTP1Carrier`` for a
valid handshake; ``carry`` switches the transport to the carrier and starts
the adapter. From then on this object is the transport's protocol and
implements ``websocket/carrier.py``'s ``WebSocketCarrier``: the 101 answer,
an HTTP/1.1 denial followed by a lingering close, frame bytes out, and TCP's
half-close and abort. The adapter above it knows nothing of HTTP/1.1.

Hot path, bound once (no extra call per read or per message): the
transport's ``data_received`` is the adapter's ``receive_data`` itself (an
instance attribute, set before ``set_protocol``: uvloop caches the bound
method there), and ``write``/``writelines`` are the transport's own (through
``transport/flow.py``'s ``writelines_for``: asyncio's ``writelines`` on
CPython 3.12.0-3.12.8 and 3.13.0-3.13.1 never calls ``pause_writing``).

Invariants: reading is paused or resumed on the transport only on a change
(uvloop raises on a double pause) and never once it is closing; a complete
denial hands the transport to ``transport/linger.py``'s ``LingeringClose``,
after which the adapter hears nothing more from here.

Imports ``asgi.types``, ``errors``, ``http1.wire`` (the denial's head),
``transport`` and ``websocket`` (handshake, adapter types); never
``http1.protocol``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sluiceway.errors import ASGIMessageError
from sluiceway.http1 import wire
from sluiceway.transport.flow import writelines_for
from sluiceway.transport.linger import LingeringClose
from sluiceway.websocket.handshake import Handshake, Rejection, build_accept_response

if TYPE_CHECKING:
    from sluiceway.asgi.types import HeaderList
    from sluiceway.connection.state import ServerState
    from sluiceway.websocket.protocol import WebSocketAdapter


class HTTP1Carrier(asyncio.BaseProtocol):
    """One upgraded HTTP/1.1 connection carrying ``adapter``'s WebSocket.

    Args:
        transport: the connection's transport (not yet switched to us).
        adapter: the WebSocket it carries.
        handshake: the validated request (its key answers in the 101).
        state: the server state (default headers, the lingering close).
    """

    __slots__ = (
        "_chunked",
        "_reading_paused",
        "adapter",
        "data_received",
        "handshake",
        "state",
        "transport",
        "write",
        "writelines",
    )

    def __init__(
        self,
        transport: asyncio.Transport,
        adapter: WebSocketAdapter,
        handshake: Handshake,
        state: ServerState,
    ) -> None:
        self.transport = transport
        self.adapter = adapter
        self.handshake = handshake
        self.state = state
        # asyncio.BaseProtocol has no data_received: the transports look it up
        # by name, and find the adapter's method with no frame of ours between.
        self.data_received: Callable[[bytes], None] = adapter.receive_data
        self.write: Callable[[bytes], None] = transport.write
        self.writelines: Callable[[Iterable[bytes]], None] = writelines_for(transport)
        self._reading_paused = False
        self._chunked = False

    # -- the transport's side (asyncio.Protocol) -----------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass  # set_protocol does not call this; the transport came with __init__

    def eof_received(self) -> bool | None:
        self.adapter.receive_eof()
        # None lets the transport close itself; connection_lost follows.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.adapter.connection_lost(exc)

    def pause_writing(self) -> None:
        self.adapter.pause_writing()

    def resume_writing(self) -> None:
        self.adapter.resume_writing()

    # -- the adapter's side (WebSocketCarrier) ---------------------------------------

    def accept(self, subprotocol: str | None, headers: HeaderList) -> None:
        head = build_accept_response(self.handshake, subprotocol, headers)
        if isinstance(head, Rejection):
            raise ASGIMessageError(head.reason)
        # Date and Server as on every other response, unless the app set its own.
        overrides = 0
        for name, _ in headers:
            lower = name.lower()
            if lower == b"date":
                overrides |= 1 << wire.DATE
            elif lower == b"server":
                overrides |= 1 << wire.SERVER
        defaults = wire.default_headers_without(self.state.default_headers, overrides)
        # The head ends with its blank line: the defaults go in before it.
        self.transport.write(head[:-2] + defaults + wire.CRLF)

    def deny(self, status: int, headers: HeaderList, body: bytes, more: bool) -> None:
        # Built whole before anything is written: a bad header raises with the
        # wire untouched, and the cycle can still answer 500.
        encoded, content_length, _, overrides = wire.encode_headers(headers)
        head = [wire.STATUS_LINES[status], *encoded]
        if content_length < 0:
            if more:
                self._chunked = True
                head.append(b"transfer-encoding: chunked\r\n")
            else:
                head.append(b"content-length: %d\r\n" % len(body))
        # The connection ends with the answer: it was never going to be HTTP again.
        head.append(b"connection: close\r\n")
        head.append(wire.default_headers_without(self.state.default_headers, overrides))
        head.append(wire.CRLF)
        self._send_body(b"".join(head), body, more)

    def deny_body(self, body: bytes, more: bool) -> None:
        self._send_body(b"", body, more)

    def _send_body(self, head: bytes, body: bytes, more: bool) -> None:
        parts = [head] if head else []
        if self._chunked:
            if body:
                parts += (wire.chunk_header(len(body)), body, wire.CRLF)
            if not more:
                parts.append(wire.LAST_CHUNK)
        elif body:
            parts.append(body)
        self.writelines(parts)
        if not more:
            # RFC 9112 §9.6: the client may still be sending; see transport/linger.py.
            LingeringClose(self.state).start(self.transport, self._reading_paused)

    def pause_reading(self) -> None:
        self._set_reading_paused(True)

    def resume_reading(self) -> None:
        self._set_reading_paused(False)

    def _set_reading_paused(self, paused: bool) -> None:
        transport = self.transport
        if paused is self._reading_paused or transport.is_closing():
            return
        # Tracked here: uvloop raises on a double pause.
        self._reading_paused = paused
        if paused:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def close(self, await_peer: bool) -> None:
        transport = self.transport
        # RFC 6455 §7.1.1: the server closes TCP first. A FIN (write_eof) lets the
        # Close frame arrive intact, where closing with unread input would send a
        # RST; reading goes on until the peer's FIN. TLS cannot half-close.
        if await_peer and transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def abort(self) -> None:
        self.transport.abort()


def carry(
    transport: asyncio.Transport,
    adapter: WebSocketAdapter,
    handshake: Handshake,
    state: ServerState,
    buffered: bytes,
) -> HTTP1Carrier:
    """Switch ``transport`` to a new carrier of ``adapter`` and start it.

    ``buffered`` holds the bytes read past the request head: frames the client
    sent right behind the handshake, held by the adapter until the accept.
    """
    carrier = HTTP1Carrier(transport, adapter, handshake, state)
    transport.set_protocol(carrier)
    adapter.start(carrier, buffered)
    return carrier
