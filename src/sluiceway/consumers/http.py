"""``AsyncHttpConsumer``: gather the request body, call ``handle(body)``, respond.

The response goes out with ``send_response(status, body, headers=...)`` or,
streamed, ``send_headers(...)`` then ``send_body(chunk, more_body=True)`` ...
``send_body(last)``. The consumer stops once the response is complete or the
client disconnects, calling ``disconnect()`` exactly once. A response left
open when ``handle`` returns (long polling, server-sent events) stays open
if layer messages can reach the consumer (it read ``channel_name`` or has
layer handlers, see ``consumers.base``): they may finish it (Channels'
documented long-poll pattern). Otherwise ``handle`` returning without a
response is a ``RuntimeError``, not a request that hangs.

The request body is bounded by ``max_body_bytes``: a larger declared
``Content-Length`` or a larger body as it arrives is answered with 413 and
``handle`` is never called. An exception from ``handle`` propagates after
``disconnect()`` (Channels swallows it with ``StopConsumer``), so the server
answers 500 and logs it.

Response state is one enum (``ResponseState``), not flags.

Imports ``consumers.base`` and ``sluiceway._toolkit``; never the server side.
"""

from __future__ import annotations

import enum
from abc import abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

from sluiceway._toolkit import header_list
from sluiceway.asgi.types import Message
from sluiceway.consumers.base import AsyncConsumer, StopConsumer

__all__ = ["AsyncHttpConsumer", "ResponseState"]

# Django's DATA_UPLOAD_MAX_MEMORY_SIZE default: a body this consumer buffers whole.
DEFAULT_MAX_BODY_BYTES = 2_621_440


class ResponseState(enum.Enum):
    NOT_STARTED = "not started"
    HEADERS_SENT = "headers sent"
    STREAMING = "streaming"
    COMPLETE = "complete"


class AsyncHttpConsumer(AsyncConsumer):
    """Async HTTP consumer; override ``handle(body)``."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __init__(self, **initkwargs: Any) -> None:
        super().__init__(**initkwargs)
        self.body: list[bytes] = []
        self._body_size = 0
        self._response = ResponseState.NOT_STARTED
        self._disconnected = False

    @property
    def response_state(self) -> ResponseState:
        return self._response

    async def send_headers(
        self,
        *,
        status: int = 200,
        headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
    ) -> None:
        """Start the response (the server sends it with the first body chunk).

        Raises:
            RuntimeError: the response has already started.
        """
        if self._response is not ResponseState.NOT_STARTED:
            raise RuntimeError(f"send_headers(): the response is already {self._response.value}")
        await self.send(
            {"type": "http.response.start", "status": status, "headers": header_list(headers)}
        )
        self._response = ResponseState.HEADERS_SENT

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        """Send a body chunk; ``more_body=True`` keeps the response open.

        Raises:
            TypeError: ``body`` is not bytes.
            RuntimeError: no headers yet, or the response is complete.
        """
        if not isinstance(body, bytes):
            raise TypeError(f"send_body() takes bytes, got {type(body).__name__}")
        if self._response is ResponseState.NOT_STARTED:
            raise RuntimeError("send_body(): call send_headers() first")
        if self._response is ResponseState.COMPLETE:
            raise RuntimeError("send_body(): the response is already complete")
        await self.send({"type": "http.response.body", "body": body, "more_body": more_body})
        self._response = ResponseState.STREAMING if more_body else ResponseState.COMPLETE

    async def send_response(
        self,
        status: int,
        body: bytes,
        *,
        headers: Mapping[Any, Any] | Iterable[tuple[Any, Any]] | None = None,
    ) -> None:
        """Send a whole response at once."""
        await self.send_headers(status=status, headers=headers)
        await self.send_body(body)

    @abstractmethod
    async def handle(self, body: bytes) -> None:
        """Respond to the request whose whole body is ``body``; subclasses must define it."""

    async def disconnect(self) -> None:
        """Called once when the exchange ends (response done or client gone)."""

    async def http_request(self, message: Message) -> None:
        chunk = message.get("body", b"")
        if not self.body and self._body_size == 0 and self._declared_too_large():
            await self._reject_too_large()
        self._body_size += len(chunk)
        if self._body_size > self.max_body_bytes:
            await self._reject_too_large()
        if chunk:
            self.body.append(chunk)
        if message.get("more_body", False):
            return
        try:
            await self.handle(b"".join(self.body))
        except BaseException:
            await self._finish()
            raise
        if self._response is ResponseState.NOT_STARTED and not self._layer_wanted:
            # No layer message can reach a consumer that never gave its
            # channel name out: nothing could ever answer this request.
            await self._finish()
            raise RuntimeError(f"{type(self).__name__}.handle() returned without responding")

    async def http_disconnect(self, message: Message) -> None:
        await self._finish()
        raise StopConsumer()

    async def dispatch(self, message: Message) -> None:
        await super().dispatch(message)
        if self._response is ResponseState.COMPLETE:
            await self._finish()
            raise StopConsumer()

    def _declared_too_large(self) -> bool:
        for name, value in self.scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value) > self.max_body_bytes
                except ValueError:
                    return False  # the server validates framing; not ours to judge
        return False

    async def _reject_too_large(self) -> None:
        if self._response is ResponseState.NOT_STARTED:
            await self.send_response(
                413,
                b"Request body too large",
                headers=[(b"content-type", b"text/plain; charset=utf-8")],
            )
        await self._finish()
        raise StopConsumer()

    async def _finish(self) -> None:
        if not self._disconnected:
            self._disconnected = True
            await self.disconnect()
