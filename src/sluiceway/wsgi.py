"""``WsgiToAsgi``: serve a WSGI application (PEP 3333) from any ASGI server.

Each request runs the WSGI app in a worker of a bounded thread pool. The
two sides meet in two small objects:

* ``RequestBody`` (``sluiceway.wsgi_input``) is ``wsgi.input``: a reader
  task on the event loop moves ``http.request`` chunks into a buffer as they
  arrive; ``read()`` in the worker blocks until the bytes it asked for are
  there, and the reader pauses while the buffer is full, so the client feels
  back-pressure.
* ``_Responder`` implements ``start_response`` and ``write``. Headers leave
  with the first non-empty chunk (PEP 3333 "Buffering and Streaming"); every
  chunk is handed to the loop and the worker waits until ``send`` took it, so
  the response streams with bounded memory. With a ``Content-Length`` (or a
  one-item list) the last chunk carries ``more_body=False``: a typical Flask
  response costs one hop to the loop.

Environ rules (PEP 3333 "environ Variables"): ``SCRIPT_NAME`` is
``root_path``; ``PATH_INFO`` is ``path`` without it; both are "bytes as
latin-1" strings. Headers become ``HTTP_*`` with repeats joined by ``,``
(``Cookie`` by ``; ``, RFC 9113 §8.2.3); a header name with ``_`` is
dropped, because ``X_Foo`` and ``X-Foo`` would both become ``HTTP_X_FOO``
and a proxy checking one could be bypassed with the other (header smuggling;
nginx and Apache drop them too). More than ``max_header_repeats`` copies of
one header is answered 431; conflicting ``Content-Length`` copies, 400.

Errors: an app failure before the headers left gives a plain 500 (details in
the log, never on the wire); after, the exception propagates so the server
aborts the response. Iteration stops once ``Content-Length`` bytes are out
(PEP 3333 "Handling the Content-Length Header": the iterable is not advanced
again) or the client is gone: ``send()`` raised, or, under a server older
than www spec 2.4 whose ``send()`` then does nothing, ``http.disconnect``
arrived. The iterable's ``close()`` is called exactly once, on every path. A
``websocket`` scope is refused (close before accept: 403); ``lifespan`` is
answered "complete".

Imports the standard library, ``sluiceway.asgi``, ``sluiceway._toolkit``,
``sluiceway.wsgi_input`` and ``sluiceway.errors``; never the server side.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from types import TracebackType
from typing import Any

from sluiceway._toolkit import HTTP_TOKEN, answer_lifespan, refuse_websocket, send_text_response
from sluiceway.asgi.types import HeaderList, Message, Receive, Scope, Send
from sluiceway.errors import ClientDisconnected
from sluiceway.wsgi_input import RequestBody

__all__ = ["RequestBody", "WsgiToAsgi", "build_environ"]

logger = logging.getLogger(__name__)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
StartResponse = Callable[..., Callable[[bytes], None]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# RFC 9110 §5.5: no CR, LF or NUL in a field value (names are tokens).
_FORBIDDEN = ("\r", "\n", "\x00")
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


class _Reject(Exception):
    """The request cannot be turned into an environ: answer ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _latin1(text: str) -> str:
    # PEP 3333 "Unicode Issues": native strings carry the raw bytes as latin-1.
    return text.encode("utf-8").decode("latin-1")


def _split_host(host: str) -> tuple[str, str]:
    """Split a Host header into name and port; an IPv6 literal keeps its brackets."""
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit():
        return host, ""
    return name, port


def build_environ(scope: Scope, max_header_repeats: int = 32) -> dict[str, Any]:
    """Build the PEP 3333 environ for an ``http`` scope (``wsgi.input`` not set).

    Raises:
        _Reject: too many repeats of one header (431) or conflicting
            ``Content-Length`` values (400).
    """
    path: str = scope.get("path") or "/"
    root_path: str = (scope.get("root_path") or "").rstrip("/")
    # ASGI www spec 2.x: path includes root_path. A server that strips it
    # already (older convention) gives a path without the prefix: keep it whole.
    if root_path and (path == root_path or path.startswith(root_path + "/")):
        path_info = path[len(root_path) :]
    else:
        path_info = path
    scheme = scope.get("scheme") or "http"
    url_scheme = "https" if scheme in ("https", "wss") else "http"
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope.get("method", "GET"),
        "SCRIPT_NAME": _latin1(root_path),
        "PATH_INFO": _latin1(path_info),
        "QUERY_STRING": bytes(scope.get("query_string", b"")).decode("latin-1"),
        "SERVER_PROTOCOL": "HTTP/" + str(scope.get("http_version", "1.1")),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        # The body ends with EOF even when chunked: apps may read to the end.
        "wsgi.input_terminated": True,
        "asgi.scope": scope,
    }
    raw_path = scope.get("raw_path")
    if raw_path:
        query = environ["QUERY_STRING"]
        environ["RAW_URI"] = bytes(raw_path).decode("latin-1") + ("?" + query if query else "")

    repeats: dict[str, int] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = bytes(raw_name).decode("latin-1").lower()
        if "_" in name:
            continue  # smuggling guard, see module docstring
        value = bytes(raw_value).decode("latin-1")
        if name == "content-length":
            key = "CONTENT_LENGTH"
        elif name == "content-type":
            key = "CONTENT_TYPE"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        previous = environ.get(key)
        if previous is None:
            environ[key] = value
            continue
        count = repeats[key] = repeats.get(key, 1) + 1
        if count > max_header_repeats:
            raise _Reject(431, f"too many {name} headers")
        if key == "CONTENT_LENGTH":
            # RFC 9110 §8.6: identical copies may be folded, differing ones are an error.
            if value.strip() != previous.strip():
                raise _Reject(400, "conflicting Content-Length headers")
            continue
        environ[key] = previous + ("; " if key == "HTTP_COOKIE" else ",") + value

    server = scope.get("server")
    if server:
        host, port = server[0], server[1]
        environ["SERVER_NAME"] = str(host)
        environ["SERVER_PORT"] = str(port) if port is not None else _DEFAULT_PORTS[url_scheme]
    else:
        name, port_text = _split_host(environ.get("HTTP_HOST", ""))
        environ["SERVER_NAME"] = name or "localhost"
        environ["SERVER_PORT"] = port_text or _DEFAULT_PORTS[url_scheme]
    client = scope.get("client")
    if client:
        environ["REMOTE_ADDR"] = str(client[0])
        environ["REMOTE_PORT"] = str(client[1])
    return environ


