"""What the sans-I/O WebSocket connection reports: its states and its events.

``connection.py`` creates these and re-exports them; adapters may import them
from either module. Imports only the standard library.

Events are frozen, slotted dataclasses. They are built on the hot path for
every message, so they do not validate their fields: the connection only
creates them from data it has already checked.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "BytesMessage",
    "CloseReceived",
    "ConnectionFailed",
    "Event",
    "Ping",
    "Pong",
    "State",
    "TextMessage",
]


class State(enum.Enum):
    """Connection states, named as RFC 6455 §4.1 and §7 name them.

    CONNECTING belongs to the handshake and never reaches this object.
    """

    OPEN = 1
    CLOSING = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A whole text message, decoded (fragments already joined)."""

    data: str


@dataclass(frozen=True, slots=True)
class BytesMessage:
    """A whole binary message (fragments already joined)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A Ping arrived; the Pong answering it is already in ``data_to_send``."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A Pong arrived (the answer to ``send_ping``, or unsolicited)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The peer sent Close. ``code`` is 1005 when its frame had no code.

    If we had not sent Close yet, the echo is already in ``data_to_send``.
    Either way the connection is now CLOSED and the transport should close.
    """

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionFailed:
    """The peer broke the protocol; we sent Close with ``code`` (§7.1.7).

    The connection is CLOSED; ``Connection.error`` holds the exception.
    """

    code: int
    reason: str


Event = TextMessage | BytesMessage | Ping | Pong | CloseReceived | ConnectionFailed
