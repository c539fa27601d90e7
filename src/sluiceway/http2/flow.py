"""HTTP/2 flow control (RFC 9113 §5.2, §6.9): the windows, both ways, and our WINDOW_UPDATEs.

``Flow`` holds the connection's two windows and does the arithmetic on a
stream's (``Stream`` fields): what a DATA frame costs when it arrives, what
the app gives back as it reads, what ``send_data`` may take, and what the
peer's WINDOW_UPDATE and SETTINGS_INITIAL_WINDOW_SIZE change.

Receive side, the memory bound: the peer may send only what we granted.
A stream's window is reopened while its app keeps up (``open_stream``:
the app's buffer is below its mark); the connection's only once an app has
read the bytes (``give_back``), so all streams together never hold more
than the connection window, however many there are. Both are batched (a
stream's WINDOW_UPDATE once half its window is due, the connection's once
half of its window is). Bytes no app will read (a stream reset or closed
with unread body) go back to the connection at once (``release``,
``acknowledge``), or the connection window would leak shut.

Imports the standard library and the siblings ``frames`` and ``streams``.
"""

from __future__ import annotations

from typing import Final

from sluiceway.http2.frames import (
    DEFAULT_WINDOW_SIZE,
    MAX_WINDOW_SIZE,
    ErrorCode,
    H2ConnectionError,
    H2StreamError,
    build_window_update,
)
from sluiceway.http2.streams import Stream, StreamState

__all__ = ["Flow"]

_FLOW_CONTROL_ERROR: Final = ErrorCode.FLOW_CONTROL_ERROR
_OPEN: Final = StreamState.OPEN
_HALF_CLOSED_LOCAL: Final = StreamState.HALF_CLOSED_LOCAL


