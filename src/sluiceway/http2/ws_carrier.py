"""The HTTP/2 carrier of one WebSocket: the stream of an extended CONNECT (RFC 8441).

``http2/websocket.py`` validates the CONNECT, makes a ``WebSocketAdapter`` and
an ``H2Carrier``, and registers the carrier in ``H2Protocol.streams``. From
then on this object is two things at once:

* the connection's ``StreamHandler`` for its stream: DATA payloads go to the
  adapter as frame bytes (``receive_body``), the peer's END_STREAM is TCP's
  FIN (``receive_end``), WINDOW_UPDATEs move what waits (``window_opened``),
  and the peer's RST_STREAM or the connection's loss end it
  (``reset_by_peer``);
* the adapter's ``WebSocketCarrier`` (``websocket/carrier.py``): the answer
  to the handshake is a HEADERS frame with ``:status 200`` and no
  END_STREAM (RFC 8441 §5: no Sec-WebSocket-Accept), a denial is an ordinary
  HTTP/2 response, frame bytes go out as DATA, and the ends are END_STREAM
  (our half-close) and RST_STREAM CANCEL (abort).

Flow control, both ways (RFC 9113 §5.2):

* Sending: ``write`` gives the connection what the stream's and the
  connection's windows take; the rest waits here, cut into pieces of at most
  ``_PIECE`` bytes (a WINDOW_UPDATE moves a window's worth with at most one
  partial piece copied, whatever the message size). Above ``HIGH_WATER``
  waiting bytes the adapter hears ``pause_writing`` (the app's ``send``
  awaits, and the adapter stops reading), below ``LOW_WATER``
  ``resume_writing``: a client that keeps its window shut holds at most one
  app message plus the high-water mark.
* Receiving: DATA is acknowledged (WINDOW_UPDATE) as it is handed to the
  adapter unless the adapter paused reading (its queue for the app is full,
  or bytes wait for the accept); then acknowledgements stop until it
  resumes, so a slow app bounds what the client may send to one stream
  window, as ``http2/stream.py`` does for request bodies.

Ending (``Sending`` names our direction; ``_peer_done`` the peer's): our
END_STREAM waits behind queued bytes (ENDING) and then goes (ENDED). The
carrier leaves ``H2Protocol.streams`` once both directions are over: the
peer's END_STREAM, or a RST_STREAM either way. Once the adapter has heard its
last (``connection_lost``, or a complete denial, after which it hears
nothing) and the peer is still sending, RST_STREAM NO_ERROR asks it to stop
(RFC 9113 §8.1, what a server sends after a complete response).

Invariants: the adapter hears ``connection_lost`` at most once and nothing
after it, nor anything after a complete denial (``adapter`` is None then);
nothing is sent after END_STREAM or RST_STREAM; a write after our end is
dropped, as a closed TCP transport drops it.

Judgment call: when the peer ends its side while our bytes still wait for
its window, the adapter hears ``connection_lost`` at once (the peer sends no
more) and the queued bytes and END_STREAM go when the peer opens its window,
as ``http2/stream.py``'s responses do; the peer holds only its own stream
open meanwhile, within SETTINGS_MAX_CONCURRENT_STREAMS.

Imports ``errors``, ``websocket.handshake`` and its ``http2`` siblings.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from sluiceway.errors import ASGIMessageError
from sluiceway.http2.frames import ErrorCode
from sluiceway.http2.headers import response_fields
from sluiceway.websocket.handshake import Handshake, Rejection, accept_fields

if TYPE_CHECKING:
    from sluiceway.asgi.types import HeaderList
    from sluiceway.http2.protocol import H2Protocol
    from sluiceway.websocket.protocol import WebSocketAdapter

# Waiting bytes above which the adapter pauses writing; the same figure as
# the adapter's bound on bytes held before the accept (websocket/protocol.py).
HIGH_WATER: Final = 64 * 1024
# ... and at or below which it resumes: a quarter, as asyncio's transports do.
LOW_WATER: Final = HIGH_WATER // 4
# Waiting bytes are kept in pieces of at most this size (see the docstring):
# the default SETTINGS_MAX_FRAME_SIZE, so a piece usually leaves as one DATA frame.
_PIECE: Final = 16 * 1024
# Statuses whose responses have no content (RFC 9110 §15.3.5, §15.4.5).
_NO_BODY: Final = frozenset((204, 304))


class Sending(enum.Enum):
    """Our direction of the stream."""

    HEAD = 1  # no final head yet: the app has the handshake
    FRAMES = 2  # the 200 went out: WebSocket frame bytes flow
    RESPONSE = 3  # a denial's head went out, its body goes on
    ENDING = 4  # END_STREAM waits behind queued bytes
    ENDED = 5  # END_STREAM or RST_STREAM went out: nothing more is sent


class H2Carrier:
    """One HTTP/2 stream carrying ``adapter``'s WebSocket; see the module docstring.

    Args:
        proto: the connection.
        stream_id: the extended CONNECT's stream.
        adapter: the WebSocket it carries; None for a refusal the server
            answers itself (``http2/websocket.py``), which only ``deny`` uses.
        handshake: the validated request (the agreed permessage-deflate).
        peer_done: the CONNECT already ended the peer's side (END_STREAM).
    """

    __slots__ = (
        "_denial_left",
        "_handshake",
        "_peer_done",
        "_pending",
        "_pending_bytes",
        "_proto",
        "_reading_paused",
        "_sending",
        "_unacked",
        "_write_paused",
        "adapter",
        "stream_id",
    )

    def __init__(
        self,
        proto: H2Protocol,
        stream_id: int,
        adapter: WebSocketAdapter | None,
        handshake: Handshake,
        peer_done: bool = False,
    ) -> None:
        self._proto = proto
        self.stream_id = stream_id
        self.adapter = adapter
        self._handshake = handshake
        self._sending = Sending.HEAD
        # Nothing more comes from the peer: its END_STREAM, or a RST_STREAM either way.
        self._peer_done = peer_done
        self._reading_paused = False
        self._unacked = 0  # DATA received while reading is paused, not yet acknowledged
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._write_paused = False  # the adapter was told pause_writing
        self._denial_left = -1  # Content-Length bytes a denial still owes, or -1

    # -- the connection's side (StreamHandler) ----------------------------------------

    def receive_body(self, data: bytes, flow_controlled: int) -> None:
        """Frame bytes from the peer's DATA; acknowledged unless the adapter paused reading."""
        adapter = self.adapter
        if adapter is None:
            # Nobody reads them (a complete denial): give the window back.
            self._proto.acknowledge(self.stream_id, flow_controlled)
            return
        adapter.receive_data(data)
        if self._reading_paused:
            self._unacked += flow_controlled
        else:
            self._proto.acknowledge(self.stream_id, flow_controlled)

    def receive_end(self) -> None:
        """The peer's END_STREAM: its FIN. Our side ends too, and the adapter is done."""
        self._peer_done = True
        sending = self._sending
        if sending is Sending.RESPONSE:
            return  # a half-closed request is ordinary HTTP/2: the denial goes on
        adapter = self.adapter
        if adapter is not None:
            adapter.receive_eof()
        if sending is Sending.HEAD:
            # No answer yet, so no END_STREAM can end the stream: cancel it.
            self._reset(ErrorCode.CANCEL)
        elif sending is Sending.FRAMES:
            self._end()
        self._lost()
        self._settle()

    def window_opened(self) -> None:
        """A WINDOW_UPDATE (the stream's or the connection's): move what waits."""
        pending = self._pending
        if not pending:
            return
        proto = self._proto
        stream_id = self.stream_id
        while pending:
            chunk = pending[0]
            # END_STREAM rides on the last byte when the end waits behind it.
            end = len(pending) == 1 and self._sending is Sending.ENDING
            taken = proto.send_data(stream_id, chunk, end)
            self._pending_bytes -= taken
            if taken < len(chunk):
                pending[0] = chunk[taken:]
                break
            pending.popleft()
            if end:
                self._sending = Sending.ENDED
        adapter = self.adapter
        if self._write_paused and self._pending_bytes <= LOW_WATER:
            self._write_paused = False
            if adapter is not None:
                adapter.resume_writing()
        self._settle()

    def waiting_on_peer(self) -> bool:
        """No: the WebSocket's own keepalive and close timeouts bound its waits."""
        return False

    def reset_by_peer(self) -> None:
        """The peer's RST_STREAM, or the connection is gone: the stream is over."""
        self._sending = Sending.ENDED
        self._peer_done = True
        self._drop_pending()
        self._lost()
        # The connection already took the stream out of its map.

    # -- the adapter's side (WebSocketCarrier) ----------------------------------------

    def accept(self, subprotocol: str | None, headers: HeaderList) -> None:
        fields = accept_fields(self._handshake, subprotocol, headers)
        if isinstance(fields, Rejection):
            raise ASGIMessageError(fields.reason)
        proto = self._proto
        head, _ = response_fields(200, fields, proto.default_fields())
        # RFC 8441 §5: a 2xx answers the CONNECT, and the stream stays open for frames.
        proto.send_headers(self.stream_id, head, False)
        self._sending = Sending.FRAMES

    def deny(self, status: int, headers: HeaderList, body: bytes, more: bool) -> None:
        # Built whole before anything is sent: a bad header raises with the
        # stream untouched, and the cycle can still answer 500.
        fields, content_length = response_fields(status, headers, self._proto.default_fields())
        if status in _NO_BODY:
            body = b""
        elif content_length >= 0:
            n = len(body)
            if n > content_length or (not more and n != content_length):
                raise ASGIMessageError(
                    f"denial body is {n} bytes but Content-Length says {content_length}"
                )
            self._denial_left = content_length - n
        elif not more:
            fields.append((b"content-length", b"%d" % len(body)))
        end = not more and not body
        self._proto.send_headers(self.stream_id, fields, end)
        if end:
            self._sending = Sending.ENDED
            self._denied()
            return
        self._sending = Sending.RESPONSE
        self._send_denial(body, more)

    def deny_body(self, body: bytes, more: bool) -> None:
        if self._sending is not Sending.RESPONSE:
            return  # the stream was reset under the denial
        left = self._denial_left
        if left >= 0:
            n = len(body)
            if n > left or (not more and n != left):
                # Our framing promise broke: the client must not take it as complete.
                self._reset(ErrorCode.INTERNAL_ERROR)
                raise ASGIMessageError("denial body does not match its Content-Length")
            self._denial_left = left - n
        self._send_denial(body, more)

    def _send_denial(self, body: bytes, more: bool) -> None:
        if body:
            self._send(body)
        if not more:
            self._end()
            self._denied()

    def _denied(self) -> None:
        """The denial is complete: the adapter hears nothing more (``deny``'s contract)."""
        self.adapter = None
        self._settle()

    def write(self, data: bytes) -> None:
        if self._sending is Sending.FRAMES and data:
            self._send(data)

    def writelines(self, parts: Iterable[bytes]) -> None:
        # One DATA frame for a frame's header and payload, not one each.
        self.write(b"".join(parts))

    def _send(self, data: bytes) -> None:
        if self._pending:
            self._queue(data, 0)
            return
        taken = self._proto.send_data(self.stream_id, data, False)
        if taken < len(data):
            self._queue(data, taken)

    def _queue(self, data: bytes, start: int) -> None:
        size = len(data)
        if start == 0 and size <= _PIECE:
            self._pending.append(data)
        else:
            view = memoryview(data)
            self._pending.extend(bytes(view[at : at + _PIECE]) for at in range(start, size, _PIECE))
        self._pending_bytes += size - start
        if not self._write_paused and self._pending_bytes > HIGH_WATER:
            self._write_paused = True
            adapter = self.adapter
            if adapter is not None:
                adapter.pause_writing()

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        self._reading_paused = False
        unacked = self._unacked
        if unacked:
            self._unacked = 0
            # A stream already gone gave its bytes back; the connection ignores this then.
            self._proto.acknowledge(self.stream_id, unacked)

    def close(self, await_peer: bool) -> None:
        if self._sending is not Sending.FRAMES:
            return
        if not await_peer and self._pending:
            # A keepalive timeout: the peer reads nothing, so what waits for
            # its window would never go. Nothing is gained by waiting.
            self._reset(ErrorCode.CANCEL)
        else:
            self._end()
        if not await_peer or self._peer_done:
            self._lost()
        self._settle()

    def abort(self) -> None:
        if not (self._sending is Sending.ENDED and self._peer_done):
            self._reset(ErrorCode.CANCEL)
        self._lost()
        self._settle()

    # -- ending -------------------------------------------------------------------------

    def _end(self) -> None:
        """END_STREAM: now, or behind the bytes that wait for a window."""
        if self._pending:
            self._sending = Sending.ENDING
        else:
            self._sending = Sending.ENDED
            self._proto.send_data(self.stream_id, b"", True)

    def _reset(self, code: int) -> None:
        """RST_STREAM ``code``: both directions are over at once."""
        self._sending = Sending.ENDED
        self._peer_done = True
        self._drop_pending()
        self._proto.reset(self.stream_id, code)

    def _drop_pending(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0

    def _lost(self) -> None:
        """Tell the adapter, once, that the carrier is gone."""
        adapter = self.adapter
        if adapter is not None:
            self.adapter = None
            adapter.connection_lost(None)

    def _settle(self) -> None:
        """Leave the connection once both directions are over."""
        if self._sending is not Sending.ENDED:
            return
        if not self._peer_done:
            if self.adapter is not None:
                return  # the close handshake: the peer's END_STREAM is awaited
            # We are done and read no more: RFC 9113 §8.1 lets us ask the peer
            # to stop sending without error after a complete answer.
            self._peer_done = True
            self._proto.reset(self.stream_id, ErrorCode.NO_ERROR)
        self._proto.forget(self)
