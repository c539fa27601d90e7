"""SETTINGS both ways (RFC 9113 §6.5): what we announce, and the peer's values, checked.

``local_settings`` turns an ``H2Config`` into our SETTINGS frame's pairs;
``PeerSettings`` keeps what the client announced (the §6.5.2 initial values
until it does) and rejects what §6.5.2 forbids, with its error code.

Imports the standard library and the siblings ``config`` and ``frames``.
"""

from __future__ import annotations

from typing import Final

from sluiceway.http2.config import H2Config
from sluiceway.http2.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_WINDOW_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MAX_WINDOW_SIZE,
    ErrorCode,
    H2ConnectionError,
    SettingCode,
)

__all__ = ["DEFAULT_TABLE_SIZE", "PeerSettings", "local_settings"]

# RFC 7541 §4.2 / RFC 9113 §6.5.2: SETTINGS_HEADER_TABLE_SIZE's initial value.
DEFAULT_TABLE_SIZE: Final = 4096


def local_settings(config: H2Config) -> list[tuple[int, int]]:
    """Our SETTINGS: the values that differ from §6.5.2's initial ones, and the limits.

    SETTINGS_ENABLE_PUSH is never sent: a server must not send 1 and need
    not send 0 (§6.5.2).
    """
    settings = [(int(SettingCode.MAX_CONCURRENT_STREAMS), config.max_concurrent_streams)]
    if config.initial_window_size != DEFAULT_WINDOW_SIZE:
        settings.append((SettingCode.INITIAL_WINDOW_SIZE, config.initial_window_size))
    if config.max_frame_size != DEFAULT_MAX_FRAME_SIZE:
        settings.append((SettingCode.MAX_FRAME_SIZE, config.max_frame_size))
    if config.header_table_size != DEFAULT_TABLE_SIZE:
        settings.append((SettingCode.HEADER_TABLE_SIZE, config.header_table_size))
    settings.append((SettingCode.MAX_HEADER_LIST_SIZE, config.max_header_list_size))
    if config.enable_connect_protocol:
        settings.append((SettingCode.ENABLE_CONNECT_PROTOCOL, 1))  # RFC 8441 §3
    return settings


class PeerSettings:
    """The client's settings as they stand."""

    __slots__ = (
        "enable_push",
        "header_table_size",
        "initial_window_size",
        "max_concurrent_streams",
        "max_frame_size",
    )

    def __init__(self) -> None:
        self.header_table_size = DEFAULT_TABLE_SIZE
        self.enable_push = True
        self.max_concurrent_streams = MAX_WINDOW_SIZE  # "no limit" until it says
        self.initial_window_size = DEFAULT_WINDOW_SIZE
        self.max_frame_size = DEFAULT_MAX_FRAME_SIZE

    def apply(self, settings: list[tuple[int, int]]) -> int:
        """Take the pairs of one SETTINGS frame, in order (§6.5.3).

        Returns:
            How much SETTINGS_INITIAL_WINDOW_SIZE changed (§6.9.2: every
            stream's send window moves by that much).

        Raises:
            H2ConnectionError: FLOW_CONTROL_ERROR, an initial window above
                2^31-1; PROTOCOL_ERROR, a MAX_FRAME_SIZE out of range or a
                boolean setting that is not 0 or 1.
        """
        old_window = self.initial_window_size
        for ident, value in settings:
            if ident == 4:  # INITIAL_WINDOW_SIZE
                if value > MAX_WINDOW_SIZE:
                    raise H2ConnectionError(
                        ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE above 2^31-1"
                    )
                self.initial_window_size = value
            elif ident == 5:  # MAX_FRAME_SIZE
                if not DEFAULT_MAX_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
                    raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "MAX_FRAME_SIZE out of range")
                self.max_frame_size = value
            elif ident == 1:  # HEADER_TABLE_SIZE
                self.header_table_size = value
            elif ident == 2:  # ENABLE_PUSH
                if value > 1:
                    raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "ENABLE_PUSH is not 0 or 1")
                self.enable_push = value == 1
            elif ident == 3:  # MAX_CONCURRENT_STREAMS
                self.max_concurrent_streams = value
            elif (ident == 8 or ident == 9) and value > 1:  # RFC 8441 §3, RFC 9218 §2.1
                raise H2ConnectionError(ErrorCode.PROTOCOL_ERROR, "boolean setting is not 0 or 1")
            # MAX_HEADER_LIST_SIZE is advisory; unknown settings are ignored (§6.5.2).
        return self.initial_window_size - old_window
