"""The lingering close of a connection whose last word is an HTTP answer (a refused handshake).

Shared by the protocols above ``transport/``: a WebSocket handshake can be
refused with an HTTP/1.1 response, the app's denial or 403 or the 503 of a
shutdown (written by ``http1/ws_carrier.py`` for ``websocket/protocol.py``),
or a bad handshake's 400/426 (``http1/upgrade.py``). The client may still be
sending then: a request body, bytes pipelined behind the handshake. Closing
with them unread makes the kernel send a RST, which can destroy the answer
before the client reads it; not reading them leaves a client that sends before
it reads stuck in its send. So, as ``http1/protocol.py`` does after an error
reply (RFC 9112 §9.6): half-close, read and drop, close at the client's EOF or
``LINGER_S``. Both read ``LINGER_S`` from here.

Imports only ``asyncio`` and ``connection.state`` (types only).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from sluiceway.connection.state import ServerState

# How long a lingering close waits for the client's EOF (here and in http1/protocol.py).
LINGER_S: Final = 1.0
# Then the answer may still be flushing to a slow reader; the WebSocket close
# timeout (websocket/protocol.py) bounds that as it bounds a close handshake.
FLUSH_TIMEOUT_S: Final = 10.0


class LingeringClose(asyncio.Protocol):
    """The last owner of a connection whose HTTP answer (a refusal) is written.

    ``start`` half-closes (the FIN follows the answer), keeps reading and drops
    whatever arrives, and the transport closes at the client's EOF or, at the
    latest, ``LINGER_S`` later; ``FLUSH_TIMEOUT_S`` then bounds the flush of an
    answer the client is slow to read. A transport that cannot half-close (TLS)
    is closed at once, as ``http1/protocol.py`` does. Registered in
    ``state.connections`` so that the shared tick enforces the deadline.
    """

    __slots__ = ("deadline", "loop", "state", "transport")

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.deadline: float | None = None
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, transport: asyncio.Transport, reading_paused: bool = False) -> None:
        """Take ``transport`` over, its answer written; ``reading_paused`` by its old owner."""
        self.transport = transport
        loop = self.loop = asyncio.get_running_loop()
        transport.set_protocol(self)
        if transport.is_closing():
            return  # connection_lost is on its way
        self.state.add_connection(self)
        self.state.start_clock(loop)
        # Read again even to close: what is left unread makes the RST, and TLS
        # finishes its close by reading the peer's close_notify.
        if reading_paused:
            transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
            self.deadline = loop.time() + LINGER_S
        else:
            transport.close()
            self.deadline = loop.time() + FLUSH_TIMEOUT_S

    def data_received(self, data: bytes) -> None:
        pass  # the request was refused: what follows it is dropped

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.deadline = None
        self.state.remove_connection(self)

    def on_deadline(self) -> None:
        transport = self.transport
        assert transport is not None and self.loop is not None
        if transport.is_closing():
            self.deadline = None
            transport.abort()  # our close did not finish in time
            return
        transport.close()  # flushes what the client has not read yet
        self.deadline = self.loop.time() + FLUSH_TIMEOUT_S

    def shutdown(self) -> None:
        pass  # already ending; the deadline bounds it

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            transport.abort()
