"""The server side of an HTTP/2 connection, sans I/O (RFC 9113, RFC 8441).

Bytes and calls go in, events and bytes come out; nothing here blocks,
awaits or touches a socket. The adapter (``http2/protocol.py``) calls
``initiate()`` once, then per read ``receive_data(chunk)`` (a list of
events), acts on the events and writes ``data_to_send()``: one ``bytes``, so
the HEADERS and DATA of every response one read started leave in one write.
The app's side comes back through ``send_headers``, ``send_data``,
``acknowledge_received_data``, ``reset_stream`` and ``push_promise``.

Reading follows the wire: the client preface (§3.4), then the frames that
``reader.FrameReader`` cuts from each read, dispatched on their type by
``on_frame``. This module keeps
what is connection-wide: the preface, the frame formats, HPACK decoding of
whole header blocks (§4.3), SETTINGS, PING, GOAWAY, the connection window
and the shutdown. What belongs to one stream (its §5.1 state, requests,
trailers, bodies, responses) is ``streamset.StreamSet``'s.

Imports the standard library, ``sluiceway.errors`` and its siblings
``config``, ``events``, ``flow``, ``frames``, ``hpack``, ``limits``,
``reader``, ``settings`` and ``streamset``.

Invariants:

* ``receive_data`` never raises for the peer's mistakes. A connection error
  queues GOAWAY and reports ``ConnectionTerminated``; the connection is then
  CLOSED and reads nothing more. A stream error queues RST_STREAM and, if an
  app runs for the stream, reports ``StreamReset``. ``_connection_error``
  and ``StreamSet.stream_error`` are the one place each maps an exception's
  ``h2_error`` to the wire.
* Every header block is decoded, even one we refuse, reset or ignore, so
  the HPACK context stays in step with the peer's (§4.3).
* Every DATA frame counts against the connection window, even on a stream
  that is gone; what no app will read is given back at once (``flow.py``).
* Memory per connection is bounded: a header block by ``limits.HeaderBlock``,
  received bodies by the windows the app has not reopened, the closed-stream
  memory by ``streams.ClosedStreams``, a partial frame by ``max_frame_size``
  (``reader.py``).

Judgment calls:

* HPACK bomb: a request whose decoded fields pass ``max_header_list_size``
  is answered with a bare ``:status: 431`` (and RST_STREAM NO_ERROR if its
  body is still coming, §8.1); the app never sees it, and the decoder being
  in sync, the connection goes on. It counts against ``reset_budget``.
* Abuse budgets slide over work, not time (``limits.Budget``). The client's
  RST_STREAM of a started stream (Rapid Reset, CVE-2023-44487), every
  RST_STREAM its bad frames provoke from us (MadeYouReset, CVE-2025-8671),
  REFUSED_STREAM and 431 share ``reset_budget``, refunded one per completed
  stream. Frames that cost work but move no request (PING, SETTINGS,
  PRIORITY, WINDOW_UPDATE, empty DATA and CONTINUATION, unknown types,
  frames on closed streams: CVE-2019-9512/9513/9515/9518) share
  ``no_progress_budget``, refunded one per request and per DATA frame
  received, three per DATA frame sent (the WINDOW_UPDATEs and PING it may
  draw). While the adapter reports writing paused (``pause_writing``), at
  most ``max_queued_control_frames`` ACKs and RST_STREAMs are queued. Over
  any: GOAWAY ENHANCE_YOUR_CALM.
* After our graceful GOAWAY, new streams are decoded and ignored without a
  RST_STREAM (§6.8 lets the sender ignore them).
* Sends on a reset stream, or after the connection is CLOSED, are accepted
  and dropped: one read may report a request and, later in the same list,
  its reset or the connection's end, so the adapter may answer a stream it
  does not yet know is gone. A send after our own END_STREAM, or on a stream
  never opened, is the adapter's bug: ``StreamClosedError``.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from sluiceway.errors import InvalidState
from sluiceway.http2.config import H2Config
from sluiceway.http2.events import ConnectionTerminated, Event, WindowOpened
from sluiceway.http2.flow import Flow
from sluiceway.http2.frames import (
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    PREFACE,
    ErrorCode,
    H2ConnectionError,
    H2StreamError,
    build_goaway,
    build_ping_ack,
    build_settings,
    build_settings_ack,
    data_without_padding,
    headers_fragment,
    parse_settings,
)
from sluiceway.http2.hpack import Decoder, HeaderListTooLarge, HPACKError
from sluiceway.http2.hpack_encoder import Encoder
from sluiceway.http2.limits import ControlBacklog, HeaderBlock
from sluiceway.http2.reader import FrameReader
from sluiceway.http2.settings import DEFAULT_TABLE_SIZE, PeerSettings, local_settings
from sluiceway.http2.streamset import StreamClosedError, StreamSet

__all__ = ["ConnectionState", "H2Config", "H2Connection", "StreamClosedError"]

_NOTHING: Final[list[bytes | memoryview]] = []


class ConnectionState(enum.Enum):
    """Where the connection is (RFC 9113 §3.4, §6.8)."""

    IDLE = 0  # before initiate()
    AWAITING_PREFACE = 1  # the client's 24-octet magic
    AWAITING_SETTINGS = 2  # its first frame must be SETTINGS
    OPEN = 3
    CLOSING = 4  # our graceful GOAWAY went out: open streams finish, new ones are ignored
    CLOSED = 5  # GOAWAY after an error, or close(): nothing more in or out


# Module-level aliases: a global lookup is cheaper than a class attribute.
_IDLE: Final = ConnectionState.IDLE
_AWAITING_PREFACE: Final = ConnectionState.AWAITING_PREFACE
_AWAITING_SETTINGS: Final = ConnectionState.AWAITING_SETTINGS
_OPEN: Final = ConnectionState.OPEN
_CLOSING: Final = ConnectionState.CLOSING
_CLOSED: Final = ConnectionState.CLOSED
_PROTOCOL_ERROR: Final = ErrorCode.PROTOCOL_ERROR
_FRAME_SIZE_ERROR: Final = ErrorCode.FRAME_SIZE_ERROR

_unpack_u32 = struct.Struct(">L").unpack_from
_unpack_u32x2 = struct.Struct(">LL").unpack_from

# Our encoder keeps at most this much dynamic table, however much the peer allows.
_MAX_ENCODER_TABLE: Final = 4096


class H2Connection:
    """One server-side HTTP/2 connection; see the module docstring.

    Attributes:
        config: the ``H2Config``.
        state: a ``ConnectionState``.
    """

    def __init__(self, config: H2Config) -> None:
        self.config = config
        self.state = _IDLE
        self._decoder = Decoder(
            max_table_size=max(config.header_table_size, DEFAULT_TABLE_SIZE),
            max_header_list_size=config.max_header_list_size,
        )
        self._encoder = Encoder()
        self._out: list[bytes | memoryview] = []
        self._preface_left = PREFACE
        self._flow = Flow(self._out, config.connection_window_size, config.initial_window_size)
        self._peer = PeerSettings()
        self._backlog = ControlBacklog(config.max_queued_control_frames)
        self._streams = StreamSet(
            config, self._out, self._flow, self._peer, self._encoder, self._backlog
        )
        self._block = HeaderBlock(
            config.max_header_list_size + config.max_frame_size, config.max_continuation_frames
        )
        self._reader = FrameReader(self, config.max_frame_size, self._streams.no_progress)
        self._peer_goaway = False
        self._goaway_sent = False
        self._settings_seen = False
        self._settings_acked = False

    # -- starting (RFC 9113 §3) ------------------------------------------------------------

    def initiate(
        self, preface_received: bytes = b"", upgrade_settings: bytes | None = None
    ) -> None:
        """Queue our SETTINGS (the server preface) and the connection WINDOW_UPDATE.

        Args:
            preface_received: the leading bytes of the client's 24-octet magic
                that the caller already read and checked; the rest must come first.
            upgrade_settings: for h2c (RFC 7540 §3.2), the decoded payload of
                the request's ``HTTP2-Settings`` (``frames.decode_http2_settings``).
                It applies at once, without ACK (the 101 acknowledged it), and
                stream 1, the upgraded request, is half-closed (remote) with its
                app started: answer it with ``send_headers(1, ...)``.

        Raises:
            InvalidState: called twice.
            ValueError: ``preface_received`` is not a prefix of the magic.
            H2ConnectionError: ``upgrade_settings`` is invalid (do not upgrade).
        """
        if self.state is not _IDLE:
            raise InvalidState("initiate() was already called")
        if not PREFACE.startswith(preface_received):
            raise ValueError("preface_received is not a prefix of the client preface")
        self._out.append(build_settings(local_settings(self.config)))
        self._flow.open_connection_window(self.config.connection_window_size)
        if upgrade_settings is not None:
            self._apply_settings(parse_settings(upgrade_settings))
            self._streams.open_upgraded()
        self._preface_left = PREFACE[len(preface_received) :]
        self.state = _AWAITING_PREFACE if self._preface_left else _AWAITING_SETTINGS

    # -- reading -----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Process bytes from the peer.

        Returns:
            The events they caused, oldest first. What we send in reply (ACKs,
            RST_STREAM, GOAWAY, WINDOW_UPDATE) waits in ``data_to_send``.

        Raises:
            InvalidState: ``initiate`` was not called.
        """
        state = self.state
        if state is not _OPEN and state is not _CLOSING:
            if state is _CLOSED:
                return []
            if state is _IDLE:
                raise InvalidState("receive_data() before initiate()")
        events: list[Event] = []
        self._streams.events = events
        try:
            if state is _AWAITING_PREFACE:
                data = self._receive_preface(data)
            self._reader.feed(data)
        except H2ConnectionError as exc:
            self._connection_error(exc, events)
        return events

    def _receive_preface(self, data: bytes) -> bytes:
        """Check the client magic (§3.4); return what follows it."""
        left = self._preface_left
        n = min(len(left), len(data))
        if data[:n] != left[:n]:
            raise H2ConnectionError(_PROTOCOL_ERROR, "invalid connection preface")
        self._preface_left = left = left[n:]
        if left:
            return b""
        self.state = _AWAITING_SETTINGS
        return data[n:]

    def on_frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        """One whole frame from the reader (``reader.py``): act on it.

        Raises:
            H2ConnectionError: the connection is over (the caller sends GOAWAY).
        """
        if self.state is _AWAITING_SETTINGS:
            # §3.4: the client preface ends with SETTINGS (not an ACK).
            if frame_type != 4 or flags & FLAG_ACK:
                raise H2ConnectionError(_PROTOCOL_ERROR, "the preface must end with SETTINGS")
            self.state = _CLOSING if self._goaway_sent else _OPEN
        block = self._block
        if block.stream_id and frame_type != 9:
            # §4.3: a field block's frames are contiguous, whatever comes between.
            raise H2ConnectionError(_PROTOCOL_ERROR, "frame inside a header block")
        streams = self._streams
        try:
            if frame_type == 1:
                self._on_headers(flags, stream_id, payload)
            elif frame_type == 0:
                self._on_data(flags, stream_id, payload)
            elif frame_type == 8:
                self._on_window_update(stream_id, payload)
            elif frame_type == 4:
                self._on_settings(flags, stream_id, payload)
            elif frame_type == 6:
                self._on_ping(flags, stream_id, payload)
            elif frame_type == 3:
                self._on_rst_stream(stream_id, payload)
            elif frame_type == 2:
                self._on_priority(stream_id, payload)
            elif frame_type == 9:
                whole = block.add(stream_id, payload, bool(flags & FLAG_END_HEADERS))
                if whole is not None:
                    fields = self._decode(whole)
                    streams.on_field_block(stream_id, fields, block.end_stream, block.bad_priority)
                elif not payload:
                    streams.no_progress.spend()
            elif frame_type == 7:
                self._on_goaway(stream_id, payload)
            elif frame_type == 5:
                raise H2ConnectionError(_PROTOCOL_ERROR, "PUSH_PROMISE from a client")  # §8.4
            else:
                streams.no_progress.spend()  # §4.1: unknown types are ignored
        except H2StreamError as exc:
            streams.stream_error(exc)

    # -- HEADERS (§6.2), DATA (§6.1): the frame, then the stream's rules --------------------------

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ConnectionError(_PROTOCOL_ERROR, "HEADERS on stream 0")
        self_dependent = False
        if flags & 0x28:  # PADDED or PRIORITY
            payload, self_dependent = headers_fragment(flags, stream_id, payload)
        end_stream = bool(flags & FLAG_END_STREAM)
        if flags & FLAG_END_HEADERS:
            fields = self._decode(payload)
            self._streams.on_field_block(stream_id, fields, end_stream, self_dependent)
        else:
            self._block.start(stream_id, payload, end_stream, self_dependent)

    def _decode(self, block: bytes) -> list[tuple[bytes, bytes]] | None:
        """The block's fields, or None when they pass ``max_header_list_size``."""
        try:
            return self._decoder.decode(block)
        except HeaderListTooLarge:
            return None
        except HPACKError as exc:
            # §4.3: a decoding error is a connection error of type COMPRESSION_ERROR.
            raise H2ConnectionError(ErrorCode.COMPRESSION_ERROR, "HPACK decoding failed") from exc

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ConnectionError(_PROTOCOL_ERROR, "DATA on stream 0")
        length = len(payload)
        self._flow.received(length)  # §6.9: the whole frame counts, whatever the stream
        data = data_without_padding(payload) if flags & FLAG_PADDED else payload
        self._streams.on_data(stream_id, data, length, bool(flags & FLAG_END_STREAM))

    # -- WINDOW_UPDATE (§6.9), RST_STREAM (§6.4), PRIORITY (§6.3) -------------------------------

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(_FRAME_SIZE_ERROR, "WINDOW_UPDATE length is not 4")
        self._streams.no_progress.spend()
        increment = _unpack_u32(payload, 0)[0] & 0x7FFFFFFF
        if stream_id:
            self._streams.on_window_update(stream_id, increment)
        elif self._flow.window_update(increment):
            self._streams.events.append(WindowOpened(0))

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ConnectionError(_PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(_FRAME_SIZE_ERROR, "RST_STREAM length is not 4")
        self._streams.on_rst_stream(stream_id, _unpack_u32(payload, 0)[0])

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise H2ConnectionError(_PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise H2StreamError(stream_id, _FRAME_SIZE_ERROR, "PRIORITY length is not 5")
        if _unpack_u32(payload, 0)[0] & 0x7FFFFFFF == stream_id:
            raise H2StreamError(stream_id, _PROTOCOL_ERROR, "stream depends on itself")
        self._streams.no_progress.spend()  # CVE-2019-9513; otherwise ignored (§5.3.2)

    # -- SETTINGS (§6.5), PING (§6.7), GOAWAY (§6.8) ----------------------------------------------

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2ConnectionError(_PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if payload:
                raise H2ConnectionError(_FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            if self._settings_acked:
                self._streams.no_progress.spend()  # we sent one SETTINGS: more ACKs are unasked
                return
            self._settings_acked = True
            self._decoder.max_table_size = self.config.header_table_size
            self._streams.settings_acknowledged()
            return
        if self._settings_seen:
            self._streams.no_progress.spend()  # CVE-2019-9515: a SETTINGS flood
        self._settings_seen = True
        self._apply_settings(parse_settings(payload))
        self._out.append(build_settings_ack())
        self._backlog.queued()

    def _apply_settings(self, settings: list[tuple[int, int]]) -> None:
        peer = self._peer
        table_size = peer.header_table_size
        delta = peer.apply(settings)
        if delta:
            self._streams.change_initial_window(delta)
        if peer.header_table_size != table_size:
            self._encoder.set_max_table_size(min(peer.header_table_size, _MAX_ENCODER_TABLE))

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2ConnectionError(_PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2ConnectionError(_FRAME_SIZE_ERROR, "PING length is not 8")
        self._streams.no_progress.spend()  # CVE-2019-9512; we never ping: any ACK is unasked
        if not flags & FLAG_ACK:
            self._out.append(build_ping_ack(payload))
            self._backlog.queued()

    def _on_goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise H2ConnectionError(_PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2ConnectionError(_FRAME_SIZE_ERROR, "GOAWAY shorter than 8")
        last_stream_id, code = _unpack_u32x2(payload, 0)
        self._peer_goaway = True  # no more pushes (§6.8)
        reason = payload[8:].decode("utf-8", "replace")
        self._streams.events.append(ConnectionTerminated(code, last_stream_id & 0x7FFFFFFF, reason))

    def _connection_error(self, exc: H2ConnectionError, events: list[Event]) -> None:
        """GOAWAY with the error's code (§5.4.1); the connection is over."""
        last_stream_id = self._streams.last_stream_id
        self._out.append(build_goaway(last_stream_id, exc.h2_error, exc.reason.encode()))
        self._enter_closed()
        events.append(ConnectionTerminated(exc.h2_error, last_stream_id, exc.reason))

    def _enter_closed(self) -> None:
        self.state = _CLOSED
        self._streams.dropping = True
        self._buf = bytearray()

    # -- writing ------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued since the last call, as one ``bytes`` (empty if nothing)."""
        out = self._out
        if not out:
            return b""
        data = b"".join(out)
        out.clear()  # the list is shared with Flow and StreamSet
        return data

    def parts_to_send(self) -> tuple[list[bytes | memoryview], int]:
        """Everything queued since the last call, unjoined, and its size in bytes.

        For a vectored write: a large body's DATA payloads are views of the
        app's own bytes, which joining would copy once more.
        """
        out = self._out
        if not out:
            return _NOTHING, 0
        parts = out.copy()
        out.clear()  # the list is shared with Flow and StreamSet
        return parts, sum(map(len, parts))

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool = False
    ) -> None:
        """Send a response head, an informational (1xx) head, or trailers.

        Args:
            stream_id: a stream the app runs for.
            headers: a head starts with ``(b":status", ...)``; 1xx heads (103
                Early Hints) may precede the final one (§8.1). After the final
                head, ``headers`` are trailers and must end the stream.
            end_stream: END_STREAM: nothing follows.

        Raises:
            StreamClosedError: we ended the stream, or it is unknown (a send on
                a reset stream, or after the connection closed, is dropped).
            InvalidState: a head without ``:status`` first, a 1xx that ends
                the stream, 101 (§8.6), or trailers that do not end it.
        """
        self._streams.send_headers(stream_id, headers, end_stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> int:
        """Send as much of ``data`` as the flow-control windows allow (§6.9).

        Frames carry at most the peer's SETTINGS_MAX_FRAME_SIZE; END_STREAM
        goes out with the last byte of ``data`` only.

        Returns:
            The bytes taken; wait for ``WindowOpened`` to send the rest. All
            of ``data`` when the send is dropped (the stream was reset).

        Raises:
            StreamClosedError: we ended the stream, or it is unknown.
            InvalidState: the final response head was not sent.
        """
        return self._streams.send_data(stream_id, data, end_stream)

    def send_window(self, stream_id: int) -> int:
        """How many bytes ``send_data`` would take now (0 for an unknown stream)."""
        return self._streams.send_window(stream_id)

    def acknowledge_received_data(self, stream_id: int, n: int) -> None:
        """``n`` flow-controlled bytes of ``stream_id`` are done with: reopen both windows.

        That is ``open_stream_window`` and ``give_back`` at once, for bytes
        no app buffers (padding, a body nobody reads). WINDOW_UPDATEs are
        batched (``flow.py``). A stream the connection no longer has gave
        its bytes back when it closed: nothing to do (so for the two below).
        """
        self._streams.acknowledge(stream_id, n)

    def open_stream_window(self, stream_id: int, n: int) -> None:
        """The app has room for ``n`` more bytes of ``stream_id``: reopen the stream's window."""
        self._streams.open_stream(stream_id, n)

    def give_back(self, stream_id: int, n: int) -> None:
        """The app read ``n`` bytes of ``stream_id``'s body: reopen the connection's window."""
        self._streams.give_back(stream_id, n)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """Send RST_STREAM (e.g. INTERNAL_ERROR: the app failed after its head).

        No event follows; a stream already gone is left alone.
        """
        self._streams.reset(stream_id, error_code)

    def push_promise(self, parent_stream_id: int, headers: list[tuple[bytes, bytes]]) -> int | None:
        """Promise a pushed response (RFC 9113 §8.4); answer it with ``send_headers``.

        ``headers`` is the promised request (``:method`` GET or HEAD,
        ``:scheme``, ``:authority``, ``:path``); the caller checks it.

        Returns:
            The promised (even) stream id, or None: the client disabled push,
            ``config.enable_push`` is off, a GOAWAY went either way, or the
            client's SETTINGS_MAX_CONCURRENT_STREAMS is reached.

        Raises:
            StreamClosedError: the parent cannot carry a PUSH_PROMISE (§6.6:
                a client stream we have not ended).
        """
        if (
            self.state is not _OPEN
            or not self.config.enable_push
            or not self._peer.enable_push
            or self._peer_goaway
        ):
            return None
        return self._streams.push_promise(parent_stream_id, headers)

    # -- the write side's flow, shutdown --------------------------------------------------------

    def pause_writing(self) -> None:
        """The transport's buffer is full (the peer is not reading): bound the replies queued."""
        self._backlog.pause()

    def resume_writing(self) -> None:
        self._backlog.resume()

    def start_graceful_shutdown(self) -> None:
        """GOAWAY NO_ERROR with the highest stream processed (§6.8).

        Open streams finish; streams the client opens after it are ignored.
        """
        state = self.state
        if state is _CLOSED or state is _IDLE or self._goaway_sent:
            return
        streams = self._streams
        streams.goaway_last_id = streams.last_stream_id
        self._goaway_sent = True
        self._out.append(build_goaway(streams.last_stream_id, ErrorCode.NO_ERROR))
        if state is _OPEN:
            self.state = _CLOSING

    def close(self, error_code: int = ErrorCode.NO_ERROR) -> None:
        """Send GOAWAY with ``error_code``; nothing more is read or sent."""
        if self.state is _CLOSED:
            return
        if self.state is not _IDLE:
            self._out.append(build_goaway(self._streams.last_stream_id, error_code))
        self._enter_closed()

    @property
    def last_stream_id(self) -> int:
        """The highest client stream processed: what a GOAWAY reports."""
        return self._streams.last_stream_id

    @property
    def open_stream_count(self) -> int:
        """Client streams open or half-closed: what SETTINGS_MAX_CONCURRENT_STREAMS counts."""
        return self._streams.client_count

    def stream_is_open(self, stream_id: int) -> bool:
        """Whether the connection still has ``stream_id`` (not closed, reset or unknown)."""
        return stream_id in self._streams.active
