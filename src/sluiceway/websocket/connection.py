"""The server side of an open WebSocket connection, sans I/O (RFC 6455 §5-§7).

Bytes and calls go in, events and bytes come out; nothing here blocks, awaits
or touches a socket. The adapter (``websocket/protocol.py``) does four things
per read: ``receive_data(chunk)``, ``events_received()``, ``data_to_send()``
(write it), then act on the events; it closes the transport when
``close_transport`` turns true and arms its close timer when
``close_expected()`` does.

Imports only the standard library, ``sluiceway.errors`` and the sibling
``frames``, ``deflate``, ``events`` and ``assembly`` (the fragmented message
in progress) modules; re-exports the events.

Invariants:

* The connection starts OPEN (the handshake is done elsewhere) and only moves
  forward: OPEN -> CLOSING (we sent Close) -> CLOSED, or OPEN -> CLOSED (the
  peer's Close was echoed, the peer broke the protocol, or EOF).
* In CLOSED every further byte is ignored and nothing more is sent.
* Memory is bounded by ``max_size_bytes`` plus one read: a frame or message
  that would exceed it is refused (1009) from its header alone, before its
  payload is buffered; compressed messages are bounded after inflation.
* Every peer error becomes a Close frame in ``_fail``, the one place that maps
  exceptions (which carry ``close_code``) to the wire.
"""

from __future__ import annotations

import codecs

from sluiceway.errors import (
    InvalidPayload,
    InvalidState,
    MessageTooBig,
    RemoteProtocolError,
    WebSocketProtocolError,
)
from sluiceway.websocket.assembly import FragmentedMessage, Utf8Decoder
from sluiceway.websocket.deflate import (
    DEFAULT_DEFLATE_SETTINGS,
    DeflateParams,
    DeflateSettings,
    PerMessageDeflate,
)
from sluiceway.websocket.events import (
    BytesMessage,
    CloseReceived,
    ConnectionFailed,
    Event,
    Ping,
    Pong,
    State,
    TextMessage,
)
from sluiceway.websocket.frames import (
    CLOSE_CODE_ABNORMAL,
    CLOSE_CODE_NO_STATUS,
    FIN,
    MASK_BIT,
    MAX_CONTROL_PAYLOAD,
    RSV1,
    RSV2,
    RSV3,
    Opcode,
    apply_mask,
    build_close_payload,
    build_frame_header,
    is_valid_sent_close_code,
    parse_close_payload,
    parse_header,
)

__all__ = [
    "BytesMessage",
    "CloseReceived",
    "Connection",
    "ConnectionFailed",
    "Event",
    "Ping",
    "Pong",
    "State",
    "TextMessage",
]

DEFAULT_MAX_SIZE_BYTES = 16 * 1024 * 1024

# Payloads up to this size are joined with their header into one bytes
# object (one write); larger ones go out as two buffers to avoid the copy.
_JOIN_MAX = 16 * 1024
# Above this size the payload is unmasked from a memoryview of the receive
# buffer rather than from a sliced copy.
_VIEW_MIN = 4096

_TEXT = int(Opcode.TEXT)
_BINARY = int(Opcode.BINARY)
_CLOSE = int(Opcode.CLOSE)
_PING = int(Opcode.PING)
_PONG = int(Opcode.PONG)
# Headers of whole, uncompressed short messages, precomputed (§5.2).
_TEXT_HEADERS = [bytes((0x80 | _TEXT, n)) for n in range(126)]
_BINARY_HEADERS = [bytes((0x80 | _BINARY, n)) for n in range(126)]