def _spec_version(scope: Scope) -> tuple[int, ...]:
    """The ASGI www spec version the server declares; "2.0" when it says none."""
    text = (scope.get("asgi") or {}).get("spec_version") or "2.0"
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return (2, 0)


def _response_header(pair: object) -> tuple[bytes, bytes]:
    """Check one ``start_response`` header and encode it for ASGI.

    Raises:
        TypeError: not a (str, str) tuple (PEP 3333 "The start_response() Callable").
        ValueError: a name that is not a token, or a value with CR, LF, NUL
            or a character outside latin-1 (RFC 9110 §5.1, §5.5).
    """
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise TypeError(f"start_response(): headers are (str, str) tuples, got {pair!r}")
    name, value = pair
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError(f"start_response(): header {pair!r} is not (str, str)")
    if not HTTP_TOKEN.fullmatch(name):
        raise ValueError(f"start_response(): header name {name!r} is not an RFC 9110 token")
    if any(c in value for c in _FORBIDDEN):
        raise ValueError(f"start_response(): header {name!r} holds CR, LF or NUL")
    try:
        return name.lower().encode("ascii"), value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"start_response(): header {name!r} is not latin-1") from exc


class _Sent(enum.Enum):
    """How much of the response has left for the server (``_Responder.sent``)."""

    NOTHING = "nothing"  # start_response(exc_info) may still replace it
    PART = "headers and part of the body"  # too late for a 500
    ALL = "the whole response"  # later chunks are dropped


class _Responder:
    """``start_response`` and ``write`` for one request, run in the worker."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Send, timeout_s: float | None):
        self._loop = loop
        self._send = send
        self._timeout_s = timeout_s
        self.status: int | None = None
        self.headers: HeaderList = []
        self.sent = _Sent.NOTHING
        self.abandoned = False  # set by the loop when the request is over
        self._content_length: int | None = None
        self._sent_bytes = 0

    @property
    def finished(self) -> bool:
        """No more body may be taken from the app: it is all out, or nobody listens.

        PEP 3333 "Handling the Content-Length Header": once Content-Length
        bytes are out the server stops iterating (also with ``Content-Length:
        0`` before any chunk, whose headers then leave with an empty body).
        """
        return (
            self.abandoned
            or self.sent is _Sent.ALL
            or (self._content_length is not None and self._sent_bytes >= self._content_length)
        )

    def abandon(self) -> None:
        """On the loop: the client is gone or the request is over; send nothing more."""
        self.abandoned = True

    def start_response(
        self,
        status: str,
        response_headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.sent is not _Sent.NOTHING:
                    # PEP 3333: too late to change the response; re-raise.
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # PEP 3333: avoid a reference cycle
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        code = status[:3] if isinstance(status, str) else ""
        if not (code.isdigit() and len(status) >= 3 and (len(status) == 3 or status[3] == " ")):
            raise ValueError(f"start_response(): status must look like '200 OK', got {status!r}")
        headers = [_response_header(pair) for pair in response_headers]
        content_length: int | None = None
        for name, value in headers:
            if name == b"content-length" and value.strip().isdigit():
                content_length = int(value)
        self.status = int(code)
        self.headers = headers
        self._content_length = content_length
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333's legacy ``write()``: the data is sent before this returns."""
        if self.status is None:
            raise RuntimeError("write() called before start_response()")
        self.send_chunk(data, final=False)

    def send_chunk(self, data: bytes, final: bool) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"WSGI response chunks must be bytes, got {type(data).__name__}")
        if self.sent is _Sent.ALL:
            if data:
                logger.warning("WSGI app sent body past its Content-Length; dropped")
            return
        if not data and not final:
            return  # PEP 3333: empty chunks neither send headers nor body
        if self.status is None:
            raise RuntimeError("the WSGI app returned a body without calling start_response()")
        messages: list[Message] = []
        if self.sent is _Sent.NOTHING:
            messages.append(
                {"type": "http.response.start", "status": self.status, "headers": self.headers}
            )
        more = not final
        if self._content_length is not None:
            room = self._content_length - self._sent_bytes
            if len(data) > room:
                logger.warning("WSGI app sent body past its Content-Length; truncated")
                data = data[:room]
            self._sent_bytes += len(data)
            if self._sent_bytes >= self._content_length:
                more = False  # the last byte is out: end the response in this message
        messages.append({"type": "http.response.body", "body": data, "more_body": more})
        self._deliver(messages)
        self.sent = _Sent.PART if more else _Sent.ALL

    def send_error(self) -> None:
        body = b"Internal Server Error"
        self._deliver(
            [
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", b"text/plain; charset=utf-8"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                },
                {"type": "http.response.body", "body": body, "more_body": False},
            ]
        )
        self.sent = _Sent.ALL

    def _deliver(self, messages: list[Message]) -> None:
        if self.abandoned:
            raise ClientDisconnected("the request was abandoned by the server")
        future = asyncio.run_coroutine_threadsafe(self._send_all(messages), self._loop)
        try:
            future.result(self._timeout_s)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"send() did not complete in {self._timeout_s} s") from None

    async def _send_all(self, messages: list[Message]) -> None:
        for message in messages:
            await self._send(message)


