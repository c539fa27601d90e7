"""One HTTP/2 request stream: the ``ResponseSink`` of its ``HTTPCycle``.

The cycle (``asgi/http.py``) is the same one HTTP/1.1 uses; this class is
what it writes to. It turns the ASGI response into HEADERS and DATA frames
through the connection's sans-I/O ``H2Connection``, and keeps the one thing
HTTP/1.1 does not have: flow control in both directions.

* Sending: ``send_data`` takes what the stream's and the connection's
  windows allow; the rest waits here (``_pending``) and ``write_paused`` is
  true, so the app's ``send`` awaits ``drain`` until a WINDOW_UPDATE moves it
  (``window_opened``). At most one app message is held per stream, because
  the app waits before its next one: memory is bounded by what the app sends
  in one message. Trailers and END_STREAM wait behind pending data. What
  the windows took is written by the protocol (``H2Protocol.send_data``):
  at the end of the loop pass, or at once when the connection holds too much
  unwritten, so a client that does not read holds the app's ``send``
  through the transport's ``pause_writing`` as well.
* Receiving: body bytes are acknowledged (WINDOW_UPDATE to the client) as
  they arrive while the cycle holds less than its high-water mark; above it
  the cycle calls ``pause_reading`` and acknowledgements stop until the app
  reads (``resume_reading``). The client can then send at most one stream
  window more: a slow app never makes the server's memory grow.

Imports ``sluiceway.asgi``, ``sluiceway.errors``, ``sluiceway.connection.files``
(opening files for pathsend/zerocopysend) and its ``http2`` siblings.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from sluiceway.asgi.http import FileSlice, HTTPCycle, ResponseState, breaks_length, length_error
from sluiceway.connection import files
from sluiceway.errors import ASGIMessageError, ClientDisconnected
from sluiceway.forward_throw import forward_throw
from sluiceway.http2.headers import response_fields, trailer_fields

if TYPE_CHECKING:
    from sluiceway.http2.protocol import H2Protocol

# Statuses whose responses have no content (RFC 9110 §15.3.5, §15.4.5).
_NO_BODY: Final = frozenset((204, 304))
_S_DONE: Final = ResponseState.DONE
# RFC 3986 pchar and "/": kept as they are when a push path is percent-encoded.
_PATH_SAFE: Final = "/!$&'()*+,;=:@-._~"
# File bodies are read in pieces of this size and framed as DATA.
_FILE_CHUNK: Final = 64 * 1024


class H2Stream:
    """The sink of one stream's ``HTTPCycle``; see the module docstring."""

    __slots__ = (
        "_drain_waiter",
        "_end_pending",
        "_pending",
        "_proto",
        "_remaining",
        "_trailers",
        "_unacked",
        "authority",
        "cycle",
        "ended",
        "is_head",
        "no_body",
        "read_paused",
        "sent",
        "started",
        "stream_id",
        "target",
    )

    def __init__(self, proto: H2Protocol, stream_id: int, is_head: bool) -> None:
        self._proto = proto
        self.stream_id = stream_id
        self.is_head = is_head
        self.cycle: HTTPCycle = None  # type: ignore[assignment]  # set by the protocol at once
        self._pending = b""  # body bytes the windows did not take yet
        self._end_pending = False  # END_STREAM goes out after _pending
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._unacked = 0  # request body bytes received but not yet acknowledged
        self._remaining = -1  # Content-Length bytes still owed, or -1
        self.read_paused = False
        self.no_body = False
        self.ended = False  # END_STREAM sent (or the stream reset): nothing more goes out
        self.sent = 0
        self.started = 0.0
        self.target = b""
        self.authority = b""  # the request's :authority, for the pushes it promises

    # -- request body in ------------------------------------------------------------

    def receive_body(self, data: bytes, flow_controlled: int) -> None:
        """Body bytes arrived: reopen the stream's window now unless the app is behind.

        The connection's window has them back only as the app reads them
        (``body_read``); padding, and a body no app will read, at once.
        """
        kept = self.cycle.feed_body(data)
        if not flow_controlled:
            return  # the body of an h2c upgrade request: it came over HTTP/1.1
        proto = self._proto
        if not kept:
            proto.acknowledge(self.stream_id, flow_controlled)
            return
        if flow_controlled > len(data):
            proto.give_back(self.stream_id, flow_controlled - len(data))
        if self.read_paused:
            self._unacked += flow_controlled
        else:
            proto.open_stream_window(self.stream_id, flow_controlled)

    def body_read(self, n: int) -> None:
        self._proto.give_back(self.stream_id, n)

    def receive_end(self) -> None:
        self.cycle.feed_end()

    def waiting_on_peer(self) -> bool:
        """A response held by a shut window, or a request body still to come while the app reads."""
        if self.ended:
            return False
        return bool(self._pending) or (
            not self.read_paused and not self.cycle.body_complete and not self.cycle_done()
        )

    def cycle_done(self) -> bool:
        return self.cycle.response_state >= _S_DONE

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False
        if self._unacked:
            unacked, self._unacked = self._unacked, 0
            self._proto.open_stream_window(self.stream_id, unacked)

    # -- ResponseSink ------------------------------------------------------------------

    @property
    def write_paused(self) -> bool:
        return bool(self._pending) or self._proto.flow.write_paused

    async def drain(self) -> None:
        while True:
            if self._proto.flow.closed or (self.ended and self._pending):
                raise ClientDisconnected("the client has disconnected")
            if self._pending:
                waiter = self._drain_waiter
                if waiter is None:
                    waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
                await forward_throw(asyncio.shield(waiter))
                continue
            await self._proto.flow.drain()
            return

    def send_continue(self) -> None:
        if not self.ended:
            self._proto.send_headers(self.stream_id, [(b":status", b"100")], False)

    def send_early_hint(self, links: Iterable[Any]) -> None:
        fields = [(b":status", b"103")]
        for link in links:
            if type(link) is not bytes or 13 in link or 10 in link or 0 in link:
                raise ASGIMessageError("early hint links must be bytes without CR, LF or NUL")
            fields.append((b"link", link))
        if not self.ended:
            self._proto.send_headers(self.stream_id, fields, False)

    def send_head(
        self,
        status: int,
        headers: Iterable[Any],
        body: bytes,
        more_body: bool,
        trailers: bool,
        file_bytes: int = -1,
    ) -> None:
        self._check_open()
        fields, content_length = response_fields(status, headers, self._proto.default_fields())
        no_body = self.is_head or status in _NO_BODY
        n = len(body)
        if content_length >= 0 and not no_body:
            size = n if file_bytes < 0 else file_bytes
            if size > content_length or (not more_body and size != content_length):
                raise ASGIMessageError(
                    f"response body is {size} bytes but Content-Length says {content_length}"
                )
            self._remaining = content_length - n
        elif not more_body and content_length < 0 and status not in _NO_BODY:
            # As over HTTP/1.1: a whole body sent at once gets its length
            # (for HEAD, the length a GET would have had: RFC 9110 §9.3.2).
            fields.append((b"content-length", b"%d" % (n if file_bytes < 0 else file_bytes)))
        self.no_body = no_body
        if no_body:
            body = b""
        end = not more_body and not trailers and (no_body or not body) and file_bytes < 0
        self._proto.send_headers(self.stream_id, fields, end)
        if end:
            self.ended = True
            return
        self.sent = len(body)
        if file_bytes >= 0:
            return  # send_file follows with the bytes and END_STREAM, not an empty end here
        if body or (not more_body and not trailers):
            self._send(body, not more_body and not trailers)

    def send_body(self, body: bytes, more_body: bool) -> None:
        self._check_open()
        if self.no_body:
            if not more_body and self._trailers is None and not self.cycle.trailers:
                self._send(b"", True)
            return
        n = len(body)
        remaining = self._remaining
        if remaining >= 0:
            if breaks_length(n, remaining, more_body):
                self._reset()
                raise length_error(n, remaining)
            self._remaining = remaining - n
        self.sent += n
        end = not more_body and not self.cycle.trailers
        if n or end:
            self._send(body, end)

    def _send(self, data: bytes, end: bool) -> None:
        if self._pending:
            self._pending += data
            self._end_pending = self._end_pending or end
            return
        taken = self._proto.send_data(self.stream_id, data, end)
        if taken < len(data):
            self._pending = data[taken:]
            self._end_pending = end
        elif end:
            self.ended = True

    def window_opened(self) -> None:
        """A WINDOW_UPDATE (stream or connection) came: move what waits."""
        if self.ended and not self._pending:
            return
        data = self._pending
        if data:
            taken = self._proto.send_data(self.stream_id, data, self._end_pending)
            self._pending = data[taken:]
            if self._pending:
                return
            if self._end_pending:
                self.ended = True
        if self._trailers is not None and not self.ended:
            self._proto.send_headers(self.stream_id, self._trailers, True)
            self._trailers = None
            self.ended = True
        self._wake()
        self.forget_if_done()

    def forget_if_done(self) -> None:
        """Leave the connection once the response is complete and all of it is out."""
        if self.ended and self.cycle.response_state >= _S_DONE:
            self._proto.forget(self)
            self._detach()

    def _detach(self) -> None:
        """Break the stream <-> cycle reference cycle once the stream is over.

        Left in place, every request's pair waits for the cyclic GC: with 32
        streams a read, collections took a sixth of the server's time (perf,
        h2load -m32). A done or aborted cycle no longer writes to its sink.
        """
        self.cycle.sink = GONE

    def _wake(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def open_file(self, file: Any, offset: int | None, count: int | None) -> FileSlice:
        return files.open_file(file, offset, count)

    async def send_file(self, part: FileSlice, more_body: bool) -> None:
        self._check_open()
        n = part.count
        if not self.no_body:
            remaining = self._remaining
            if remaining >= 0:
                if n > remaining or (not more_body and n != remaining):
                    self._reset()
                    raise ASGIMessageError("file size does not match the response Content-Length")
                self._remaining = remaining - n
            loop = asyncio.get_running_loop()
            fd = part.file.fileno()
            offset = part.offset
            end = offset + n
            while offset < end:
                chunk = await loop.run_in_executor(
                    None, os.pread, fd, min(_FILE_CHUNK, end - offset), offset
                )
                if not chunk:
                    self._reset()
                    raise ASGIMessageError("file shrank while it was being sent")
                offset += len(chunk)
                self._check_open()
                self._send(chunk, False)
                self.sent += len(chunk)
                if self.write_paused:
                    await self.drain()
        if not more_body and not self.cycle.trailers:
            self._send(b"", True)

    def send_trailers(self, headers: Iterable[Any], more_trailers: bool) -> None:
        self._check_open()
        fields = trailer_fields(headers)
        if self._trailers is None:
            self._trailers = fields
        else:
            self._trailers += fields
        if more_trailers:
            return
        if not self._trailers:
            self._trailers = None
            self._send(b"", True)  # nothing to say after all: end the stream with DATA
            return
        if not self._pending:
            self._proto.send_headers(self.stream_id, self._trailers, True)
            self._trailers = None
            self.ended = True
        # else: window_opened sends them after the pending data.

    def send_push(self, path: str, headers: Iterable[Any]) -> None:
        """Promise ``GET path`` (RFC 9113 §8.4) and answer it like a request, if the client allows.

        The promised request carries this request's scheme and authority
        (extensions spec: the same ``:authority``) and the app's headers; the
        app then runs for it as for any request. Dropped silently when the
        client disabled push or this stream can no longer carry a promise.
        """
        if self.ended or self._proto.flow.closed:
            return
        fields = [
            (b":method", b"GET"),
            (b":scheme", self.cycle.scope["scheme"].encode("ascii")),
            (b":authority", self.authority),
            (b":path", quote(path, safe=_PATH_SAFE).encode("ascii")),
        ]
        fields += trailer_fields(headers)  # the same rules: lowercase tokens, no CR/LF/NUL
        self._proto.push(self.stream_id, fields)

    def response_complete(self, cycle: HTTPCycle) -> None:
        self._proto.response_complete(self)

    def _reset(self) -> None:
        """Our framing promise broke (Content-Length, a shrinking file): RST_STREAM."""
        self.ended = True
        self._pending = b""
        self._proto.reset(self.stream_id)

    def _check_open(self) -> None:
        if self.ended or self._proto.flow.closed:
            raise ClientDisconnected("the client has disconnected")

    # -- the client went away -------------------------------------------------------------

    def reset_by_peer(self) -> None:
        """RST_STREAM from the client, or ours after its error: the app sees http.disconnect."""
        self.ended = True
        self._pending = b""
        self._trailers = None
        self.cycle.feed_disconnect()
        self._wake()
        self._detach()


class _Gone:
    """The sink of a cycle whose stream is over: nothing more reaches the wire."""

    write_paused = False

    async def drain(self) -> None:
        raise ClientDisconnected("the stream is closed")

    def send_continue(self) -> None:
        pass

    def send_early_hint(self, links: Iterable[Any]) -> None:
        pass

    def send_head(
        self,
        status: int,
        headers: Iterable[Any],
        body: bytes,
        more_body: bool,
        trailers: bool,
        file_bytes: int = -1,
    ) -> None:
        raise ClientDisconnected("the stream is closed")

    def send_body(self, body: bytes, more_body: bool) -> None:
        raise ClientDisconnected("the stream is closed")

    def open_file(self, file: Any, offset: int | None, count: int | None) -> FileSlice:
        raise ClientDisconnected("the stream is closed")

    async def send_file(self, part: FileSlice, more_body: bool) -> None:
        raise ClientDisconnected("the stream is closed")

    def send_trailers(self, headers: Iterable[Any], more_trailers: bool) -> None:
        raise ClientDisconnected("the stream is closed")

    def send_push(self, path: str, headers: Iterable[Any]) -> None:
        pass

    def response_complete(self, cycle: HTTPCycle) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def body_read(self, n: int) -> None:
        pass


GONE: Final = _Gone()
