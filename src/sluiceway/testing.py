"""In-process test communicators: drive an ASGI app without a server.

``ApplicationCommunicator`` runs one application instance as an asyncio task
and stands in for the server: the test feeds it input messages and reads what
it sends. ``HttpCommunicator`` and ``WebsocketCommunicator`` add spec-shaped
scopes (ASGI www spec 2.5) and the usual conversations on top.

Invariants:

* The app task starts in an empty ``contextvars`` context, as it would under a
  server, so context variables set by the test do not leak into the app.
* Every wait has a timeout. When a wait times out the app task is cancelled
  and awaited before ``asyncio.TimeoutError`` is raised, so no task outlives
  the test unnoticed.
* An exception raised by the app is re-raised in the test by the next
  ``receive_output`` / ``wait`` / ``send_input`` call that finds it, unchanged.
* Output the app sent before it failed or finished is still delivered first.

This module is part of the toolkit: it imports only ``sluiceway.asgi``,
``sluiceway._toolkit`` and ``sluiceway.errors``, never the server side, so it
tests apps for any server.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

from sluiceway._toolkit import header_list
from sluiceway.asgi.compat import guarantee_single_callable
from sluiceway.asgi.types import ASGI_VERSION, ASGIApp, Message, Scope
from sluiceway.errors import ASGIMessageError, InvalidState

__all__ = [
    "ApplicationCommunicator",
    "ApplicationExited",
    "HttpCommunicator",
    "WebsocketCommunicator",
    "http_scope",
    "websocket_scope",
]

# Characters RFC 3986 §3.3 allows unescaped in a path, plus "%" so that a
# caller's own escapes survive. Anything else (non-ASCII, spaces) is escaped
# when we derive raw_path from a path given as text.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"

_TIMED_OUT = object()

DEFAULT_CLIENT = ("127.0.0.1", 50000)
DEFAULT_SERVER = ("testserver", 80)


class ApplicationExited(Exception):
    """The application returned without sending the output the test waited for."""


class ApplicationCommunicator:
    """Run one ASGI application instance and talk to it like a server would.

    Args:
        app: an ASGI 3 or ASGI 2 application.
        scope: the connection scope, passed to the app as is.
    """

    def __init__(self, app: Any, scope: Scope) -> None:
        self.app: ASGIApp = guarantee_single_callable(app)
        self.scope = scope
        self._input: asyncio.Queue[Message] | None = None
        self._output: deque[Message] = deque()
        self._waiter: asyncio.Future[object] | None = None
        self._task: asyncio.Task[None] | None = None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # built outside a loop: start on first use
        else:
            self._start()

    # -- the app's side ------------------------------------------------------

    def _start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._input = asyncio.Queue()
            coro = self.app(self.scope, self._input.get, self._app_send)
            # A server starts each app in a fresh context; so do we.
            self._task = contextvars.Context().run(asyncio.ensure_future, coro)
            self._task.add_done_callback(self._wake)
        return self._task

    async def _app_send(self, message: Message) -> None:
        if not isinstance(message, Mapping) or not isinstance(message.get("type"), str):
            raise ASGIMessageError(f"ASGI messages are dicts with a str 'type', got {message!r}")
        self._output.append(message)
        self._wake()

    def _wake(self, _: object = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the test's side -----------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the application instance has returned or raised."""
        return self._task is not None and self._task.done()

    async def send_input(self, message: Message) -> None:
        """Queue ``message`` for the app's next ``receive()``.

        Raises:
            Exception: whatever the app raised, if it has already failed.
        """
        task = self._start()
        if task.done():
            self._raise_if_failed(task)
        assert self._input is not None
        self._input.put_nowait(message)

    async def receive_output(self, timeout: float = 1) -> Message:
        """Return the next message the app sent, waiting up to ``timeout`` seconds.

        Raises:
            asyncio.TimeoutError: nothing arrived in time; the app was cancelled.
            ApplicationExited: the app returned and has nothing more to send.
            Exception: whatever the app raised.
        """
        task = self._start()
        if not self._output and not task.done() and not await self._wait_for_output(timeout):
            await self._cancel(task)
            raise asyncio.TimeoutError(f"no output from the application in {timeout} s")
        if self._output:
            return self._output.popleft()
        self._raise_if_failed(task)
        raise ApplicationExited("the application returned without sending another message")

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """Return True if the app sends nothing within ``timeout`` seconds.

        ``interval`` is accepted for compatibility with asgiref's signature; we
        wake on the app's output rather than polling, so it is not needed.

        Raises:
            Exception: whatever the app raised, if it failed meanwhile.
        """
        del interval
        task = self._start()
        if not self._output and not task.done():
            await self._wait_for_output(timeout)
        if self._output:
            return False
        if task.done():
            self._raise_if_failed(task)
        return True

    async def wait(self, timeout: float = 1) -> None:
        """Wait up to ``timeout`` seconds for the app to return.

        Raises:
            asyncio.TimeoutError: the app was still running; it was cancelled.
            Exception: whatever the app raised.
        """
        task = self._start()
        if not task.done():
            await asyncio.wait({task}, timeout=timeout)
            if not task.done():
                await self._cancel(task)
                raise asyncio.TimeoutError(f"the application did not exit within {timeout} s")
        self._raise_if_failed(task)

    async def stop(self) -> None:
        """Cancel the app if it still runs and wait for it; swallow its errors."""
        task = self._task
        if task is not None and not task.done():
            await self._cancel(task)
        elif task is not None and not task.cancelled():
            task.exception()  # mark retrieved: the caller chose not to see it

    # -- helpers -------------------------------------------------------------

    async def _wait_for_output(self, timeout: float) -> bool:
        """Wait until output is queued or the app is done; False on timeout."""
        loop = asyncio.get_running_loop()
        # One future and one timer handle per wait: cheaper than wait_for(),
        # which wraps the wait in a task (this runs per event in benchmarks).
        waiter: asyncio.Future[object] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None
        return waiter.result() is not _TIMED_OUT

    @staticmethod
    async def _cancel(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    @staticmethod
    def _raise_if_failed(task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            raise exc


def _expire(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_result(_TIMED_OUT)


# -- scopes -------------------------------------------------------------------


def _split_target(target: str) -> tuple[str, bytes, bytes]:
    """Split a request target into (path, raw_path, query_string) per ASGI www spec."""
    raw, _, query = target.partition("?")
    if not raw.startswith("/"):
        raise ValueError(f"the path must start with '/', got {target!r}")
    raw_path = quote(raw, safe=_PATH_SAFE).encode("ascii")
    query_string = quote(query, safe=_QUERY_SAFE + "=&").encode("ascii")
    return unquote(raw), raw_path, query_string


def _base_scope(scope_type: str, path: str, headers: Any, root_path: str) -> dict[str, Any]:
    decoded, raw_path, query_string = _split_target(path)
    return {
        "type": scope_type,
        "asgi": dict(ASGI_VERSION),
        "http_version": "1.1",
        "path": decoded,
        "raw_path": raw_path,
        "query_string": query_string,
        "root_path": root_path,
        "headers": header_list(headers),
        "client": DEFAULT_CLIENT,
        "server": DEFAULT_SERVER,
        "state": {},
        "extensions": {},
    }


def http_scope(
    method: str,
    path: str,
    headers: Iterable[tuple[Any, Any]] | None = None,
    *,
    root_path: str = "",
    scheme: str = "http",
) -> Scope:
    """Build an ``http`` scope. ``path`` is the request target, query included.

    As the current ASGI spec and uvicorn read it, ``path`` includes
    ``root_path``: pass the full path the client asked for.
    """
    scope = _base_scope("http", path, headers, root_path)
    scope["method"] = method.upper()
    scope["scheme"] = scheme
    return scope


def websocket_scope(
    path: str,
    headers: Iterable[tuple[Any, Any]] | None = None,
    subprotocols: Iterable[str] | None = None,
    *,
    root_path: str = "",
    scheme: str = "ws",
) -> Scope:
    """Build a ``websocket`` scope; see ``http_scope`` for ``path``."""
    scope = _base_scope("websocket", path, headers, root_path)
    scope["scheme"] = scheme
    scope["subprotocols"] = list(subprotocols or ())
    return scope


# -- HTTP ---------------------------------------------------------------------


class HttpCommunicator(ApplicationCommunicator):
    """Send one HTTP request to an app and collect the whole response.

    Args:
        app: the ASGI application.
        method: the request method.
        path: the request target, e.g. ``"/items/?page=2"``.
        body: the request body, sent as one ``http.request`` message.
        headers: (name, value) pairs, bytes or str.
        root_path: the mount point; ``path`` must include it.
    """

    def __init__(
        self,
        app: Any,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[tuple[Any, Any]] | None = None,
        *,
        root_path: str = "",
        scheme: str = "http",
    ) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, got {type(body).__name__}")
        self.body = body
        scope = http_scope(method, path, headers, root_path=root_path, scheme=scheme)
        super().__init__(app, scope)

    async def get_response(self, timeout: float = 1) -> dict[str, Any]:
        """Send the request and return ``{"status", "headers", "body"}``.

        ``timeout`` bounds each wait for a message from the app.

        Raises:
            ASGIMessageError: the app sent messages out of the HTTP order.
            asyncio.TimeoutError, ApplicationExited, or the app's own exception.
        """
        await self.send_input({"type": "http.request", "body": self.body, "more_body": False})
        start = await self.receive_output(timeout)
        if start.get("type") != "http.response.start":
            raise ASGIMessageError(f"expected http.response.start, got {start.get('type')!r}")
        status = start.get("status")
        if not isinstance(status, int):
            raise ASGIMessageError(f"http.response.start needs an int status, got {status!r}")
        response: dict[str, Any] = {
            "status": status,
            "headers": [(bytes(k), bytes(v)) for k, v in start.get("headers", [])],
        }
        chunks: list[bytes] = []
        while True:
            message = await self.receive_output(timeout)
            if message.get("type") != "http.response.body":
                raise ASGIMessageError(f"expected http.response.body, got {message.get('type')!r}")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        response["body"] = b"".join(chunks)
        return response


# -- WebSocket ----------------------------------------------------------------


class WebsocketCommunicator(ApplicationCommunicator):
    """Hold one WebSocket conversation with an app.

    Args:
        app: the ASGI application.
        path: the request target, query included.
        headers: (name, value) pairs, bytes or str.
        subprotocols: the subprotocols the client offers.
        root_path: the mount point; ``path`` must include it.
    """

    def __init__(
        self,
        app: Any,
        path: str,
        headers: Iterable[tuple[Any, Any]] | None = None,
        subprotocols: Iterable[str] | None = None,
        *,
        root_path: str = "",
        scheme: str = "ws",
    ) -> None:
        scope = websocket_scope(path, headers, subprotocols, root_path=root_path, scheme=scheme)
        super().__init__(app, scope)
        self.connected = False

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        """Open the handshake.

        Returns:
            ``(True, subprotocol)`` if the app accepted, ``(False, close_code)``
            if it closed first (a server answers that with HTTP 403).

        Raises:
            ASGIMessageError: the app answered with something else.
        """
        await self.send_input({"type": "websocket.connect"})
        message = await self.receive_output(timeout)
        kind = message.get("type")
        if kind == "websocket.accept":
            self.connected = True
            return True, message.get("subprotocol")
        if kind == "websocket.close":
            return False, message.get("code", 1000)
        raise ASGIMessageError(f"expected websocket.accept or websocket.close, got {kind!r}")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Send one frame to the app: exactly one of ``text_data`` or ``bytes_data``."""
        if not self.connected:
            raise InvalidState("connect() must succeed before sending frames")
        if (text_data is None) == (bytes_data is None):
            raise ValueError("pass exactly one of text_data or bytes_data")
        if text_data is not None and not isinstance(text_data, str):
            raise TypeError(f"text_data must be str, got {type(text_data).__name__}")
        if bytes_data is not None and not isinstance(bytes_data, bytes):
            raise TypeError(f"bytes_data must be bytes, got {type(bytes_data).__name__}")
        await self.send_input({"type": "websocket.receive", "text": text_data, "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        """Send ``data`` encoded as JSON in a text frame."""
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        """Return the payload of the next frame the app sends.

        Raises:
            ASGIMessageError: the app sent something other than websocket.send
                (a close, for instance; the message is in the error text).
        """
        message = await self.receive_output(timeout)
        if message.get("type") != "websocket.send":
            raise ASGIMessageError(f"expected websocket.send, got {message!r}")
        text, data = message.get("text"), message.get("bytes")
        if isinstance(text, str) and data is None:
            return text
        if isinstance(data, bytes) and text is None:
            return data
        raise ASGIMessageError("websocket.send needs exactly one of str 'text' or bytes 'bytes'")

    async def receive_json_from(self, timeout: float = 1) -> Any:
        """Return the next text frame decoded from JSON."""
        payload = await self.receive_from(timeout)
        if not isinstance(payload, str):
            raise ASGIMessageError("expected a text frame carrying JSON, got a binary frame")
        return json.loads(payload)

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        """Tell the app the client went away and wait for it to exit."""
        await self.send_input({"type": "websocket.disconnect", "code": code, "reason": ""})
        self.connected = False
        await self.wait(timeout)