def _close_iterable(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            logger.exception("WSGI iterable close() failed")


class WsgiToAsgi:
    """Wrap a WSGI app as an ASGI app.

    Args:
        wsgi_app: the PEP 3333 application.
        max_workers: threads in the pool that runs the app (requests beyond
            that wait for a free thread).
        executor: use this pool instead of creating one.
        body_buffer_bytes: request body buffered ahead of the app's reads.
        max_header_repeats: copies of one header accepted before 431.
        io_timeout_s: the longest a worker waits for the next body chunk or
            for ``send`` to take a response chunk (``None``: no limit).
    """

    def __init__(
        self,
        wsgi_app: WSGIApp,
        max_workers: int = 16,
        *,
        executor: Executor | None = None,
        body_buffer_bytes: int = 64 * 1024,
        max_header_repeats: int = 32,
        io_timeout_s: float | None = 60.0,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.wsgi_app = wsgi_app
        self.executor = executor or ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="sluiceway-wsgi"
        )
        self.body_buffer_bytes = body_buffer_bytes
        self.max_header_repeats = max_header_repeats
        self.io_timeout_s = io_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await answer_lifespan(receive, send)  # WSGI has no lifespan: nothing to do
        elif kind == "websocket":
            await refuse_websocket(receive, send, 1000)
        else:
            raise ValueError(f"WsgiToAsgi serves http scopes, not {kind!r}")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            environ = build_environ(scope, self.max_header_repeats)
        except _Reject as exc:
            await send_text_response(send, exc.status, exc.reason)
            return
        loop = asyncio.get_running_loop()
        responder = _Responder(loop, send, self.io_timeout_s)
        # www spec 2.4: send() raises once the client is gone, and that stops
        # the response. An older server drops it silently: only http.disconnect
        # tells, so the body reader watches for it (as Starlette does). Not
        # always: sluiceway answers http.disconnect to a client that only
        # half-closed, and send() still reaches it (RFC 9112 §9.6).
        watch = _spec_version(scope) < (2, 4)
        body = RequestBody(
            loop,
            receive,
            self.body_buffer_bytes,
            self.io_timeout_s,
            responder.abandon if watch else None,
        )
        environ["wsgi.input"] = body
        body.start()
        ctx = contextvars.copy_context()
        try:
            await loop.run_in_executor(self.executor, ctx.run, self._run, environ, responder)
        finally:
            responder.abandon()
            body.stop()

    def _run(self, environ: dict[str, Any], responder: _Responder) -> None:
        """In a worker: call the app and stream its response."""
        result: Iterable[bytes] | None = None
        try:
            result = self.wsgi_app(environ, responder.start_response)
            if isinstance(result, (list, tuple)) and len(result) == 1:
                responder.send_chunk(result[0], final=True)
            elif not responder.finished:  # write() may have sent it all already
                for chunk in result:
                    responder.send_chunk(chunk, final=False)
                    # Checked before the iterable is advanced again: an endless
                    # one would otherwise spin (and log) for ever.
                    if responder.finished:
                        break
            if responder.abandoned:
                logger.debug("WSGI response abandoned: the client is gone")
            elif responder.sent is not _Sent.ALL:
                responder.send_chunk(b"", final=True)
        except Exception as exc:
            if isinstance(exc, OSError) and (
                responder.abandoned or isinstance(exc, ClientDisconnected)
            ):
                logger.debug("WSGI response abandoned: %r", exc)
                return
            if responder.sent is not _Sent.NOTHING:
                raise  # too late for a 500: the server aborts the response
            logger.exception(
                "WSGI app failed on %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"]
            )
            responder.send_error()
        finally:
            if result is not None:
                _close_iterable(result)
