"""HOT PATH: the bytes that go out on an HTTP/1.1 connection: its ``ResponseSink`` writes.

``HTTP1Protocol`` is the ``ResponseSink`` of its active cycle; its ``send_*``
methods call these functions, which frame the response (RFC 9112 §6-7) and
write it:

* ``send_continue``, ``send_early_hint``: the 1xx answers before the head;
* ``send_head``: status line, fields, the framing (Content-Length, chunked,
  or close-delimited for HTTP/1.0), ``Connection``, and the first body chunk;
* ``send_body``, ``send_file``, ``send_trailers``: the rest of the message;
* ``_write_body``, ``flush_held``, ``flush_holding``: the write batching.
  What a response sends is held and written at the end of the loop pass,
  every connection's in a row (``Shared.holding``).

Invariants:

* The head and the first body chunk are one write.
* A body never contradicts its framing: a first chunk or file that does not
  fit the declared ``Content-Length`` raises ``ASGIMessageError`` before
  anything is written (the app's error answer follows); a later one raises
  and closes the connection.
* What is held goes out before any other write (a 1xx, a file, trailers, an
  error answer, a close, an upgrade) and by the end of the loop pass at the
  latest; at most ``_HOLD_MAX_BYTES`` / ``_HOLD_MAX_PARTS`` are held.
* Nothing goes to a transport the client left (``ClientDisconnected``) or
  that is closing.

Functions take the ``HTTP1Protocol`` and work on its state (the framing of
the active response: ``_chunked``, ``_no_body``, ``_remaining``, ``_sent``,
``_trailer_parts``; the held parts), as its methods did (mypyc compiles the
calls between these modules natively).

Imports ``sluiceway.asgi.http``, ``sluiceway.connection``,
``sluiceway.errors``, ``sluiceway.forward_throw`` and ``http1/wire.py``;
``http1/protocol.py`` for types only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, cast

from sluiceway.asgi.http import FileSlice, RequestState, ResponseState, breaks_length, length_error
from sluiceway.connection import files
from sluiceway.connection.shared import Shared
from sluiceway.errors import ASGIMessageError, ClientDisconnected
from sluiceway.forward_throw import forward_throw
from sluiceway.http1 import wire
from sluiceway.http1.cycle import H1Cycle

if TYPE_CHECKING:
    from sluiceway.http1.protocol import HTTP1Protocol

_S_BODY: Final = ResponseState.BODY
_R_CONTINUE: Final = RequestState.CONTINUE

# Bodies up to this size are joined with their head or chunk framing into one
# bytes object (one write, one small copy); larger ones go out vectored.
_JOIN_MAX_BYTES: Final = 16 * 1024
# What a response writes is held and written at the end of the loop pass, one
# vectored write per connection (or sooner, once this much is held): a
# streamed download costs one writev instead of one write per chunk, and the
# apps of a pass run back to back (see _write_body). The parts are the app's
# own objects, so holding costs no copy.
_HOLD_MAX_BYTES: Final = 1024 * 1024
# And at most this many parts (many tiny chunks would otherwise be many objects).
_HOLD_MAX_PARTS: Final = 256


def send_continue(conn: HTTP1Protocol) -> None:
    cycle = conn._active
    if cycle is not None and cycle.response_state < _S_BODY and not conn._flow.closed:
        flush_held(conn)
        conn._transport.write(wire.CONTINUE_100)
        if cycle is conn._parsing:
            # The client waited for this to send its body: its clock starts now.
            conn.deadline = conn._loop.time() + conn._shared.body_timeout_s


def send_early_hint(conn: HTTP1Protocol, links: Iterable[Any]) -> None:
    cycle = conn._active
    data = wire.encode_early_hint(links)
    # RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
    if cycle is not None and not cycle.http10 and not conn._flow.closed:
        flush_held(conn)
        conn._transport.write(data)


def send_head(
    conn: HTTP1Protocol,
    status: int,
    headers: Iterable[Any],
    body: bytes,
    more_body: bool,
    trailers: bool,
    file_bytes: int = -1,
) -> None:
    if conn._flow.closed:
        raise ClientDisconnected("the client has disconnected")
    cycle: H1Cycle = conn._active  # type: ignore[assignment]  # only the active cycle sends
    parts, content_length, close, overrides = wire.encode_headers(headers)
    head = [wire.STATUS_LINES[status]]
    head += parts
    head.append(
        wire.default_headers_without(conn._state.default_headers, overrides)
        if overrides
        else conn._state.default_headers
    )
    keep = cycle.keep_alive and not close and not conn._state.shutting_down
    if cycle.request_state is _R_CONTINUE:
        keep = False  # RFC 9110 §10.1.1: the body never came; we close instead of reading it
    no_body = cycle.is_head or status in wire.NO_BODY_STATUSES
    n = len(body)
    chunked = False
    remaining = -1
    if content_length >= 0:
        remaining = content_length
    elif status in wire.NO_BODY_STATUSES:
        pass
    elif not more_body:
        # Also for HEAD: the length a GET would have had (RFC 9110 §9.3.2).
        remaining = n if file_bytes < 0 else file_bytes
        head.append(b"content-length: %d\r\n" % remaining)
    elif cycle.is_head:
        pass
    elif cycle.http10:
        keep = False  # no chunked coding for HTTP/1.0 (RFC 9112 §6.1): close-delimited
    else:
        chunked = True
        head.append(b"transfer-encoding: chunked\r\n")
    if not keep:
        if not close:
            head.append(b"connection: close\r\n")
    elif cycle.http10:
        head.append(b"connection: keep-alive\r\n")
    head.append(wire.CRLF)
    body_at = -1  # index of the body in head, when it is there
    if no_body:
        pass
    elif chunked:
        if n:
            head.append(wire.chunk_header(n))
            body_at = len(head)
            head += (body, wire.CRLF)
        if not more_body and not trailers:
            head.append(wire.LAST_CHUNK)
    elif file_bytes < 0:
        if remaining >= 0:
            if n > remaining or (not more_body and n != remaining):
                raise ASGIMessageError(
                    f"response body is {n} bytes but Content-Length says {content_length}"
                )
            remaining -= n
        body_at = len(head)
        head.append(body)
    elif remaining >= 0 and (file_bytes > remaining or (not more_body and file_bytes != remaining)):
        raise ASGIMessageError(
            f"file is {file_bytes} bytes but Content-Length says {content_length}"
        )
    cycle.keep_alive = keep
    conn._chunked = chunked
    conn._no_body = no_body
    conn._remaining = remaining
    conn._sent = 0 if no_body else n
    conn._trailer_parts = []
    out: tuple[bytes, ...]
    if n > _JOIN_MAX_BYTES and body_at > 0:
        # Head and a large first chunk: hand both over without copying the body
        # (FlowControl.writelines: asyncio 3.12.0-3.12.8/3.13.0-3.13.1 never pause on theirs).
        out = (b"".join(head[:body_at]), body)
        tail = b"".join(head[body_at + 1 :])  # a chunk's CRLF; nothing after a framed length
        if tail:
            out += (tail,)
    else:
        out = (b"".join(head),)
    _write_body(conn, out, n)


def send_body(conn: HTTP1Protocol, body: bytes, more_body: bool) -> None:
    if conn._flow.closed:
        raise ClientDisconnected("the client has disconnected")
    if conn._no_body:
        return
    n = len(body)
    if conn._chunked:
        cycle = conn._active
        last = b"" if more_body or (cycle is not None and cycle.trailers) else wire.LAST_CHUNK
        if n > _JOIN_MAX_BYTES:
            # Large chunk: a vectored write (uvloop) instead of copying it.
            _write_body(conn, (wire.chunk_header(n), body, wire.CRLF + last), n)
        elif n:
            data = b"".join((wire.chunk_header(n), body, wire.CRLF, last))
            _write_body(conn, (data,), n)
        elif last:
            _write_body(conn, (last,), 0)
    else:
        remaining = conn._remaining
        if remaining >= 0:
            if breaks_length(n, remaining, more_body):
                conn._close()
                raise length_error(n, remaining)
            conn._remaining = remaining - n
        if n:
            _write_body(conn, (body,), n)
    conn._sent += n


def _write_body(conn: HTTP1Protocol, parts: tuple[bytes, ...], size: int) -> None:
    """Hold ``parts`` (``size`` body bytes) for the end of this loop pass, or write them now.

    A response, or a streamed body's parts, go out at the end of the loop
    pass, all connections' in a row (``flush_holding``): the apps
    of one pass then run back to back, with no socket write and the
    kernel's TCP work for it between them, so each finds its code and
    data still in the CPU's caches (scenario (b): +42 % requests/s in an
    A/B; docs/performance.md, session 5). An app that waits between its
    chunks still sends each before its next step. Held parts are written
    sooner past either ``_HOLD_MAX_*`` bound, and before any other write.
    """
    held = conn._held
    held.extend(parts)
    size += conn._held_bytes
    if size < _HOLD_MAX_BYTES and len(held) < _HOLD_MAX_PARTS:
        conn._held_bytes = size
        if not conn._flush_scheduled:
            conn._flush_scheduled = True
            shared = conn._shared
            shared.holding.append(conn)
            if not shared.flush_scheduled:
                shared.flush_scheduled = True
                conn._loop.call_soon(flush_holding, shared)
        return
    flush_held(conn)


def flush_held(conn: HTTP1Protocol) -> None:
    held = conn._held
    if held:
        conn._held = []
        conn._held_bytes = 0
        # A transport closing under us takes no more (uvloop raises): what
        # the app sent after the close is dropped, as a write would be, and
        # the pass-end flush of the other connections goes on.
        if conn._flow.closed or conn._transport.is_closing():
            return
        if len(held) == 1:
            conn._transport.write(held[0])  # a small response: joined with its head
        else:
            conn._flow.writelines(held)


def flush_holding(shared: Shared) -> None:
    """The end of a loop pass: every connection writes what it held (``_write_body``)."""
    holding = cast("list[HTTP1Protocol]", shared.holding)
    shared.holding = []
    shared.flush_scheduled = False
    for conn in holding:
        conn._flush_scheduled = False
        flush_held(conn)


async def send_file(conn: HTTP1Protocol, part: FileSlice, more_body: bool) -> None:
    if conn._flow.closed:
        raise ClientDisconnected("the client has disconnected")
    if conn._no_body:
        return
    flush_held(conn)
    n = part.count
    cycle = conn._active
    last = not more_body and not (cycle is not None and cycle.trailers)
    if conn._chunked:
        if n:
            conn._transport.write(wire.chunk_header(n))
    elif conn._remaining >= 0:
        if n > conn._remaining or (not more_body and n != conn._remaining):
            conn._close()
            raise ASGIMessageError("file size does not match the response Content-Length")
        conn._remaining -= n
    if n:
        try:
            await forward_throw(
                files.transfer(conn._loop, conn._transport, conn._flow, part.file, part.offset, n)
            )
        except ASGIMessageError:
            conn._close()  # the framing promised bytes that will not come
            raise
    if conn._chunked:
        tail = wire.CRLF if n else b""
        conn._transport.write(tail + wire.LAST_CHUNK if last else tail)
    conn._sent += n


def send_trailers(conn: HTTP1Protocol, headers: Iterable[Any], more_trailers: bool) -> None:
    if conn._flow.closed:
        raise ClientDisconnected("the client has disconnected")
    flush_held(conn)
    cycle = conn._active
    parts, _, _, _ = wire.encode_headers(headers)
    conn._trailer_parts += parts
    if more_trailers or conn._no_body or not conn._chunked:
        return  # trailers need chunked coding; without it they are dropped
    if cycle is not None and cycle.te_trailers:
        conn._transport.write(b"0\r\n" + b"".join(conn._trailer_parts) + wire.CRLF)
    else:
        # The client did not send "TE: trailers" (extensions spec): drop them.
        conn._transport.write(wire.LAST_CHUNK)
    conn._trailer_parts = []
