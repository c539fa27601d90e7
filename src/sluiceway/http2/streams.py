"""Per-stream state of the HTTP/2 connection (RFC 9113 §5.1).

``Stream`` is a plain record the connection mutates: its §5.1 state, both
flow-control windows, what the app has consumed and the content-length
check. ``ClosedStreams`` remembers how recent streams closed, because §5.1
answers a late frame differently after a RST_STREAM than after END_STREAM.

Imports only the standard library.

Invariants:

* A ``Stream`` exists only while open, half-closed or reserved; closed
  streams live on as one ``ClosedBy`` entry in a bounded ``ClosedStreams``.
* ``recv_window`` is what the peer may still send; ``recv_unacked`` is what
  it sent that the stream's window has not been reopened for (the app is
  behind); ``recv_consumed`` is what was reopened that no WINDOW_UPDATE has
  returned yet. Their sum never exceeds the initial window, so a slow app
  bounds the body the server holds for one stream.
* ``recv_held`` is what the stream received that the connection window has
  not had back: the app has not read it yet. The connection window, given
  back only as apps read, bounds the body held for all streams together.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["MIN_CLOSED_MEMORY", "ClosedBy", "ClosedStreams", "Stream", "StreamState"]


class StreamState(enum.Enum):
    """The stream states of RFC 9113 §5.1 a server's stream can be in (idle is no object)."""

    RESERVED_LOCAL = 1  # promised by our PUSH_PROMISE, head not sent yet
    OPEN = 2
    HALF_CLOSED_LOCAL = 3  # we sent END_STREAM
    HALF_CLOSED_REMOTE = 4  # the peer sent END_STREAM
    CLOSED = 5  # transient: a closed Stream is dropped at once


class ClosedBy(enum.Enum):
    """How a stream closed, which decides how a late frame on it is treated (§5.1)."""

    END_STREAM = 1  # both sides ended: a frame now is a STREAM_CLOSED connection error
    PEER_RESET = 2  # the peer's RST_STREAM: a frame now is a STREAM_CLOSED stream error
    LOCAL_RESET = 3  # our RST_STREAM: frames in flight are ignored (§5.4.2)


class Stream:
    """One stream the connection tracks; the connection reads and writes its fields."""

    __slots__ = (
        "content_length",
        "head_sent",
        "received",
        "recv_consumed",
        "recv_held",
        "recv_unacked",
        "recv_window",
        "send_window",
        "started",
        "state",
        "stream_id",
    )

    def __init__(
        self, stream_id: int, state: StreamState, send_window: int, recv_window: int
    ) -> None:
        self.stream_id = stream_id
        self.state = state
        self.send_window = send_window  # may go negative after a SETTINGS change (§6.9.2)
        self.recv_window = recv_window
        self.recv_unacked = 0
        self.recv_consumed = 0
        self.recv_held = 0
        # The request's content-length (-1: none) and the DATA bytes so far (§8.1.1).
        self.content_length = -1
        self.received = 0
        # The app runs for it (RequestReceived was reported, or it was pushed or upgraded).
        self.started = False
        # The final (non-1xx) response head went out: DATA and trailers may follow.
        self.head_sent = False


class ClosedStreams:
    """How the most recent ``capacity`` closed streams closed, oldest forgotten first.

    ``get`` is None for a stream forgotten here and for one the peer
    skipped (§5.1.1 closes it implicitly): the connection then ignores late
    DATA, which may be in flight, and refuses a HEADERS block, which a peer
    never sends on an old stream.
    """

    __slots__ = ("_capacity", "_closed")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._closed: dict[int, ClosedBy] = {}

    def add(self, stream_id: int, how: ClosedBy) -> None:
        closed = self._closed
        closed[stream_id] = how
        if len(closed) > self._capacity:
            del closed[next(iter(closed))]  # dicts keep insertion order: the oldest

    def get(self, stream_id: int) -> ClosedBy | None:
        return self._closed.get(stream_id)


# A closed stream is remembered for at least this many later closes.
MIN_CLOSED_MEMORY: Final = 256
