"""The streams of one HTTP/2 connection: RFC 9113 §5.1 states and §8 message rules, per stream.

``H2Connection`` reads frames and keeps what is connection-wide (the
preface, HPACK, SETTINGS, PING, GOAWAY, the connection window); everything
that belongs to one stream comes here: a decoded field block becomes a new
request, trailers, or an error by the state of its stream; DATA is checked
against the stream's state, window and content-length; the app's response
leaves through ``send_headers``/``send_data``/``push_promise``. Stream
errors become RST_STREAM in ``stream_error``, the one place they reach the
wire.

Imports the standard library, ``sluiceway.errors`` and its siblings
``config``, ``events``, ``flow``, ``frames``, ``hpack`` (the encoder),
``limits``, ``settings``, ``streams`` and ``validation``.

Invariants:

* ``active`` holds every open, half-closed or reserved stream, and only
  those; a stream leaves it once, through ``_forget``, which gives its
  unread bytes back to the connection window and remembers how it closed.
* A stream that closes with both END_STREAMs refunds one unit of the reset
  budget: a client that completes requests may reset as often as it does.
* The app hears of every stream it runs that ends abnormally: a
  ``StreamReset`` follows each reset of a started stream, whoever sent it.
"""

from __future__ import annotations

from typing import Final

from sluiceway.errors import InvalidState
from sluiceway.http2.config import H2Config
from sluiceway.http2.events import (
    DataReceived,
    Event,
    RequestReceived,
    StreamReset,
    TrailersReceived,
    WindowOpened,
)
from sluiceway.http2.flow import Flow
from sluiceway.http2.frames import (
    DEFAULT_WINDOW_SIZE,
    FLAG_END_STREAM,
    MAX_WINDOW_SIZE,
    ErrorCode,
    FrameType,
    H2ConnectionError,
    H2StreamError,
    build_field_block,
    build_rst_stream,
    frame_header,
)
from sluiceway.http2.hpack_encoder import Encoder
from sluiceway.http2.limits import Budget, ControlBacklog
from sluiceway.http2.settings import PeerSettings
from sluiceway.http2.streams import MIN_CLOSED_MEMORY, ClosedBy, ClosedStreams, Stream, StreamState
from sluiceway.http2.validation import check_request, check_trailers

__all__ = ["StreamClosedError", "StreamSet"]


class StreamClosedError(InvalidState):
    """A send after our own END_STREAM on the stream, or on a stream never opened."""

    def __init__(self, stream_id: int) -> None:
        super().__init__(f"stream {stream_id} is closed")
        self.stream_id = stream_id


_S_RESERVED: Final = StreamState.RESERVED_LOCAL
_S_OPEN: Final = StreamState.OPEN
_S_LOCAL: Final = StreamState.HALF_CLOSED_LOCAL
_S_REMOTE: Final = StreamState.HALF_CLOSED_REMOTE
_BY_END: Final = ClosedBy.END_STREAM
_BY_PEER: Final = ClosedBy.PEER_RESET
_BY_US: Final = ClosedBy.LOCAL_RESET
_PROTOCOL_ERROR: Final = ErrorCode.PROTOCOL_ERROR
_STREAM_CLOSED: Final = ErrorCode.STREAM_CLOSED
_HEADERS: Final = FrameType.HEADERS
_STATUS_431: Final = [(b":status", b"431")]
# What an honest client may send back for each DATA frame we send: a
# WINDOW_UPDATE for the stream, one for the connection, and a PING (gRPC's
# bandwidth probe). None of it counts as abuse.
_ANSWERS_PER_DATA_FRAME: Final = 3


