"""What an HTTP/1.1 connection and its requests carry: ``Phase``, ``H1Cycle``, two constants.

``http1/protocol.py`` owns both; its delegated modules (``request_reader.py``,
the bytes that come in; ``response_writer.py``, the bytes that go out;
``switching.py``, the HTTP/2 hand-off and Upgrade dispatch; ``error_replies.py``,
the 4xx/5xx answers) read and set them, so they live here, below all of them,
rather than in ``protocol.py`` (which imports those modules).

Imports only ``sluiceway.asgi.http``, ``httptools`` and the standard library.
"""

from __future__ import annotations

import enum
from typing import Final

import httptools

from sluiceway.asgi.http import HTTPCycle

# What a closed or handed-over connection's parser slot points at (see
# HTTP1Protocol.connection_lost and switching.hand_to_h2).
NO_PARSER: Final = httptools.HttpRequestParser(object())
# How long a closing connection may take to flush what is buffered (at most
# the write high-water mark, since send() waits above it) or to finish the
# TLS close handshake, before it is aborted.
CLOSE_TIMEOUT_S: Final = 10.0


class Phase(enum.IntEnum):
    """Where the parser is on the connection (drives deadlines and shutdown)."""

    IDLE = 0  # between requests: the keep-alive timeout applies when nothing is in flight
    HEAD = 1  # inside a request head: the request-header timeout applies
    BODY = 2  # head complete, body (if any) streaming
    CLOSED = 3  # we decided to close, or the peer went away


class H1Cycle(HTTPCycle):
    """An ``HTTPCycle`` plus the HTTP/1.1 facts its response needs."""

    __slots__ = (
        "client_close",
        "http10",
        "is_head",
        "keep_alive",
        "started",
        "target",
        "te_trailers",
    )

    keep_alive: bool
    client_close: bool  # the client asked to close after this request
    is_head: bool
    http10: bool
    te_trailers: bool
    started: float
    target: bytes
