"""Cutting the client's bytes into frames (RFC 9113 §4.1), for ``H2Connection``.

``FrameReader.feed(data)`` finds each whole frame in a read, checks its
length against our SETTINGS_MAX_FRAME_SIZE (§4.2) and hands it to
``H2Connection.on_frame``, which knows what the frames mean. The header is
read at an offset of the read (``struct.unpack_from``): no copy of the
buffer per frame.

Two things keep a large upload from being copied over and over:

* A read that ends inside a frame keeps only that frame's start; the next
  read completes just that frame, and its other frames are parsed in place
  (``_complete_partial``), rather than joining the whole next read to it.
* A run of whole DATA frames on one stream in one read is handed on as one
  frame (``_data_run``): one join of views into the read, and one pass
  through the connection's per-frame work, instead of a slice and a pass per
  16 KiB frame. It is accounted as the frames one by one would be: the
  windows, content-length and END_STREAM see only the payload total and
  the last frame's flags, and each frame after the first refunds the
  no-progress budget as its own DATA frame would have.

Invariants: what is buffered between reads is at most one frame (header
plus ``max_frame_size``); a frame too long is refused from its header alone,
before any of its payload is kept.

Imports the standard library and its sibling ``frames`` (``limits`` and
``connection`` for types only).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

from sluiceway.http2.frames import FLAG_END_STREAM, FLAG_PADDED, ErrorCode, H2ConnectionError

if TYPE_CHECKING:
    from sluiceway.http2.connection import H2Connection
    from sluiceway.http2.limits import Budget

__all__ = ["FrameReader"]

_END_OR_PADDED: Final = FLAG_END_STREAM | FLAG_PADDED
_FRAME_SIZE_ERROR: Final = ErrorCode.FRAME_SIZE_ERROR

_unpack_header = struct.Struct(">HBBBL").unpack_from


class FrameReader:
    """The frames of one connection's byte stream; see the module docstring."""

    __slots__ = ("_buf", "_conn", "_need", "_no_progress", "max_frame_size")

    def __init__(self, conn: H2Connection, max_frame_size: int, no_progress: Budget) -> None:
        self._conn = conn
        self.max_frame_size = max_frame_size
        self._no_progress = no_progress
        self._buf = bytearray()  # a partial frame, carried to the next read
        self._need = 9  # bytes _buf must hold before it is worth parsing

    def feed(self, data: bytes) -> None:
        """Hand every whole frame of ``data`` on; keep a partial last one for the next read.

        Raises:
            H2ConnectionError: a frame longer than ``max_frame_size``, or
                whatever ``on_frame`` raised (the connection is over).
        """
        pos = self._complete_partial(data) if self._buf else 0
        if pos >= 0:
            pos = self._frames(data, pos)
            if pos < len(data):
                self._buf = bytearray(memoryview(data)[pos:])

    def _complete_partial(self, data: bytes) -> int:
        """Finish the frame a previous read left partial, from the front of ``data``.

        Returns:
            Where ``data``'s own frames start, or -1: all of it went to the
            partial frame, which is still short.
        """
        buf = self._buf
        view = memoryview(data)
        pos = 0
        while buf:
            take = self._need - len(buf)
            if take > len(data) - pos:
                buf += view[pos:]
                return -1
            buf += view[pos : pos + take]
            pos += take
            frame = bytes(buf)
            buf.clear()
            if not self._frames(frame, 0):
                buf += frame  # that was the frame header: now ``_need`` covers the payload
        return pos

    def _frames(self, data: bytes, pos: int) -> int:
        """Hand on every whole frame in ``data`` from ``pos``; return where a partial one starts."""
        end = len(data)
        max_frame_size = self.max_frame_size
        conn = self._conn
        while end - pos >= 9:
            high, low, frame_type, flags, stream_id = _unpack_header(data, pos)
            length = (high << 8) | low
            if length > max_frame_size:
                # §4.2: only a frame that cannot touch the connection may be a
                # stream error; none is worth reading this far for.
                raise H2ConnectionError(
                    _FRAME_SIZE_ERROR, "frame larger than SETTINGS_MAX_FRAME_SIZE"
                )
            frame_end = pos + 9 + length
            if frame_end > end:
                self._need = frame_end - pos
                return pos
            stream_id &= 0x7FFFFFFF  # §4.1: the reserved bit is ignored
            if frame_type == 0 and length and not flags & _END_OR_PADDED and end - frame_end >= 9:
                payload, frame_end, flags = self._data_run(data, pos, frame_end, stream_id)
            else:
                payload = data[pos + 9 : frame_end]
            pos = frame_end
            conn.on_frame(frame_type, flags, stream_id, payload)
        self._need = 9
        return pos

    def _data_run(
        self, data: bytes, pos: int, frame_end: int, stream_id: int
    ) -> tuple[bytes, int, int]:
        """The DATA frame at ``pos`` and the whole DATA frames after it on the same stream, as one.

        Padded and empty frames end a run (padding is stripped frame by
        frame; empty ones are counted against floods), as does anything too
        long, which ``_frames`` then refuses, and END_STREAM, which only the
        last frame of a run may carry.

        Returns:
            The joined payload, where the run ends, and the last frame's flags.
        """
        end = len(data)
        max_frame_size = self.max_frame_size
        view = memoryview(data)
        parts = [view[pos + 9 : frame_end]]
        flags = 0
        while end - frame_end >= 9:
            high, low, frame_type, next_flags, next_id = _unpack_header(data, frame_end)
            length = (high << 8) | low
            next_end = frame_end + 9 + length
            if (
                frame_type != 0
                or next_id & 0x7FFFFFFF != stream_id
                or next_flags & FLAG_PADDED
                or not length
                or length > max_frame_size
                or next_end > end
            ):
                break
            parts.append(view[frame_end + 9 : next_end])
            frame_end = next_end
            flags = next_flags
            if flags & FLAG_END_STREAM:
                break
        if len(parts) == 1:
            return data[pos + 9 : frame_end], frame_end, flags
        if self._no_progress.used:
            self._no_progress.refund(len(parts) - 1)  # the connection refunds the first
        return b"".join(parts), frame_end, flags