class StreamSet:
    """The streams of one connection; see the module docstring.

    The connection shares with it the output list, the flow-control windows,
    the peer's settings, the HPACK encoder and the budgets, and points
    ``events`` at the list of the read in progress.

    Attributes:
        active: stream id -> ``Stream``, for every stream not closed.
        last_stream_id: the highest client stream processed (what GOAWAY reports).
        client_count: client streams open or half-closed (§5.1.2 counts these).
        goaway_last_id: after our graceful GOAWAY, streams above it are ignored.
        dropping: the connection is closed: sends are dropped.
    """

    def __init__(
        self,
        config: H2Config,
        out: list[bytes | memoryview],
        flow: Flow,
        peer: PeerSettings,
        encoder: Encoder,
        backlog: ControlBacklog,
    ) -> None:
        self._config = config
        self._out = out
        self._flow = flow
        self._peer = peer
        self._encoder = encoder
        self._backlog = backlog
        self.events: list[Event] = []
        self.active: dict[int, Stream] = {}
        self._closed = ClosedStreams(max(MIN_CLOSED_MEMORY, 2 * config.max_concurrent_streams))
        self._checked: set[tuple[bytes, bytes]] = set()  # see validation.check_request
        self.client_count = 0
        self._pushed_count = 0
        self._highest_client_id = 0  # every request so far, refused or ignored ones too
        self._next_push_id = 2
        self.last_stream_id = 0
        self.goaway_last_id = MAX_WINDOW_SIZE
        self.dropping = False
        # A new stream's receive window: the protocol's until the peer has
        # acknowledged our SETTINGS (§6.5.3), then ours.
        self._recv_initial = DEFAULT_WINDOW_SIZE
        self.resets = Budget(config.reset_budget, "stream resets")
        self.no_progress = Budget(config.no_progress_budget, "frames without progress")

    # -- receiving ---------------------------------------------------------------------------

    def open_upgraded(self) -> None:
        """Stream 1 after an h2c upgrade: half-closed (remote), its app started (RFC 7540 §3.2)."""
        stream = Stream(1, _S_REMOTE, self._peer.initial_window_size, 0)
        stream.started = True
        self.active[1] = stream
        self.client_count = 1
        self._highest_client_id = self.last_stream_id = 1

    def on_field_block(
        self,
        stream_id: int,
        fields: list[tuple[bytes, bytes]] | None,
        end_stream: bool,
        self_dependent: bool,
    ) -> None:
        """A decoded field block (None: past ``max_header_list_size``): request or trailers."""
        stream = self.active.get(stream_id)
        if stream is not None:
            self._on_trailers(stream, fields, end_stream, self_dependent)
            return
        if not stream_id & 1:
            raise H2ConnectionError(_PROTOCOL_ERROR, "HEADERS on a stream the client cannot open")
        if stream_id <= self._highest_client_id:
            # Not a new stream (§5.1.1), so a closed one.
            how = self._closed.get(stream_id)
            if how is None:
                raise H2ConnectionError(_PROTOCOL_ERROR, "stream identifier not increasing")
            if how is _BY_END:
                raise H2ConnectionError(_STREAM_CLOSED, "HEADERS on a closed stream")
            if how is _BY_PEER:
                raise H2StreamError(stream_id, _STREAM_CLOSED, "HEADERS after RST_STREAM")
            self.no_progress.spend()  # in flight after our RST_STREAM: dropped
            return
        self._highest_client_id = stream_id
        if stream_id > self.goaway_last_id:
            self._closed.add(stream_id, _BY_US)  # §6.8: after our GOAWAY, ignored
            return
        self.last_stream_id = stream_id
        if fields is None:
            self._refuse_too_large(stream_id, end_stream)
            return
        if self_dependent:
            raise H2StreamError(stream_id, _PROTOCOL_ERROR, "stream depends on itself")
        config = self._config
        if self.client_count >= config.max_concurrent_streams:
            raise H2StreamError(stream_id, ErrorCode.REFUSED_STREAM, "too many concurrent streams")
        content_length = check_request(
            stream_id, fields, config.enable_connect_protocol, self._checked
        )
        if end_stream and content_length > 0:
            raise H2StreamError(stream_id, _PROTOCOL_ERROR, "content-length without a body")
        stream = Stream(
            stream_id,
            _S_REMOTE if end_stream else _S_OPEN,
            self._peer.initial_window_size,
            self._recv_initial,
        )
        stream.content_length = content_length
        stream.started = True
        self.active[stream_id] = stream
        self.client_count += 1
        if self.no_progress.used:
            self.no_progress.refund()
        self.events.append(RequestReceived(stream_id, fields, end_stream))

    def _on_trailers(
        self,
        stream: Stream,
        fields: list[tuple[bytes, bytes]] | None,
        end_stream: bool,
        self_dependent: bool,
    ) -> None:
        stream_id = stream.stream_id
        state = stream.state
        if state is _S_RESERVED:
            raise H2ConnectionError(_PROTOCOL_ERROR, "HEADERS on a reserved stream")
        if self_dependent:
            raise H2StreamError(stream_id, _PROTOCOL_ERROR, "stream depends on itself")
        if state is _S_REMOTE:
            raise H2StreamError(stream_id, _STREAM_CLOSED, "HEADERS after END_STREAM")
        if fields is None:
            raise H2StreamError(stream_id, ErrorCode.ENHANCE_YOUR_CALM, "trailers too large")
        if not end_stream:
            # §8.1: a second field block is trailers, which end the stream.
            raise H2StreamError(stream_id, _PROTOCOL_ERROR, "trailers without END_STREAM")
        check_trailers(stream_id, fields)
        if stream.content_length >= 0 and stream.received != stream.content_length:
            raise H2StreamError(stream_id, _PROTOCOL_ERROR, "body shorter than content-length")
        self.events.append(TrailersReceived(stream_id, fields))
        self._end_remote(stream)

    def _refuse_too_large(self, stream_id: int, end_stream: bool) -> None:
        """RFC 9113 §10.5.1: 431 for the app; RST_STREAM NO_ERROR if the body is still coming."""
        self.resets.spend()
        block = self._encoder.encode(_STATUS_431)
        self._out += build_field_block(_HEADERS, stream_id, block, True, self._peer.max_frame_size)
        if end_stream:
            self._closed.add(stream_id, _BY_END)
        else:
            self._out.append(build_rst_stream(stream_id, ErrorCode.NO_ERROR))
            self._backlog.queued()
            self._closed.add(stream_id, _BY_US)

    def on_data(self, stream_id: int, data: bytes, length: int, end_stream: bool) -> None:
        """A DATA frame the connection window has already counted (``length``, padding included)."""
        stream = self.active.get(stream_id)
        if stream is None:
            self._flow.consumed(length)  # no app will read it
            self._on_closed_stream_frame(stream_id, "DATA")
            return
        self._flow.stream_received(stream, length)
        state = stream.state
        if state is not _S_OPEN and state is not _S_LOCAL:
            if state is _S_RESERVED:
                raise H2ConnectionError(_PROTOCOL_ERROR, "DATA on a reserved stream")
            raise H2StreamError(stream_id, _STREAM_CLOSED, "DATA after END_STREAM")
        expected = stream.content_length
        if expected >= 0:
            received = stream.received + len(data)
            stream.received = received
            # §8.1.1: content-length must equal the DATA payloads' total.
            if received > expected or (end_stream and received != expected):
                raise H2StreamError(
                    stream_id, _PROTOCOL_ERROR, "body length differs from content-length"
                )
        if length:
            if self.no_progress.used:
                self.no_progress.refund()
        elif not end_stream:
            self.no_progress.spend()  # CVE-2019-9518: a flood of empty frames
        self.events.append(DataReceived(stream_id, data, length, end_stream))
        if end_stream:
            self._end_remote(stream)

    def _on_closed_stream_frame(self, stream_id: int, kind: str) -> None:
        """DATA or WINDOW_UPDATE for a stream not in ``active``: idle or closed (§5.1)."""
        if self.is_idle(stream_id):
            raise H2ConnectionError(_PROTOCOL_ERROR, f"{kind} on an idle stream")
        how = self._closed.get(stream_id) if kind == "DATA" else None
        if how is _BY_END:
            raise H2ConnectionError(_STREAM_CLOSED, "DATA on a closed stream")
        if how is _BY_PEER:
            raise H2StreamError(stream_id, _STREAM_CLOSED, "DATA after RST_STREAM")
        # §5.1: DATA in flight after our RST_STREAM, or WINDOW_UPDATE after
        # our END_STREAM, is expected for a while; so is anything on a stream
        # closed so long ago it is forgotten. Ignore them.
        self.no_progress.spend()

    def is_idle(self, stream_id: int) -> bool:
        if stream_id & 1:
            return stream_id > self._highest_client_id
        return stream_id >= self._next_push_id

    def on_window_update(self, stream_id: int, increment: int) -> None:
        stream = self.active.get(stream_id)
        if stream is None:
            self._on_closed_stream_frame(stream_id, "WINDOW_UPDATE")
        elif self._flow.stream_window_update(stream, increment):
            self.events.append(WindowOpened(stream_id))

    def on_rst_stream(self, stream_id: int, code: int) -> None:
        stream = self.active.get(stream_id)
        if stream is None:
            if self.is_idle(stream_id):
                raise H2ConnectionError(_PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            self.no_progress.spend()  # §5.1: ignored on a closed stream
            return
        self._forget(stream, _BY_PEER)
        if stream.started:
            self.events.append(StreamReset(stream_id, code))
            if stream_id & 1:
                self.resets.spend()  # CVE-2023-44487, Rapid Reset
            # A client cancelling a push (a cached resource) is no abuse.

    def change_initial_window(self, delta: int) -> None:
        """The peer's SETTINGS_INITIAL_WINDOW_SIZE moved every send window (§6.9.2)."""
        streams = list(self.active.values())
        for opened in self._flow.change_initial_window(streams, delta):
            self.events.append(WindowOpened(opened))

    def settings_acknowledged(self) -> None:
        """Our SETTINGS now apply: receive windows move to our initial window (§6.9.2)."""
        delta = self._config.initial_window_size - self._recv_initial
        self._recv_initial = self._config.initial_window_size
        if delta:
            for stream in self.active.values():
                stream.recv_window += delta

    def stream_error(self, exc: H2StreamError) -> None:
        """RST_STREAM with the error's code (§5.4.2); tell the adapter if an app runs."""
        stream_id = exc.stream_id
        code = exc.h2_error
        self._out.append(build_rst_stream(stream_id, code))
        self._backlog.queued()
        stream = self.active.get(stream_id)
        if stream is None:
            self._closed.add(stream_id, _BY_US)
        else:
            self._forget(stream, _BY_US)
            if stream.started:
                self.events.append(StreamReset(stream_id, code))
        self.resets.spend()  # CVE-2025-8671: resets the client provokes count too

    # -- the §5.1 moves -----------------------------------------------------------------------

    def _end_remote(self, stream: Stream) -> None:
        """The peer sent END_STREAM."""
        if stream.state is _S_OPEN:
            stream.state = _S_REMOTE
        else:
            self._forget(stream, _BY_END)

    def _end_local(self, stream: Stream) -> None:
        """We sent END_STREAM."""
        if stream.state is _S_OPEN:
            stream.state = _S_LOCAL
        else:
            self._forget(stream, _BY_END)

    def _forget(self, stream: Stream, how: ClosedBy) -> None:
        """``stream`` is closed: give back its unread bytes, remember how it closed."""
        stream_id = stream.stream_id
        del self.active[stream_id]
        stream.state = StreamState.CLOSED
        if stream.recv_held or stream.recv_unacked:
            self._flow.release(stream)
        if stream_id & 1:
            self.client_count -= 1
        else:
            self._pushed_count -= 1
        self._closed.add(stream_id, how)
        if how is _BY_END and self.resets.used:
            self.resets.refund()  # a completed stream pays back one reset

    # -- sending ------------------------------------------------------------------------------

    def _sendable(self, stream_id: int) -> Stream | None:
        """The stream to send on; None to drop the send (reset, or the connection closed).

        One read can report a request and, later in the same list, its
        reset: the adapter may answer a stream it does not yet know is gone.
        """
        if self.dropping:
            return None
        stream = self.active.get(stream_id)
        if stream is not None and stream.state is not _S_LOCAL:
            return stream
        how = self._closed.get(stream_id)
        if how is _BY_PEER or how is _BY_US:
            return None
        raise StreamClosedError(stream_id)

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end_stream: bool
    ) -> None:
        """See ``H2Connection.send_headers``."""
        stream = self._sendable(stream_id)
        if stream is None:
            return
        if not stream.head_sent:
            if not headers or headers[0][0] != b":status":
                raise InvalidState("a response head starts with :status")
            status = headers[0][1]
            if status[:1] == b"1":
                if end_stream or status == b"101":
                    raise InvalidState("an informational head neither ends a stream nor is 101")
            else:
                stream.head_sent = True
            if stream.state is _S_RESERVED:
                stream.state = _S_REMOTE  # §5.1: a promised stream opens with our head
        elif not end_stream:
            raise InvalidState("trailers must end the stream")
        block = self._encoder.encode(headers)
        self._out += build_field_block(
            _HEADERS, stream_id, block, end_stream, self._peer.max_frame_size
        )
        if end_stream:
            self._end_local(stream)

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> int:
        """See ``H2Connection.send_data``."""
        stream = self._sendable(stream_id)
        if stream is None:
            return len(data)
        if not stream.head_sent:
            raise InvalidState("DATA before the response head")
        total = n = len(data)
        if total:  # an empty DATA frame (END_STREAM alone) is not flow-controlled
            flow = self._flow
            allowance = flow.allowance(stream)
            if allowance < total:
                n = allowance
                if not n:
                    return 0
                end_stream = False
            stream.send_window -= n
            flow.send_window -= n
        out = self._out
        flags = FLAG_END_STREAM if end_stream else 0
        max_frame = self._peer.max_frame_size
        frames = 1
        if n <= max_frame:
            out.append(frame_header(n, 0, flags, stream_id))
            out.append(data if n == total else data[:n])
        else:
            view = memoryview(data)
            full = frame_header(max_frame, 0, 0, stream_id)  # a full frame without flags
            last = n - (n - 1) % max_frame - 1  # where the last frame starts
            pos = 0
            while pos < last:  # (a native loop: mypyc's range() with a variable step is not)
                out.append(full)
                out.append(view[pos : pos + max_frame])  # no copy: written by a vectored write
                pos += max_frame
            size = n - last
            out.append(
                full if size == max_frame and not flags else frame_header(size, 0, flags, stream_id)
            )
            out.append(view[last:n])
            frames = last // max_frame + 1
        if self.no_progress.used:
            self.no_progress.refund(frames * _ANSWERS_PER_DATA_FRAME)
        if end_stream:
            self._end_local(stream)
        return n

    def send_window(self, stream_id: int) -> int:
        stream = self.active.get(stream_id)
        return 0 if stream is None else self._flow.allowance(stream)

    def acknowledge(self, stream_id: int, n: int) -> None:
        stream = self.active.get(stream_id)
        if stream is not None:
            self._flow.acknowledge(stream, n)

    def open_stream(self, stream_id: int, n: int) -> None:
        stream = self.active.get(stream_id)
        if stream is not None:
            self._flow.open_stream(stream, n)

    def give_back(self, stream_id: int, n: int) -> None:
        stream = self.active.get(stream_id)
        if stream is not None:
            self._flow.give_back(stream, n)

    def reset(self, stream_id: int, error_code: int) -> None:
        """Our RST_STREAM, on the app's behalf: no event, no budget."""
        if self.dropping:
            return
        stream = self.active.get(stream_id)
        if stream is not None:
            self._out.append(build_rst_stream(stream_id, error_code))
            self._forget(stream, _BY_US)

    def push_promise(self, parent_stream_id: int, headers: list[tuple[bytes, bytes]]) -> int | None:
        """See ``H2Connection.push_promise``; the connection checked it may push at all."""
        if (
            self._pushed_count >= self._peer.max_concurrent_streams
            or self._next_push_id > MAX_WINDOW_SIZE
        ):
            return None
        parent = self.active.get(parent_stream_id)
        if parent is None or not parent_stream_id & 1 or parent.state is _S_LOCAL:
            raise StreamClosedError(parent_stream_id)
        promised = self._next_push_id
        self._next_push_id = promised + 2
        block = self._encoder.encode(headers)
        self._out += build_field_block(
            FrameType.PUSH_PROMISE,
            parent_stream_id,
            block,
            False,
            self._peer.max_frame_size,
            promised.to_bytes(4, "big"),
        )
        stream = Stream(promised, _S_RESERVED, self._peer.initial_window_size, 0)
        stream.started = True
        self.active[promised] = stream
        self._pushed_count += 1
        return promised
