"""Bounds on what one HTTP/2 peer can make the server do: the abuse budgets and header blocks.

``Budget`` counts a peer's costly or no-progress actions (the CVEs of the
2019 Netflix advisories, Rapid Reset, MadeYouReset); ``HeaderBlock``
assembles a field block from HEADERS and CONTINUATION frames with its size
and frame count bounded (the 2024 CONTINUATION flood); ``ControlBacklog``
bounds the replies queued for a peer that does not read. Going over any is a
connection error ENHANCE_YOUR_CALM, raised here.

Imports the standard library and the sibling ``frames``.
"""

from __future__ import annotations

from typing import Final

from sluiceway.http2.frames import ErrorCode, H2ConnectionError

__all__ = ["Budget", "ControlBacklog", "HeaderBlock"]

_CALM: Final = ErrorCode.ENHANCE_YOUR_CALM


class Budget:
    """A per-connection allowance of a peer's costly actions, refilled by useful work.

    ``spend`` counts one action and raises once the peer is over ``limit``;
    ``refund`` gives some back (never below zero). With no clock in a
    sans-I/O object, the window slides over work rather than time: a peer
    that keeps doing real requests may do the costly thing as often as it
    does useful ones, and one that only abuses runs out after ``limit``.
    """

    __slots__ = ("_what", "limit", "used")

    def __init__(self, limit: int, what: str) -> None:
        self.limit = limit
        self.used = 0
        self._what = what

    def spend(self) -> None:
        """Count one action.

        Raises:
            H2ConnectionError: ENHANCE_YOUR_CALM, over the limit.
        """
        used = self.used + 1
        self.used = used
        if used > self.limit:
            raise H2ConnectionError(_CALM, f"too many {self._what}")

    def refund(self, n: int = 1) -> None:
        used = self.used - n
        self.used = used if used > 0 else 0


class HeaderBlock:
    """The field block arriving in pieces: HEADERS without END_HEADERS, then CONTINUATION.

    ``stream_id`` is 0 when no block is in progress. RFC 9113 §4.3: the
    pieces are contiguous, so the connection refuses any other frame while
    one is. The block is bounded by ``max_size`` compressed bytes and
    ``max_frames`` CONTINUATION frames: past either, ENHANCE_YOUR_CALM,
    because a block cannot be dropped without decoding it (the HPACK
    context would lose step), so it must not be allowed to grow.
    """

    __slots__ = (
        "_frames",
        "_max_frames",
        "_max_size",
        "_parts",
        "_size",
        "bad_priority",
        "end_stream",
        "stream_id",
    )

    def __init__(self, max_size: int, max_frames: int) -> None:
        self._max_size = max_size
        self._max_frames = max_frames
        self.stream_id = 0
        self.end_stream = False
        self.bad_priority = False
        self._parts: list[bytes] = []
        self._size = 0
        self._frames = 0

    def start(self, stream_id: int, fragment: bytes, end_stream: bool, bad_priority: bool) -> None:
        """A HEADERS frame without END_HEADERS opened a block (the flags of HEADERS hold)."""
        self.stream_id = stream_id
        self.end_stream = end_stream
        self.bad_priority = bad_priority
        self._parts = [fragment]
        self._size = len(fragment)
        self._frames = 0

    def add(self, stream_id: int, fragment: bytes, end_headers: bool) -> bytes | None:
        """A CONTINUATION frame; returns the whole block once ``end_headers``.

        Raises:
            H2ConnectionError: PROTOCOL_ERROR, no block in progress on
                ``stream_id`` (§6.10); ENHANCE_YOUR_CALM, the block is too large.
        """
        if stream_id != self.stream_id or not stream_id:
            raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block")
        size = self._size + len(fragment)
        frames = self._frames + 1
        if size > self._max_size or frames > self._max_frames:
            raise H2ConnectionError(_CALM, "header block too large (CONTINUATION flood)")
        self._size = size
        self._frames = frames
        self._parts.append(fragment)
        if not end_headers:
            return None
        block = b"".join(self._parts)
        self.stream_id = 0
        self._parts = []
        return block


class ControlBacklog:
    """Replies to the peer (ACKs, RST_STREAM) queued while it does not read (CVE-2019-9512/9515).

    The adapter says when the transport's buffer is full (``pause``) and
    drained (``resume``); in between, at most ``limit`` replies are queued.
    """

    __slots__ = ("_count", "_limit", "paused")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._count = 0
        self.paused = False

    def queued(self) -> None:
        """One reply was queued.

        Raises:
            H2ConnectionError: ENHANCE_YOUR_CALM, over the limit while paused.
        """
        if self.paused:
            self._count += 1
            if self._count > self._limit:
                raise H2ConnectionError(_CALM, "peer does not read what it asks for")

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._count = 0
