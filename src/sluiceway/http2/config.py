"""What an HTTP/2 connection promises its client, and how much abuse it takes.

``H2Config`` is frozen and checked once; one serves every connection of a
server. The SETTINGS it implies are sent by ``H2Connection.initiate``.

Imports the standard library and the sibling ``frames``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluiceway.config import Config

from sluiceway.http2.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MAX_WINDOW_SIZE,
)

__all__ = ["H2Config", "h2_config"]


@dataclass(frozen=True, slots=True)
class H2Config:
    """What a connection promises the client and how much abuse it takes.

    Attributes:
        max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS; a stream
            over it is refused (RST_STREAM REFUSED_STREAM, §5.1.2).
        initial_window_size: SETTINGS_INITIAL_WINDOW_SIZE, our receive window
            per stream in bytes: what a client may send before the app reads.
        connection_window_size: our receive window for the whole connection
            in bytes (a WINDOW_UPDATE at start raises it from 65,535).
        max_frame_size: SETTINGS_MAX_FRAME_SIZE, the largest frame payload we
            accept, in bytes.
        max_header_list_size: SETTINGS_MAX_HEADER_LIST_SIZE in bytes (RFC
            7541 sizes: name + value + 32 per field); over it, 431.
        header_table_size: SETTINGS_HEADER_TABLE_SIZE, our HPACK decoder's
            dynamic table in bytes.
        enable_connect_protocol: SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC
            8441): extended CONNECT (WebSocket over HTTP/2) is accepted.
        enable_push: whether ``push_promise`` may push at all; it pushes only
            if the client has not sent SETTINGS_ENABLE_PUSH = 0 either.
        max_continuation_frames: CONTINUATION frames allowed in one header block.
        reset_budget: stream resets (the client's, and those its errors
            provoke from us) allowed beyond one per completed stream.
        no_progress_budget: frames that move no request forward allowed
            beyond one per request or DATA frame.
        max_queued_control_frames: ACKs and RST_STREAMs queued while the
            peer does not read (writing paused).
    """

    max_concurrent_streams: int = 100
    initial_window_size: int = DEFAULT_WINDOW_SIZE
    connection_window_size: int = 1 << 20
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_header_list_size: int = 65536
    header_table_size: int = 4096
    enable_connect_protocol: bool = True
    enable_push: bool = True
    max_continuation_frames: int = 32
    reset_budget: int = 200
    no_progress_budget: int = 1000
    max_queued_control_frames: int = 1000

    def __post_init__(self) -> None:
        if not DEFAULT_WINDOW_SIZE <= self.connection_window_size <= MAX_WINDOW_SIZE:
            raise ValueError("connection_window_size must be in [65535, 2^31-1]")
        if not 1 <= self.initial_window_size <= MAX_WINDOW_SIZE:
            raise ValueError("initial_window_size must be in [1, 2^31-1]")
        if not DEFAULT_MAX_FRAME_SIZE <= self.max_frame_size <= MAX_FRAME_SIZE_LIMIT:
            raise ValueError("max_frame_size must be in [16384, 2^24-1]")
        for name, value in (
            ("max_concurrent_streams", self.max_concurrent_streams),
            ("max_header_list_size", self.max_header_list_size),
            ("max_continuation_frames", self.max_continuation_frames),
            ("reset_budget", self.reset_budget),
            ("no_progress_budget", self.no_progress_budget),
            ("max_queued_control_frames", self.max_queued_control_frames),
        ):
            if value < 1:
                raise ValueError(f"{name} must be positive")
        if self.header_table_size < 0:
            raise ValueError("header_table_size must not be negative")


def h2_config(config: Config) -> H2Config:
    """The connection settings from the server's ``Config``.

    Here, not beside the adapter: building them must not import the engine
    (HPACK's Huffman tables are 2 MB), which loads with the first HTTP/2
    connection.
    """
    return H2Config(
        max_concurrent_streams=config.h2_max_concurrent_streams,
        initial_window_size=config.h2_initial_window_size,
        max_frame_size=config.h2_max_inbound_frame_size,
        max_header_list_size=config.h2_max_header_list_size,
        # RFC 8441 §3: offer WebSockets over HTTP/2 only when they are on.
        enable_connect_protocol=config.ws != "none",
    )