class Flow:
    """The connection's windows; WINDOW_UPDATE frames go to the shared ``out`` list.

    Attributes:
        send_window: what we may still send on the connection (only stream
            windows can go negative, §6.9.2).
        recv_window: what the peer may still send on the connection.
    """

    __slots__ = (
        "_conn_update_at",
        "_out",
        "_recv_consumed",
        "_stream_update_at",
        "recv_window",
        "send_window",
    )

    def __init__(
        self, out: list[bytes | memoryview], connection_window: int, stream_window: int
    ) -> None:
        self._out = out
        self.send_window = DEFAULT_WINDOW_SIZE
        self.recv_window = DEFAULT_WINDOW_SIZE
        # Consumed bytes no WINDOW_UPDATE has returned yet, and when to send one.
        self._recv_consumed = 0
        self._conn_update_at = connection_window // 2
        self._stream_update_at = max(1, stream_window // 2)

    def open_connection_window(self, size: int) -> None:
        """Grow our connection receive window from 65,535 to ``size`` (sent with our SETTINGS)."""
        increment = size - self.recv_window
        if increment > 0:
            self._out.append(build_window_update(0, increment))
            self.recv_window = size

    # -- receiving --------------------------------------------------------------------

    def received(self, length: int) -> None:
        """A DATA frame of ``length`` (padding included) arrived, on any stream.

        Raises:
            H2ConnectionError: FLOW_CONTROL_ERROR, past the connection window.
        """
        window = self.recv_window - length
        if window < 0:
            raise H2ConnectionError(_FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self.recv_window = window

    def stream_received(self, stream: Stream, length: int) -> None:
        """The same frame, for its stream: it waits on the app now.

        Raises:
            H2StreamError: FLOW_CONTROL_ERROR, past the stream's window.
        """
        stream.recv_unacked += length
        stream.recv_held += length
        window = stream.recv_window - length
        if window < 0:
            raise H2StreamError(
                stream.stream_id, _FLOW_CONTROL_ERROR, "DATA beyond the stream window"
            )
        stream.recv_window = window

    def consumed(self, n: int) -> None:
        """``n`` received bytes are done with: WINDOW_UPDATE the connection once half is due."""
        consumed = self._recv_consumed + n
        if consumed >= self._conn_update_at:
            self._out.append(build_window_update(0, consumed))
            self.recv_window += consumed
            consumed = 0
        self._recv_consumed = consumed

    def acknowledge(self, stream: Stream, n: int) -> None:
        """``n`` bytes of ``stream`` are done with: reopen both windows, batched."""
        self.give_back(stream, n)
        self.open_stream(stream, n)

    def give_back(self, stream: Stream, n: int) -> None:
        """The app read ``n`` bytes of ``stream``: the connection window may have them back."""
        if n > stream.recv_held:
            n = stream.recv_held
        if n > 0:
            stream.recv_held -= n
            self.consumed(n)

    def open_stream(self, stream: Stream, n: int) -> None:
        """The app has room for ``n`` more bytes of ``stream``: reopen its window, batched."""
        if n > stream.recv_unacked:
            n = stream.recv_unacked
        if n <= 0:
            return
        stream.recv_unacked -= n
        state = stream.state
        if state is _OPEN or state is _HALF_CLOSED_LOCAL:  # the peer may still send
            consumed = stream.recv_consumed + n
            if consumed >= self._stream_update_at:
                self._out.append(build_window_update(stream.stream_id, consumed))
                stream.recv_window += consumed
                consumed = 0
            stream.recv_consumed = consumed

    def release(self, stream: Stream) -> None:
        """``stream`` is gone: what its app never read goes back to the connection."""
        if stream.recv_held:
            self.consumed(stream.recv_held)
            stream.recv_held = 0
        stream.recv_unacked = 0

    # -- sending ----------------------------------------------------------------------

    def allowance(self, stream: Stream) -> int:
        """What ``stream`` may send now (never negative)."""
        n = min(stream.send_window, self.send_window)
        return n if n > 0 else 0

    def sent(self, stream: Stream, n: int) -> None:
        stream.send_window -= n
        self.send_window -= n

    def window_update(self, increment: int) -> bool:
        """The peer's WINDOW_UPDATE on stream 0; True if senders may have been waiting.

        Raises:
            H2ConnectionError: PROTOCOL_ERROR for 0, FLOW_CONTROL_ERROR past 2^31-1.
        """
        if not increment:
            raise H2ConnectionError(
                ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection"
            )
        old = self.send_window
        window = old + increment
        if window > MAX_WINDOW_SIZE:
            raise H2ConnectionError(_FLOW_CONTROL_ERROR, "connection window above 2^31-1")
        self.send_window = window
        # A sender waits only on a window that was used up.
        return old <= 0 < window

    def stream_window_update(self, stream: Stream, increment: int) -> bool:
        """The peer's WINDOW_UPDATE on ``stream``; True if its sender may move now.

        Raises:
            H2StreamError: PROTOCOL_ERROR for 0, FLOW_CONTROL_ERROR past 2^31-1 (§6.9.1).
        """
        if not increment:
            raise H2StreamError(stream.stream_id, ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        old = stream.send_window
        window = old + increment
        if window > MAX_WINDOW_SIZE:
            raise H2StreamError(stream.stream_id, _FLOW_CONTROL_ERROR, "stream window above 2^31-1")
        stream.send_window = window
        return old <= 0 < window and self.send_window > 0

    def change_initial_window(self, streams: list[Stream], delta: int) -> list[int]:
        """§6.9.2: every stream's send window moves by ``delta``, maybe below zero.

        Returns:
            The streams whose senders may move now.

        Raises:
            H2ConnectionError: FLOW_CONTROL_ERROR, a window past 2^31-1.
        """
        opened = []
        connection_open = self.send_window > 0
        for stream in streams:
            old = stream.send_window
            window = old + delta
            if window > MAX_WINDOW_SIZE:
                raise H2ConnectionError(_FLOW_CONTROL_ERROR, "a stream window above 2^31-1")
            stream.send_window = window
            if old <= 0 < window and connection_open:
                opened.append(stream.stream_id)
        return opened