class Connection:
    """One server-side WebSocket connection after a successful handshake.

    Args:
        max_size_bytes: the largest message accepted, after decompression;
            larger ones close the connection with 1009.
        deflate: the permessage-deflate parameters agreed in the handshake
            (``Handshake.deflate``), or None.
        deflate_settings: compression level, memory level and the minimum
            size of a message worth compressing.

    Attributes:
        state: OPEN, CLOSING or CLOSED.
        close_code: the peer's close code (1005 if it gave none), the code we
            failed the connection with, or 1006 on EOF without a Close;
            None while OPEN.
        close_reason: the reason that goes with ``close_code``.
        close_transport: True once the transport should be closed, which is
            when the connection is CLOSED (derived, not stored). The server
            closes TCP first (§7.1.1); half-closing (``write_eof``) before
            closing avoids a RST that could destroy the Close frame.
        error: the exception that failed the connection, if one did.
    """

    __slots__ = (
        "_buf",
        "_deflate",
        "_events",
        "_held",
        "_held_size",
        "_max_size",
        "_message",
        "_out",
        "_partial_checked",
        "_partial_utf8",
        "_wait",
        "_wire_limit",
        "close_code",
        "close_reason",
        "error",
        "state",
    )

    def __init__(
        self,
        *,
        max_size_bytes: int = DEFAULT_MAX_SIZE_BYTES,
        deflate: DeflateParams | None = None,
        deflate_settings: DeflateSettings = DEFAULT_DEFLATE_SETTINGS,
    ) -> None:
        if max_size_bytes <= 0:
            raise ValueError("max_size_bytes must be positive")
        self.state = State.OPEN
        self.close_code: int | None = None
        self.close_reason = ""
        self.error: RemoteProtocolError | None = None
        self._max_size = max_size_bytes
        # Deflate can grow incompressible data by a few bytes per 16 KiB
        # block; 1/256 of slack lets an honest peer reach max_size exactly.
        self._wire_limit = max_size_bytes + (max_size_bytes >> 8) + 64
        self._deflate = (
            PerMessageDeflate(deflate, deflate_settings) if deflate is not None else None
        )
        self._buf = bytearray()
        # A frame whose payload spans reads: the reads as they came (no copy)
        # and their size, until ``_wait`` bytes (the whole frame) are held.
        self._held: list[bytes | bytearray | memoryview] = []
        self._held_size = 0
        self._wait = 0
        self._events: list[Event] = []
        self._out: list[bytes] = []
        # The fragmented message in progress, if any.
        self._message: FragmentedMessage | None = None
        # UTF-8 check of the text frame still arriving: decoder, bytes done.
        self._partial_utf8: codecs.IncrementalDecoder | None = None
        self._partial_checked = 0

    # -- output --------------------------------------------------------------

    def events_received(self) -> list[Event]:
        """The events parsed since the last call, oldest first."""
        events = self._events
        if not events:
            return []
        self._events = []
        return events

    def data_to_send(self) -> list[bytes]:
        """The bytes to write since the last call, as buffers for ``writelines``."""
        out = self._out
        if not out:
            return []
        self._out = []
        return out

    @property
    def close_transport(self) -> bool:
        """True once the transport should be closed (see the class docstring)."""
        return self.state is State.CLOSED

    def close_expected(self) -> bool:
        """Whether the peer should now close TCP: arm the close timeout.

        True once we sent Close (CLOSING) or the connection is CLOSED; if the
        transport is still open when the timeout fires, abort it.
        """
        return self.state is not State.OPEN

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the transport; parse every complete frame.

        ``data`` may be kept by reference until the frame it ends in is
        complete (a frame that spans reads is joined once): pass ``bytes``,
        never a buffer the caller will reuse.
        """
        if self.state is State.CLOSED:
            return
        if self._wait:
            # The frame at the head is still incomplete: hold this read as is.
            # Joining once when it completes copies each byte once; growing
            # the bytearray read by read copied it again on every realloc.
            held = self._held
            held.append(data)
            self._held_size += len(data)
            if self._held_size < self._wait:
                return
            data = b"".join(held)
            self._held = []
            self._held_size = self._wait = 0
        buf = self._buf
        src: bytes | bytearray = data
        if buf:
            buf += data
            src = buf
        end = len(src)
        pos = 0
        events = self._events
        max_size = self._max_size
        try:
            while end - pos >= 2:
                b0 = src[pos]
                b1 = src[pos + 1]
                if b1 & MASK_BIT and b1 < 0xFE:
                    # Masked, 7-bit length: the common header, parsed inline.
                    length = b1 & 0x7F
                    start = pos + 6
                else:
                    header = parse_header(src, pos)
                    if header is None:
                        break
                    _, _, length, start = header
                    if not b1 & MASK_BIT:
                        # §5.1: "The server MUST close the connection upon
                        # receiving a frame that is not masked."
                        raise WebSocketProtocolError("client frame is not masked")
                if (b0 == 0x81 or b0 == 0x82) and self._message is None and length <= max_size:
                    # A whole, uncompressed data frame outside a fragmented
                    # message passes every header rule.
                    opcode = b0 & 0x0F
                else:
                    opcode = self._check_header(b0, length)
                stop = start + length
                if stop > end:
                    message = self._message
                    if (opcode == _TEXT and not b0 & RSV1) or (
                        opcode == 0
                        and message is not None
                        and message.utf8 is not None
                        and not message.compressed
                    ):
                        # Text is checked read by read (§8.1 fail fast), so
                        # it keeps to the buffer and is parsed again each time.
                        if end > start:
                            self._check_partial_text(src, start, end)
                        break
                    self._hold(src, pos, end, stop - pos)
                    return
                if self._partial_utf8 is not None:
                    # This frame was partly validated by _check_partial_text.
                    self._partial_utf8 = None
                if length >= _VIEW_MIN:
                    with memoryview(src) as view:
                        payload = apply_mask(view[start:stop], bytes(src[start - 4 : start]))
                else:
                    payload = apply_mask(src[start:stop], src[start - 4 : start])
                pos = stop
                if b0 == 0x81:
                    # The hot path: a whole, uncompressed text message.
                    try:
                        events.append(TextMessage(payload.decode("utf-8")))
                    except UnicodeDecodeError as exc:
                        raise InvalidPayload("text message is not valid UTF-8") from exc
                elif b0 == 0x82:
                    events.append(BytesMessage(payload))
                elif opcode < 8:
                    self._receive_data_frame(opcode, b0, payload)
                else:
                    if self._receive_control_frame(opcode, payload):
                        return  # a Close arrived: ignore the rest
        except RemoteProtocolError as exc:
            self._fail(exc)
            return
        # What is left is an incomplete header, or a text frame kept whole so
        # its UTF-8 can be checked read by read; the next read completes it.
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < end:
            buf += memoryview(data)[pos:]

    def _hold(self, src: bytes | bytearray, pos: int, end: int, wait: int) -> None:
        """Keep ``src[pos:end]``, the start of a frame of ``wait`` bytes, uncopied."""
        if src is self._buf:
            # Deleting from the front of a bytearray moves a pointer, no copy.
            del src[:pos]
            self._buf = bytearray()
            self._held = [src]
        else:
            self._held = [memoryview(src)[pos:] if pos else src]
        self._held_size = end - pos
        self._wait = wait

    def _check_partial_text(self, src: bytes | bytearray, start: int, end: int) -> None:
        """Validate the UTF-8 of a text frame's payload received so far.

        §8.1 wants invalid text refused as soon as it is seen, not when the
        frame completes (Autobahn 6.4.3/6.4.4 send one frame in chops). The
        bytes checked here are decoded again when the frame completes; that
        costs only when a text frame spans reads.
        """
        decoder = self._partial_utf8
        if decoder is None:
            decoder = self._partial_utf8 = Utf8Decoder()
            self._partial_checked = 0
            message = self._message
            if message is not None and message.utf8 is not None:
                # A continuation: carry on from the message's decoder state.
                decoder.setstate(message.utf8.getstate())
        begin = start + self._partial_checked
        if begin >= end:
            return
        mask = src[start - 4 : start]
        shift = self._partial_checked & 3
        if shift:
            mask = mask[shift:] + mask[:shift]
        try:
            decoder.decode(apply_mask(src[begin:end], mask), False)
        except UnicodeDecodeError as exc:
            raise InvalidPayload("text message is not valid UTF-8") from exc
        self._partial_checked = end - start

    def receive_eof(self) -> None:
        """The peer closed its side of TCP; a missing Close means 1006."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.close_code = CLOSE_CODE_ABNORMAL
        self.close_reason = ""
        self._release()

    def _check_header(self, b0: int, length: int) -> int:
        """Enforce the header rules before the payload is read; returns the opcode."""
        opcode = b0 & 0x0F
        if b0 & (RSV2 | RSV3):
            # §5.2: non-zero RSV bits need an extension that defines them.
            raise WebSocketProtocolError("reserved bits set")
        if opcode >= 8:
            if opcode > _PONG:
                raise WebSocketProtocolError(f"unknown opcode {opcode:#x}")
            # §5.5: control frames are short, whole and never compressed
            # (RFC 7692 §6.1 allows RSV1 on data messages only).
            if not b0 & FIN:
                raise WebSocketProtocolError("fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise WebSocketProtocolError("control frame payload over 125 bytes")
            if b0 & RSV1:
                raise WebSocketProtocolError("reserved bit set on a control frame")
            return opcode
        if opcode > _BINARY:
            raise WebSocketProtocolError(f"unknown opcode {opcode:#x}")
        if opcode:
            # §5.4: a new message may not start inside a fragmented one.
            if self._message is not None:
                raise WebSocketProtocolError("new message started before the last one ended")
            if b0 & RSV1:
                if self._deflate is None:
                    raise WebSocketProtocolError("reserved bit set without an extension")
                if length > self._wire_limit:
                    raise MessageTooBig(f"message exceeds {self._max_size} bytes")
            elif length > self._max_size:
                raise MessageTooBig(f"message exceeds {self._max_size} bytes")
            return opcode
        message = self._message
        if message is None:
            raise WebSocketProtocolError("continuation frame outside a fragmented message")
        if b0 & RSV1:
            # RFC 7692 §6.1: only the first frame of a message carries RSV1.
            raise WebSocketProtocolError("reserved bit set on a continuation frame")
        # The running total is checked against the header, so a message is
        # refused before the fragment that would overflow is buffered.
        if message.compressed:
            if message.wire + length > self._wire_limit:
                raise MessageTooBig(f"message exceeds {self._max_size} bytes")
        elif message.size + length > self._max_size:
            raise MessageTooBig(f"message exceeds {self._max_size} bytes")
        return opcode

    def _receive_data_frame(self, opcode: int, b0: int, payload: bytes) -> None:
        """A data frame that is compressed, fragmented, or both."""
        final = bool(b0 & FIN)
        if opcode:
            compressed = bool(b0 & RSV1)
            if final:
                # Whole but compressed: nothing to assemble.
                assert self._deflate is not None  # _check_header guarantees it
                payload = self._deflate.decompress(payload, final=True, limit=self._max_size)
                if opcode == _TEXT:
                    try:
                        self._events.append(TextMessage(payload.decode("utf-8")))
                    except UnicodeDecodeError as exc:
                        raise InvalidPayload("text message is not valid UTF-8") from exc
                else:
                    self._events.append(BytesMessage(payload))
                return
            self._message = FragmentedMessage(opcode == _TEXT, compressed)
        message = self._message
        assert message is not None  # _check_header refuses a continuation without one
        if message.compressed:
            assert self._deflate is not None  # set only when the extension is on
            message.wire += len(payload)
            payload = self._deflate.decompress(
                payload, final=final, limit=self._max_size - message.size
            )
        message.add(payload, final)
        if final:
            self._events.append(message.message())
            self._message = None

    def _receive_control_frame(self, opcode: int, payload: bytes) -> bool:
        """Act on a Ping, Pong or Close; True when it was a Close (now CLOSED)."""
        if opcode == _PING:
            self._events.append(Ping(payload))
            # §5.5.2: answer with a Pong carrying the same payload, unless
            # we already sent Close (§5.5.1: nothing follows our Close).
            if self.state is State.OPEN:
                self._out.append(build_frame_header(_PONG, len(payload)) + payload)
        elif opcode == _PONG:
            self._events.append(Pong(payload))
        else:
            code, reason = parse_close_payload(payload)
            self._events.append(CloseReceived(code, reason))
            if self.state is State.OPEN:
                # §5.5.1: echo the status code received.
                echo = build_close_payload(code)
                self._out.append(build_frame_header(_CLOSE, len(echo)) + echo)
            self.state = State.CLOSED
            self.close_code = code
            self.close_reason = reason
            self._release()
            return True
        return False

    def _fail(self, exc: RemoteProtocolError) -> None:
        """Fail the WebSocket connection (§7.1.7): the one error-to-wire map."""
        code = exc.close_code
        reason = str(exc)
        if self.state is State.OPEN:
            payload = build_close_payload(code, reason)
            self._out.append(build_frame_header(_CLOSE, len(payload)) + payload)
        self.state = State.CLOSED
        self.close_code = code
        self.close_reason = reason
        self.error = exc
        self._events.append(ConnectionFailed(code, reason))
        self._release()

    def _release(self) -> None:
        """Drop buffers and partial messages: nothing more will be parsed."""
        self._buf = bytearray()
        self._held = []
        self._held_size = self._wait = 0
        self._message = None
        self._partial_utf8 = None
        self._deflate = None

    # -- sending -------------------------------------------------------------

    def send_text(self, text: str) -> None:
        """Queue a text message.

        Raises:
            InvalidState: the close handshake has started.
        """
        payload = text.encode("utf-8")
        if len(payload) < 126 and self._deflate is None and self.state is State.OPEN:
            self._out.append(_TEXT_HEADERS[len(payload)] + payload)
        else:
            self._send_message(_TEXT, payload)

    def send_binary(self, data: bytes) -> None:
        """Queue a binary message.

        Raises:
            InvalidState: the close handshake has started.
        """
        if len(data) < 126 and self._deflate is None and self.state is State.OPEN:
            self._out.append(_BINARY_HEADERS[len(data)] + data)
        else:
            self._send_message(_BINARY, data)

    def _send_message(self, opcode: int, payload: bytes) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send a message in state {self.state.name}")
        rsv1 = False
        if self._deflate is not None:
            compressed = self._deflate.compress(payload)
            if compressed is not None:
                payload = compressed
                rsv1 = True
        header = build_frame_header(opcode, len(payload), rsv1=rsv1)
        if len(payload) <= _JOIN_MAX:
            self._out.append(header + payload)
        else:
            self._out.append(header)
            self._out.append(payload)

    def send_ping(self, data: bytes = b"") -> None:
        """Queue a Ping (for keepalive; the peer answers with a Pong).

        Raises:
            InvalidState: the close handshake has started.
            ValueError: ``data`` is over 125 bytes (§5.5).
        """
        self._send_control(_PING, data)

    def send_pong(self, data: bytes = b"") -> None:
        """Queue an unsolicited Pong, a one-way heartbeat (§5.5.3)."""
        self._send_control(_PONG, data)

    def _send_control(self, opcode: int, data: bytes) -> None:
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send a control frame in state {self.state.name}")
        if len(data) > MAX_CONTROL_PAYLOAD:
            raise ValueError("control frame payload over 125 bytes")
        self._out.append(build_frame_header(opcode, len(data)) + data)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (§7.1.2); the state becomes CLOSING.

        Args:
            code: 1000-1003, 1007-1014 or 3000-4999; 1005 sends a Close with
                no code.
            reason: cut to 123 bytes of UTF-8 if longer.

        Raises:
            InvalidState: Close was already sent or the connection is closed.
            ValueError: ``code`` may not be sent.
        """
        if self.state is not State.OPEN:
            raise InvalidState(f"cannot send Close in state {self.state.name}")
        if code != CLOSE_CODE_NO_STATUS and not is_valid_sent_close_code(code):
            raise ValueError(f"close code {code} may not be sent")
        payload = build_close_payload(code, reason)
        self._out.append(build_frame_header(_CLOSE, len(payload)) + payload)
        self.state = State.CLOSING
