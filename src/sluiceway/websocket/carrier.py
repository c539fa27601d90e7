"""The seam between one WebSocket and whatever carries its bytes: ``WebSocketCarrier``.

``websocket/protocol.py``'s ``WebSocketAdapter`` runs a WebSocket (the codec,
the ASGI cycle, timers, flow control) without knowing what is under it. A
carrier is the other side: the HTTP/1.1 connection that was upgraded
(``http1/ws_carrier.py``: the TCP transport, RFC 6455 §4) or, later, one
HTTP/2 stream opened by an extended CONNECT (RFC 8441). The carrier writes the
handshake's answer in its own HTTP version, moves the frame bytes, and ends
its side in its own way.

The contract, both ways (the adapter keeps to it; a carrier must too):

Carrier -> adapter (after ``adapter.start(carrier, buffered)``):

* ``adapter.receive_data(data)``: bytes from the peer, in order (TCP reads, or
  the payload of HTTP/2 DATA frames). Frames may be cut anywhere. Not called
  while reading is paused, beyond what was already in flight.
* ``adapter.receive_eof()``: the peer sends no more (TCP FIN; HTTP/2
  END_STREAM). The carrier then ends itself (a TCP transport closes once
  ``eof_received`` returns None; an HTTP/2 stream sends END_STREAM if it has
  not yet) and reports ``connection_lost``.
* ``adapter.connection_lost(exc)``: the carrier is gone (TCP closed or reset;
  the stream closed or reset, or its connection lost), once; nothing is called
  after it. Not called once a denial is complete (see ``deny``).
* ``adapter.pause_writing()`` / ``adapter.resume_writing()``: the carrier's
  send buffer crossed its high / low water mark (TCP: the transport's; HTTP/2:
  the stream's queue, which also fills while its flow-control window is shut).

Adapter -> carrier: the methods of ``WebSocketCarrier`` below. The adapter
binds ``write`` and ``writelines`` once, in ``start``: a carrier may make them
instance attributes (the HTTP/1.1 carrier hands over the transport's own
bound methods), which costs nothing per message.

Imports only ``asgi.types`` and the standard library.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sluiceway.asgi.types import HeaderList


class WebSocketCarrier(Protocol):
    """What the WebSocket adapter asks of the connection or stream under it."""

    def accept(self, subprotocol: str | None, headers: HeaderList) -> None:
        """Answer the handshake with success; frames may flow from now on.

        HTTP/1.1: ``101 Switching Protocols`` with ``Sec-WebSocket-Accept``
        (RFC 6455 §4.2.2). HTTP/2: HEADERS with ``:status 200`` and no
        ``Sec-WebSocket-Accept`` (RFC 8441 §5). Both add
        ``Sec-WebSocket-Protocol`` for ``subprotocol`` and
        ``Sec-WebSocket-Extensions`` for an agreed permessage-deflate.

        Args:
            subprotocol: the app's choice, one the client offered, or None.
            headers: the app's extra headers (lower-case names, reserved
                handshake names already refused by ``asgi/websocket.py``).

        Raises:
            ASGIMessageError: the subprotocol or a header cannot go on the
                wire (not a token, CR/LF/NUL). Nothing was written.
        """

    def deny(self, status: int, headers: HeaderList, body: bytes, more: bool) -> None:
        """Refuse the handshake with an HTTP response: its head and first body part.

        HTTP/1.1: status line, the app's headers, ``Content-Length`` (or
        chunked when ``more`` and the app set no length), ``Connection:
        close`` and the server's default headers. HTTP/2: HEADERS, then DATA.

        With ``more`` False the response is complete: the carrier then ends
        on its own (HTTP/1.1: a lingering close, RFC 9112 §9.6; HTTP/2:
        END_STREAM) and never calls the adapter again; the adapter calls
        nothing more on it.

        Raises:
            ASGIMessageError: the head is invalid (headers not bytes pairs,
                CR/LF/NUL, a bad Content-Length). Nothing was written.
        """

    def deny_body(self, body: bytes, more: bool) -> None:
        """One more body part of the denial ``deny`` started; ``more`` as there."""

    def write(self, data: bytes) -> None:
        """Send frame bytes. Never blocks: what cannot go yet is queued, and the
        carrier calls the adapter's ``pause_writing`` while its queue is high."""

    def writelines(self, parts: Iterable[bytes]) -> None:
        """``write`` of each part, in order, in one call (the codec's output)."""

    def pause_reading(self) -> None:
        """Stop delivering ``receive_data`` (TCP: stop reading the socket;
        HTTP/2: stop opening the stream's receive window). Idempotent, and a
        no-op once the carrier is closing."""

    def resume_reading(self) -> None:
        """Undo ``pause_reading``. Idempotent, and a no-op once the carrier is closing."""

    def close(self, await_peer: bool) -> None:
        """End our direction once what was written is flushed; nothing is written after.

        ``await_peer`` True (the close handshake is over, RFC 6455 §7.1.1: the
        server ends first): keep receiving until the peer ends too (TCP: a
        FIN by ``write_eof``, or a full close where the transport cannot
        half-close, as TLS; HTTP/2: END_STREAM). False (a keepalive timeout:
        the peer is not expected to answer): TCP closes outright; HTTP/2 may
        send END_STREAM as for True.

        Either way ``connection_lost`` follows, and the adapter calls
        ``abort`` if it has not come within its close timeout.
        """

    def abort(self) -> None:
        """Drop the carrier now, unsent bytes included (TCP: ``transport.abort()``;
        HTTP/2: RST_STREAM CANCEL). ``connection_lost`` follows, possibly
        from inside this call."""
