"""What the sans-I/O HTTP/2 connection reports to its adapter.

``connection.py`` creates these; the adapter (``protocol.py``) dispatches on
their type. Imports only the standard library.

Events are frozen, slotted dataclasses. They are built on the hot path, once
per request or DATA frame, so they do not validate their fields: the
connection only creates them from frames it has already checked.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConnectionTerminated",
    "DataReceived",
    "Event",
    "RequestReceived",
    "StreamReset",
    "TrailersReceived",
    "WindowOpened",
]


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request head arrived on a new stream: start the app.

    ``headers`` is the decoded field list, already checked against RFC 9113
    §8.2-§8.3: pseudo-header fields first (``:method``, ``:scheme``,
    ``:authority``, ``:path``, ``:protocol``), then regular fields with
    lowercase token names. ``end_stream`` means the request has no body.
    """

    stream_id: int
    headers: list[tuple[bytes, bytes]]
    end_stream: bool


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Request body bytes arrived.

    ``flow_controlled_length`` is what the frame cost the receive windows,
    padding included; give exactly that back to
    ``H2Connection.acknowledge_received_data`` once the app has consumed
    ``data`` (``data`` may be empty: padding only, or END_STREAM alone).
    """

    stream_id: int
    data: bytes
    flow_controlled_length: int
    end_stream: bool


@dataclass(frozen=True, slots=True)
class TrailersReceived:
    """The request's trailer fields (checked; no pseudo-header fields); the body is complete."""

    stream_id: int
    headers: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class StreamReset:
    """A stream whose app may be running ended abnormally: give the app ``http.disconnect``.

    Either the peer sent RST_STREAM (``error_code`` is the peer's), or the
    peer broke a rule of a started stream and the connection reset it
    (``error_code`` is the one it sent, e.g. PROTOCOL_ERROR for a body that
    does not match its content-length). Nothing more may be sent on it.
    """

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """A send window grew: retry ``send_data`` for waiting senders.

    ``stream_id`` 0 is the connection window (or a SETTINGS change that grew
    every stream's window): every waiting stream may move.
    """

    stream_id: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The connection is over: write out ``data_to_send()``, then close.

    Either the peer sent GOAWAY (``error_code`` and ``last_stream_id`` are
    the peer's; ``reason`` its debug data), or the peer broke a connection
    rule and we queued GOAWAY (``error_code`` ours, ``last_stream_id`` the
    highest stream we processed, ``reason`` why). Streams still open are
    abandoned: no ``StreamReset`` is reported for each.
    """

    error_code: int
    last_stream_id: int
    reason: str


Event = (
    RequestReceived
    | DataReceived
    | TrailersReceived
    | StreamReset
    | WindowOpened
    | ConnectionTerminated
)
