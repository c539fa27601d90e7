"""How an HTTP/1.1 connection ends: closing after the last answer, the client's
half-close, deadlines and graceful shutdown.

Delegated to from ``http1/protocol.py`` (whose ``_close``, ``_linger_close``,
``_last_write_then_fin``, ``eof_received``, ``on_deadline`` and ``shutdown``
are one-line calls here, so its siblings keep calling the protocol and no
import runs back up). Functions take the ``HTTP1Protocol`` and work on its
state, as its methods did (mypyc compiles the calls between these modules
natively).

* ``close``: flush what the app sent, close, and bound the close by
  ``CLOSE_TIMEOUT_S``;
* ``linger_close``: RFC 9112 §9.6's staged close, for an answer sent while
  request bytes may still be on their way;
* ``eof_received``: the client half-closed; what it completed is answered;
* ``on_deadline``: the ``ServerState`` tick found this connection's deadline
  passed (head, body, keep-alive, linger or close);
* ``shutdown``: the runner's graceful shutdown, which never closes a
  connection under a request the client has sent.

Imports ``sluiceway.transport``, ``sluiceway.errors`` and its ``http1``
siblings; ``http1/protocol.py`` for types only.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Final

if sys.platform != "win32":
    import fcntl
    import termios

from sluiceway.asgi.http import RequestState, ResponseState
from sluiceway.errors import RequestTimeout
from sluiceway.http1 import error_replies, response_writer
from sluiceway.http1.cycle import CLOSE_TIMEOUT_S, Phase
from sluiceway.transport.fin import cork_for_fin
from sluiceway.transport.linger import LINGER_S

if TYPE_CHECKING:
    from sluiceway.http1.protocol import HTTP1Protocol

# How long a graceful shutdown leaves an idle keep-alive connection open for a
# request already on its way (shutdown()): a client loop's next request is
# microseconds behind its last response; one idle longer was not about to send.
_IDLE_CLOSE_GRACE_S: Final = 1.0

_S_DONE: Final = ResponseState.DONE
_R_CONTINUE: Final = RequestState.CONTINUE
_IDLE: Final = Phase.IDLE
_HEAD: Final = Phase.HEAD
_BODY: Final = Phase.BODY
_CLOSED: Final = Phase.CLOSED


# -- closing after the last answer (error answers: http1/error_replies.py) -------------------


def close(conn: HTTP1Protocol) -> None:
    conn._phase = _CLOSED
    transport = conn._transport
    if transport.is_closing():
        return
    if conn._held:
        last_write_then_fin(conn)
    response_writer.flush_held(conn)  # what the app sent before the close still goes out
    # Keep reading while the transport closes: TLS finishes its close by
    # reading the peer's close_notify, and with reading paused Python
    # 3.10's SSL transport never completes it. data_received drops what
    # arrives. The deadline cuts off a close the peer never lets finish.
    conn._flow.resume_reading()
    transport.close()
    conn.deadline = conn._loop.time() + CLOSE_TIMEOUT_S


def linger_close(conn: HTTP1Protocol) -> None:
    """Close after the last answer as RFC 9112 §9.6 advises: half-close first.

    Closing with request bytes unread makes the kernel send a RST, which can
    destroy the answer before the client reads it (a pipelined request
    behind a ``Connection: close``, the rest of a refused body). So the
    write side closes (the FIN follows the answer), what still arrives is
    read and dropped (data_received ignores it once CLOSED), and the
    transport closes at the client's EOF or ``LINGER_S`` later. The client
    then closes first, as the RFC's staged close intends, and nothing it
    sent can reset the answer. TLS cannot half-close and a client that
    already half-closed has nothing left to send: those close at once.
    """
    conn._phase = _CLOSED
    transport = conn._transport
    if conn._peer_eof or not transport.can_write_eof() or transport.is_closing():
        close(conn)
        return
    if conn._held:
        last_write_then_fin(conn)
    response_writer.flush_held(conn)
    transport.write_eof()
    conn._flow.resume_reading()
    conn.deadline = conn._loop.time() + LINGER_S


def last_write_then_fin(conn: HTTP1Protocol) -> None:
    """The next write is the connection's last: let the FIN ride in its segment.

    Our callers close or half-close right after that write, which the
    cork needs (transport/fin.py). One segment and one client wake-up
    fewer per closed connection; not under TLS, whose close must first
    get the peer's close_notify, nor on a Unix socket.
    """
    server = conn.info.server
    if not conn._shared.tls and server is not None and server[1] is not None:
        cork_for_fin(conn._transport)  # TCP: a Unix socket's address has no port


def eof_received(conn: HTTP1Protocol) -> bool | None:
    """The client half-closed. RFC 9112 §9.6: that "does not delimit a request
    message, nor does it imply that the client is no longer interested in a
    response". So the requests it completed are answered, in order, and the
    connection closes after the last answer (marked Connection: close if its
    head is not out yet); their apps see http.disconnect from receive() once
    they have their body. A request cut short, an idle connection, or TLS
    (which cannot half-close): returning None lets the transport close, and
    connection_lost follows.
    """
    # An answer held for the end of this loop pass goes to the transport now:
    # returning None below closes it, after what it has buffered.
    response_writer.flush_held(conn)
    active = conn._active
    if active is None or conn._phase is not _IDLE or conn._shared.tls:
        return None
    conn._peer_eof = True
    pipeline = conn._pipeline
    for cycle in (active, *pipeline):
        cycle.feed_client_done()
    (pipeline[-1] if pipeline else active).keep_alive = False
    return True


# -- deadlines and shutdown (the ServerState tick and the runner call these) -----------------


def on_deadline(conn: HTTP1Protocol) -> None:
    """Keep-alive idle or request-head timeout: close quietly; a stalled body: 408."""
    conn.deadline = None
    if conn._transport.is_closing():
        conn._transport.abort()  # our close did not finish in time
        return
    if conn._phase is _BODY:
        parsing = conn._parsing
        if conn._flow.read_paused or (parsing is not None and parsing.request_state is _R_CONTINUE):
            # We stopped reading (the app does not consume, or answers
            # ahead of this request are pending), or the client waits for
            # a 100 Continue the app has not asked for: the app's choice,
            # not the client's stall. The clock restarts when we resume.
            conn.deadline = conn._loop.time() + conn._shared.body_timeout_s
        elif parsing is not None and parsing.response_state >= _S_DONE:
            close(conn)  # answered already: the rest of the body would be dropped
        else:
            # RFC 9110 §15.5.9. An app reading the body sees http.disconnect;
            # one that already started its response is cut short instead.
            error_replies.reject(conn, RequestTimeout("request body timed out"))
    elif conn._active is None and not conn._pipeline:
        close(conn)
    elif conn._phase is _HEAD:
        # A pipelined head that never completes: finish what is in
        # flight, read nothing more, then close (response_complete).
        conn._phase = _CLOSED
        conn._flow.pause_reading()


def shutdown(conn: HTTP1Protocol) -> None:
    """Graceful: finish the in-flight response, or the request on its way, then close.

    No connection the client may be using is closed under it: a new
    connection that has not sent its first request yet (as Go's server
    does, it gets its header timeout to send it), a head partly received,
    or request bytes waiting unread in the socket. Closing those would lose
    a request the client has every reason to think was accepted (the peers'
    "connection reset during worker restart" reports); instead that one
    request is answered with Connection: close. An idle keep-alive
    connection gets ``_IDLE_CLOSE_GRACE_S`` (at most its keep-alive timeout)
    for a request already on its way to arrive, the same way: closed at
    once, it would cross a busy client's next request, which then gets no
    response (RFC 9112 §9.3.1), on every SIGHUP restart.
    """
    conn._pipeline.clear()
    conn._pending_error = 0
    if conn._active is not None:
        conn._flow.pause_reading()
        conn._active.keep_alive = False
    elif conn._phase is _HEAD or conn._fresh or _has_unread_bytes(conn._transport):
        conn._last_request = True
        if conn._phase is _IDLE and not conn._fresh:
            conn.deadline = conn._loop.time() + conn._headers_timeout_s
    else:
        conn._last_request = True
        conn.deadline = conn._loop.time() + min(_IDLE_CLOSE_GRACE_S, conn._shared.keep_alive_s)


def _has_unread_bytes(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes wait in the socket that the loop has not handed to us yet."""
    if sys.platform == "win32":
        return False
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    except (OSError, ValueError):
        return False  # closed meanwhile, or not a socket the ioctl knows
    return int.from_bytes(raw, sys.byteorder) > 0
