"""The answers an HTTP/1.1 connection makes itself: 4xx for a peer's mistake, 500/503 for the app's.

Delegated to from ``http1/protocol.py`` off the per-request path (docs/errors.md has the table):

* ``reject``: the peer broke HTTP/1.1 (a ``ProtocolError``): its status
  (``wire.protocol_error_status``: 400/408/413/414/431/501/505), in response
  order behind the answers still owed, then a lingering close; a first line
  that is neither HTTP/1 nor the HTTP/2 preface just closes;
* ``internal_error``: a bug of ours inside the parser callbacks: 500 and close;
* ``finish_with_error``: a server-made 500 (the app failed before its head) or
  503 (shutting down, ``--limit-concurrency``) that completes the cycle;
* ``app_failed`` / ``app_returned_early``: what the app wrapper does when the
  app raised or returned without finishing its response.

No exception text goes on the wire; the traceback goes to ``sluiceway.error``
once. Functions take the ``HTTP1Protocol`` and work on its state, as its
methods did (mypyc compiles the calls between these modules natively).

Imports ``sluiceway.accesslog``, ``sluiceway.asgi.http``, ``sluiceway.errors``,
``sluiceway.connection.app_errors`` (what a failed app is, and its report,
shared with HTTP/2) and its ``http1`` siblings; ``http1/protocol.py`` for
types only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sluiceway import accesslog
from sluiceway.asgi.http import ResponseState
from sluiceway.connection.app_errors import client_left, report_early_return, report_exception
from sluiceway.errors import LocalProtocolError, ProtocolError
from sluiceway.http1 import response_writer, wire
from sluiceway.http1.cycle import CLOSE_TIMEOUT_S, H1Cycle, Phase

if TYPE_CHECKING:
    from sluiceway.http1.protocol import HTTP1Protocol


def internal_error(conn: HTTP1Protocol, exc: BaseException) -> None:
    # A bug of ours: answer 500 and close rather than kill the connection silently.
    accesslog.error_logger.error("HTTP/1.1 protocol failure", exc_info=exc)
    reject(conn, LocalProtocolError("internal error"))


def reject(conn: HTTP1Protocol, exc: ProtocolError) -> None:
    """The peer broke HTTP: answer with 4xx/5xx in order, then close."""
    if conn._phase is Phase.CLOSED:
        # Already closing: on 3.12+ an app started eagerly in this same
        # read can have answered a Connection: close request, and llhttp
        # then refuses the bytes after it. RFC 9112 §9.6: nothing after
        # that request is processed, so there is nothing more to answer.
        return
    first = conn._first_data
    if first is not None and conn._shared.h2 is not None and _speaks_neither(first):
        # The first bytes of the connection were neither an HTTP/1 request
        # line nor the HTTP/2 preface (h2spec 3.5/2 sends "INVALID
        # CONNECTION PREFACE"): an HTTP/1.1 400 would mean nothing to
        # such a client, so the connection just closes (RFC 9113 §3.4:
        # an invalid preface is a connection error).
        accesslog.error_logger.info(
            "Closed a connection from %s that spoke neither HTTP/1.1 nor HTTP/2",
            accesslog.format_client(conn.info.client),
        )
        conn._phase = Phase.CLOSED
        conn.deadline = conn._loop.time() + CLOSE_TIMEOUT_S
        conn._transport.close()
        return
    status = wire.protocol_error_status(exc)
    logger = accesslog.error_logger
    if logger.isEnabledFor(logging.INFO):
        client = accesslog.format_client(conn.info.client) if conn.info else "-"
        logger.info("Rejected request from %s: %s %s", client, status, accesslog.escape(str(exc)))
    conn._flow.pause_reading()
    phase = conn._phase
    conn._phase = Phase.CLOSED
    conn.deadline = None
    culprit = conn._parsing if phase is Phase.BODY else None
    if culprit is not None:
        conn._parsing = None
        if culprit in conn._pipeline:
            conn._pipeline.remove(culprit)
        elif culprit is conn._active:
            # Its app is running: it sees http.disconnect from now on.
            started = culprit.response_state >= ResponseState.BODY
            culprit.feed_disconnect()
            conn._active = None
            if started:
                conn._close()
            else:
                write_error(conn, status)
            return
    if conn._active is None and not conn._pipeline:
        write_error(conn, status)
    else:
        conn._pending_error = status  # sent after the responses ahead of it


def write_error(conn: HTTP1Protocol, status: int) -> None:
    if conn._flow.closed:
        return
    if conn._metrics is not None:
        conn._metrics.count_status(status)
    conn._last_write_then_fin()
    response_writer.flush_held(conn)
    conn._transport.write(wire.error_response(status, conn._state.default_headers))
    conn._linger_close()


def finish_with_error(conn: HTTP1Protocol, cycle: H1Cycle, status: int) -> None:
    """Answer ``cycle`` with a server-made error response (500/503)."""
    keep = cycle.keep_alive and cycle.body_complete and not conn._state.shutting_down
    cycle.keep_alive = keep
    data = wire.error_response(status, conn._state.default_headers, close=not keep)
    if cycle.is_head:
        data = data[: data.index(b"\r\n\r\n") + 4]
    if not conn._flow.closed:
        response_writer.flush_held(conn)
        conn._transport.write(data)
    cycle.status = status
    # Logged as any response's: the body bytes sent (none for HEAD).
    conn._sent = len(data) - data.index(b"\r\n\r\n") - 4
    cycle.response_state = ResponseState.DONE
    cycle.feed_disconnect()  # wakes a receive() still waiting: the response is over
    conn.response_complete(cycle)


def app_failed(conn: HTTP1Protocol, cycle: H1Cycle, exc: BaseException) -> None:
    state = cycle.response_state
    if client_left(state, exc, conn._flow.closed):
        return
    report_exception(exc, conn._metrics)
    if state <= ResponseState.HEAD:
        finish_with_error(conn, cycle, 500)
    elif state < ResponseState.DONE:
        conn._close()


def app_returned_early(conn: HTTP1Protocol, cycle: H1Cycle) -> None:
    state = cycle.response_state
    if state is ResponseState.ABORTED:
        return
    report_early_return(state)
    if state <= ResponseState.HEAD:
        finish_with_error(conn, cycle, 500)
    else:
        conn._close()


def _speaks_neither(data: bytes) -> bool:
    """A complete first line of three words whose last is no HTTP version.

    Neither HTTP/1 nor HTTP/2. Anything else that llhttp refuses (a line of
    two words, HTTP/0.9 style, or a bad version number) still gets its 400
    or 505. Empty lines before it are skipped (RFC 9112 §2.2).
    """
    line, crlf, _ = data.lstrip(b"\r\n").partition(b"\r\n")
    words = line.split(b" ")
    return bool(crlf) and len(words) == 3 and not words[2].startswith(b"HTTP/")
