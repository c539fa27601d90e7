"""Consumers: one object per connection, each event handled by a method named after its type.

``AsyncConsumer`` and ``SyncConsumer`` follow Django Channels' API
(``websocket.receive`` -> ``websocket_receive``, ``as_asgi(**initkwargs)``,
``StopConsumer``), with two differences that matter for speed and fairness:

* an async consumer awaits its handlers on the event loop directly: no
  thread hop per event (Channels makes one per handler);
* a sync consumer runs each handler in a bounded thread pool, one at a time
  per connection (so in order), so a slow connection holds one pool thread
  and never the others (Channels funnels every sync consumer through one
  shared thread).

The channel-layer seam, kept small on purpose:

* ``channel_layer_alias = "default"`` picks the layer;
  ``sluiceway.layers.get_channel_layer(alias)`` is imported lazily (the
  toolkit works without the layers package) and returns ``None`` when no
  layer is configured;
* with a layer, ``__call__`` sets ``self.channel_layer`` and takes a name
  from ``layer.new_channel()`` (cheap: no I/O in the built-in layers);
* listening on ``layer.receive(channel_name)`` costs a reader task per
  source and an inbox, about a quarter of the per-event cost, and the
  layers package configures an in-memory layer by default, so it starts
  only when something can send to the channel: from the start if the
  consumer has ``groups`` or defines methods that may handle layer messages
  (``_may_handle_layer_messages``), else once ``channel_name`` is first
  read (the only way to hand the name out), as soon as the handler that
  read it returns. Until then the consumer awaits ``receive()`` directly.
  Messages sent meanwhile wait in the layer, as they would behind a busy
  handler in Channels. Both kinds of message are dispatched by ``type``
  (``chat.message`` -> ``chat_message``), one at a time, in arrival order;
* WebSocket consumers join ``groups`` on connect and leave them on
  disconnect (``consumers.websocket``).

Invariants: handlers of one consumer never run concurrently; the consumer
ends after it handled ``http.disconnect`` / ``websocket.disconnect``, even
if the handler did not raise ``StopConsumer``; a message type
with no handler, a missing ``type`` or a type naming a private or API method
raises ``ValueError`` naming the type and the method looked for.

Imports ``sluiceway.sync`` and ``sluiceway.asgi``; never the server side.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import os
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from sluiceway.asgi.types import Message, Receive, Scope, Send
from sluiceway.sync import AsyncToSync, SyncToAsync

if TYPE_CHECKING:
    from sluiceway.layers.base import ChannelLayer

__all__ = [
    "AcceptConnection",
    "AsyncConsumer",
    "ConsumerApp",
    "DenyConnection",
    "StopConsumer",
    "SyncConsumer",
    "get_handler_name",
]

DEFAULT_CHANNEL_LAYER = "default"

# How many merged messages may wait for the consumer before the readers pause:
# enough to absorb a burst, small enough that memory per connection is bounded.
_INBOX_LIMIT = 64

# Message types that would name the consumer's own API rather than a handler
# (a layer message {"type": "send"} must not call self.send).
_RESERVED = frozenset(
    {
        "accept",
        "as_asgi",
        "close",
        "connect",
        "decode_json",
        "disconnect",
        "dispatch",
        "encode_json",
        "handle",
        "receive",
        "receive_json",
        "send",
        "send_body",
        "send_headers",
        "send_json",
        "send_response",
    }
)


# Handlers for what an ASGI server sends: defining them says nothing about
# layer messages (see _may_handle_layer_messages).
_PROTOCOL_HANDLERS = frozenset(
    {
        "http_request",
        "http_disconnect",
        "websocket_connect",
        "websocket_receive",
        "websocket_disconnect",
    }
)

# After these the ASGI spec has nothing more to deliver: the consumer ends even
# if its handler forgot to raise StopConsumer (Channels would wait forever).
_DISCONNECTS = frozenset({"http.disconnect", "websocket.disconnect"})


class StopConsumer(Exception):
    """Raise in a handler to end the consumer cleanly."""


class AcceptConnection(Exception):
    """Raise in ``connect()`` to accept the WebSocket."""


class DenyConnection(Exception):
    """Raise in ``connect()`` to refuse the WebSocket (the client sees HTTP 403)."""


def get_handler_name(message: Message) -> str:
    """The method name for ``message["type"]``: dots become underscores.

    Raises:
        ValueError: no str ``type``, a leading underscore, or a reserved name.
    """
    kind = message.get("type")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"message has no 'type' (a non-empty str): {message!r}")
    name = kind.replace(".", "_")
    if name.startswith("_") or name in _RESERVED:
        raise ValueError(f"message type {kind!r} is not allowed: it would call {name}()")
    return name


_layer_lookup: Callable[[str], Any] | None = None
_layer_lookup_tried = False


def _get_channel_layer(alias: str) -> ChannelLayer | None:
    global _layer_lookup, _layer_lookup_tried
    if not _layer_lookup_tried:
        # Lazy and forgiving: the toolkit must run without the layers package.
        try:
            module = importlib.import_module("sluiceway.layers")
            _layer_lookup = getattr(module, "get_channel_layer", None)
        except ImportError:
            _layer_lookup = None
        _layer_lookup_tried = True
    if _layer_lookup is None:
        return None
    layer: ChannelLayer | None = _layer_lookup(alias)
    return layer


class ConsumerApp:
    """The ASGI app ``as_asgi()`` returns: one consumer instance per scope."""

    def __init__(self, consumer_class: type[_BaseConsumer], initkwargs: dict[str, Any]) -> None:
        self.consumer_class = consumer_class
        self.consumer_initkwargs = initkwargs
        functools.update_wrapper(self, consumer_class, updated=())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        consumer = self.consumer_class(**self.consumer_initkwargs)
        await consumer(scope, receive, send)


class _Inbox:
    """Merges the ASGI receive and the layer channel into one ordered stream.

    Two reader tasks feed it; the consumer takes from it. Readers pause at
    ``_INBOX_LIMIT`` queued messages, so a consumer slower than its peer
    keeps bounded memory and the peer feels back-pressure.
    """

    __slots__ = ("_failure", "_loop", "_messages", "_space", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._messages: deque[tuple[Message, bool]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._space: asyncio.Future[None] | None = None
        self._failure: BaseException | None = None

    async def put(self, message: Message, from_client: bool) -> None:
        self._messages.append((message, from_client))
        _wake(self._waiter)
        while len(self._messages) >= _INBOX_LIMIT:
            if self._space is None or self._space.done():
                self._space = self._loop.create_future()
            await self._space

    def fail(self, exc: BaseException) -> None:
        self._failure = exc
        _wake(self._waiter)

    async def get(self) -> tuple[Message, bool]:
        """The next message and whether it came from the ASGI receive."""
        while not self._messages:
            if self._failure is not None:
                raise self._failure
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._messages.popleft()
        if self._space is not None and len(self._messages) < _INBOX_LIMIT:
            _wake(self._space)
        return item

    async def read(self, source: Callable[[], Awaitable[Message]], from_client: bool) -> None:
        """Reader task body: move messages from ``source`` into the inbox."""
        try:
            while True:
                message = await source()
                await self.put(message, from_client)
                if from_client and message.get("type") in _DISCONNECTS:
                    return  # the ASGI receive has nothing after a disconnect
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.fail(exc)


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _may_handle_layer_messages(cls: type) -> bool:
    """Whether ``cls`` defines methods that may handle layer messages.

    Anything public and callable that a user class adds beyond this package's
    consumer API and the ASGI event handlers might be ``chat_message``; a
    user ``dispatch`` may take any type. False positives only cost speed.
    Such a consumer listens from the start, so a name read by code outside
    its handlers (a registry of live consumers) is listened on at once.
    """
    ours = [k for k in cls.__mro__ if k.__module__.startswith("sluiceway.consumers.")]
    known = set(_PROTOCOL_HANDLERS).union(*(vars(k) for k in ours), vars(object))
    for klass in cls.__mro__:
        if klass in ours or klass is object:
            continue
        for name, value in vars(klass).items():
            if name == "dispatch":
                return True
            if name.startswith("_") or name in known:
                continue
            if callable(value) or isinstance(value, (staticmethod, classmethod)):
                return True
    return False


class _BaseConsumer(ABC):
    """What async and sync consumers share: the receive loop and the layer seam."""

    channel_layer_alias: ClassVar[str] = DEFAULT_CHANNEL_LAYER
    groups: list[str] = []  # noqa: RUF012 - Channels' API; copied per instance

    scope: Scope
    base_send: Send
    channel_layer: ChannelLayer | None
    _channel_name: str | None = None
    # True once something may send to channel_name: listen on the layer.
    _layer_wanted = False
    # Set per class by __init_subclass__.
    _listens_from_start: ClassVar[bool] = False

    def __init__(self, **initkwargs: Any) -> None:
        cls = type(self)
        for key, value in initkwargs.items():
            if key.startswith("_") or not hasattr(cls, key):
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {key!r}")
            setattr(self, key, value)
        if "groups" not in initkwargs:
            self.groups = list(cls.groups)

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> ConsumerApp:
        """An ASGI app that builds ``cls(**initkwargs)`` for each connection.

        Raises:
            TypeError: a keyword that is not a class attribute (checked now,
                not at the first connection).
        """
        for key in initkwargs:
            if key.startswith("_") or not hasattr(cls, key):
                raise TypeError(
                    f"{cls.__name__}.as_asgi() got {key!r}: only class attributes may be set"
                )
        return ConsumerApp(cls, initkwargs)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._listens_from_start = _may_handle_layer_messages(cls)

    @property
    def channel_name(self) -> str:
        """This consumer's channel on the layer; reading it starts listening there.

        Raises:
            AttributeError: no channel layer is configured (so ``hasattr`` is False).
        """
        name = self._channel_name
        if name is None:
            raise AttributeError(f"{type(self).__name__} has no channel layer, so no channel_name")
        self._layer_wanted = True
        return name

    @channel_name.setter
    def channel_name(self, name: str) -> None:
        self._channel_name = name
        self._layer_wanted = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.base_send = send
        self._prepare(send)
        layer = self.channel_layer = _get_channel_layer(self.channel_layer_alias)
        try:
            if layer is None:
                await self._listen_client(receive, stop_for_layer=False)
                return
            self._channel_name = await layer.new_channel()
            self._layer_wanted = bool(self.groups) or self._listens_from_start
            try:
                if not self._layer_wanted and await self._listen_client(
                    receive, stop_for_layer=True
                ):
                    return  # the client left before anything could send to us
                await self._listen_both(receive, layer)
            finally:
                await self._release_layer(layer)
        except StopConsumer:
            pass

    async def _listen_client(self, receive: Receive, stop_for_layer: bool) -> bool:
        """Dispatch from ``receive()`` alone: no task, no inbox.

        Returns:
            True once the client disconnected; False, with ``stop_for_layer``,
            as soon as a handler has read ``channel_name`` (the layer is wanted).
        """
        while True:
            message = await receive()
            await self.dispatch(message)
            if message.get("type") in _DISCONNECTS:
                return True
            if stop_for_layer and self._layer_wanted:
                return False

    async def _listen_both(self, receive: Receive, layer: ChannelLayer) -> None:
        loop = asyncio.get_running_loop()
        inbox = _Inbox(loop)
        channel_receive = functools.partial(layer.receive, self.channel_name)
        readers = (
            loop.create_task(inbox.read(receive, from_client=True)),
            loop.create_task(inbox.read(channel_receive, from_client=False)),
        )
        try:
            while True:
                message, from_client = await inbox.get()
                await self.dispatch(message)
                if from_client and message.get("type") in _DISCONNECTS:
                    return
        finally:
            for reader in readers:
                reader.cancel()
            # Bounded: a layer that ignores cancellation must not hang us.
            # (asyncio.wait reports the readers' ends without raising; a
            # CancelledError here is our own task's, and must propagate.)
            await asyncio.wait(readers, timeout=5)

    def _prepare(self, send: Send) -> None:  # noqa: B027 - optional hook, empty by default
        """Hook for subclasses to set up per-connection state before the loop."""

    async def _release_layer(self, layer: ChannelLayer) -> None:  # noqa: B027 - optional hook
        """Hook: undo layer state (group memberships) however the consumer ended."""

    def _handler(self, message: Message) -> Callable[[Message], Any]:
        name = get_handler_name(message)
        handler = getattr(self, name, None)
        if handler is None or not callable(handler):
            raise ValueError(
                f"no handler for message type {message['type']!r}: "
                f"{type(self).__name__} has no method {name}()"
            )
        return handler  # type: ignore[no-any-return]  # getattr is untyped

    @abstractmethod
    async def dispatch(self, message: Message) -> None:
        """Run the handler for ``message`` (on the loop, or in the consumer's thread)."""


class AsyncConsumer(_BaseConsumer):
    """Base async consumer: handlers are ``async def`` methods, run on the loop."""

    async def dispatch(self, message: Message) -> None:
        """Call the handler for ``message``'s type.

        Raises:
            ValueError: no handler for the type (see ``get_handler_name``).
        """
        await self._handler(message)(message)

    async def send(self, message: Message) -> None:
        """Send an ASGI message to the server (overridable)."""
        await self.base_send(message)


def _default_workers() -> int:
    # The stdlib's own bound for I/O-bound pools.
    return min(32, (os.cpu_count() or 1) + 4)


_pool_lock = threading.Lock()
_shared_pool: ThreadPoolExecutor | None = None


def _sync_consumer_pool() -> ThreadPoolExecutor:
    global _shared_pool
    if _shared_pool is None:
        with _pool_lock:
            if _shared_pool is None:
                _shared_pool = ThreadPoolExecutor(
                    max_workers=_default_workers(), thread_name_prefix="sluiceway-consumer"
                )
    return _shared_pool


def _call_handler(handler: Callable[[Message], Any], message: Message) -> None:
    handler(message)


class SyncConsumer(_BaseConsumer):
    """Base sync consumer: handlers are plain methods, run in a thread pool.

    Set ``executor`` (class attribute or ``as_asgi(executor=...)``) to use your
    own pool; the default is one shared bounded pool. ``self.send(message)``
    blocks the handler's thread until the server took the message.
    """

    executor: Executor | None = None

    def _prepare(self, send: Send) -> None:
        self._run_handler = SyncToAsync(
            _call_handler,
            thread_sensitive=False,
            executor=self.executor or _sync_consumer_pool(),
        )
        self._send_blocking = AsyncToSync(send)

    async def dispatch(self, message: Message) -> None:
        """Run the handler for ``message``'s type in the pool and wait for it.

        Raises:
            ValueError: no handler for the type, raised before any thread hop.
        """
        await self._run_handler(self._handler(message), message)

    def send(self, message: Message) -> None:
        """Send an ASGI message to the server from a handler (blocks until sent)."""
        self._send_blocking(message)
