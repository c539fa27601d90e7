"""The Redis layer's connections: how many, made how, and how a failing call waits.

The budget, per event loop and Redis host, whatever the number of receivers:

* one bounded pool of ``max_connections`` for every command that does not
  block (``send``, ``group_*``, ``flush``, capacity releases of an idle
  inbox, wake-ups). A caller that finds every connection busy waits for one
  (``BlockingConnectionPool``): it never fails for the lack of a connection;
* one dedicated connection that multiplexes the blocking pops of every
  waiting ``receive()`` of a normal channel held on that host
  (``redis_mux.py``), opened on the first such ``receive()``;
* one dedicated connection per process inbox, on the inbox's host only (its
  pops, the releases they carry, its rebuilds): one per ``new_channel()``
  prefix in use, so one for consumers' ``specific``.

Blocking pops never take a pooled connection, so receivers cannot starve
senders, and a dedicated connection reports each (re)connection: the inbox
rebuilds its capacity counts after one (Redis may have restarted empty).

Every connection is made from a pool built by ``_pool``: a plain URL gets
redis-py's pools, a Sentinel entry (``redis+sentinel://``,
``redis_sentinel.py``) gets ``SentinelConnectionPool``s, whose connections ask
the sentinels for the primary at each (re)connection. So all three kinds of
connection follow the primary through a failover with no code of their own:
the loops' retries (``Backoff``) reconnect, and the reconnection finds the
promoted replica; the inbox's rebuild after it covers the writes the failover
lost.

Imports redis; never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sluiceway.layers.redis_sentinel import is_sentinel_url, parse_sentinel_url

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

_T = TypeVar("_T")


class LayerOptions(Protocol):
    """What the connections need of a layer (the queue layer or the pub/sub one)."""

    max_connections: int
    receive_timeout_s: float


RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


async def shielded(call: Coroutine[Any, Any, _T]) -> _T:
    """Await a blocking pop in a task of its own, shielded from cancellation.

    redis-py can swallow a cancellation that lands inside a command: a loop
    awaiting the command directly would then run on, and ``asyncio.run()``
    would wait for it for ever. Landing here, a cancel always stops the
    caller. The pop is cancelled too (if redis-py swallows that as well, it
    still ends within ``receive_timeout_s``); what it took is lost (at most
    once), which is why ``close()`` wakes the pops rather than cancel them.
    """
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        # Its error (close() cuts its socket) is expected: retrieve it, or
        # asyncio logs "Task exception was never retrieved".
        task.add_done_callback(_retrieve)
        raise


class Backoff:
    """Waits between retries of a failing Redis call: 50 ms, doubling up to 5 s.

    Every loop that outlives a Redis outage waits with one of these, so none
    can spin while Redis is down, and none waits long once it is back. A wait
    ends early when ``stop`` is set (the layer is closing).
    """

    __slots__ = ("delay", "stop")

    def __init__(self, stop: asyncio.Event | None = None) -> None:
        self.delay = _BACKOFF_FIRST_S
        self.stop = stop

    def reset(self) -> None:
        self.delay = _BACKOFF_FIRST_S

    async def sleep(self) -> None:
        if self.stop is None:
            await asyncio.sleep(self.delay)
        else:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.delay)
        self.delay = min(self.delay * 2, _BACKOFF_MAX_S)


def as_bytes(value: object) -> bytes:
    # redis-py types replies as a union of every reply type; ours are bytes
    # because no client is built with decode_responses.
    if not isinstance(value, bytes):
        raise TypeError(f"unexpected redis reply {value!r}")
    return value


def _options(layer: LayerOptions, options: dict[str, Any]) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        # redis-py retries by default: that can deliver a send twice and
        # stall a caller for a minute. The layer retries itself, where
        # retrying is safe (receiving), with its own backoff.
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": 5.0,
        # A blocking pop waits receive_timeout_s for data: the socket must wait longer.
        "socket_timeout": layer.receive_timeout_s + 5.0,
    }
    return {**defaults, **options}


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel addressing, with ``BlockingConnectionPool``'s wait for a free connection."""


class _SentinelConnection(SentinelManagedConnection):
    """Asks the sentinels for the primary however it is first used.

    redis-py's own class does so only when its pool connects it; a connection
    driven directly (``blocking_connection``: ``send_packed_command``) would
    connect to its default address, localhost.
    """

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
        await super().send_packed_command(command, check_health)


class _SentinelSSLConnection(_SentinelConnection, SentinelManagedSSLConnection):
    pass


def _pool(url: str, kwargs: dict[str, Any], blocking: bool = False) -> aioredis.ConnectionPool:
    """The pool of ``url`` (a plain or a Sentinel URL); ``blocking``: callers wait for a slot."""
    if not is_sentinel_url(url):
        cls = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
        return cls.from_url(url, **kwargs)
    sentinels, service, url_options = parse_sentinel_url(url)
    kwargs = {**url_options, **kwargs}
    kwargs["connection_class"] = (
        _SentinelSSLConnection if kwargs.pop("ssl", False) else _SentinelConnection
    )
    sentinel_kwargs = kwargs.pop("sentinel_kwargs", None)
    if sentinel_kwargs is None:
        # A dead sentinel must cost a discovery 1 s, not the primary's long
        # read timeout: the next sentinel is asked after it.
        sentinel_kwargs = {"socket_connect_timeout": 1.0, "socket_timeout": 1.0}
    # One Sentinel per pool: its clients are bound to the pool's event loop.
    manager = Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
    # redis-py leaves SentinelConnectionPool.__init__ untyped.
    sentinel_pool: Any = _BlockingSentinelPool if blocking else SentinelConnectionPool
    pool: aioredis.ConnectionPool = sentinel_pool(service, manager, **kwargs)
    # The pool gives its connections a weak proxy of itself; a connection
    # made outside the pool (blocking_connection) must keep it alive.
    pool.connection_kwargs["connection_pool"] = pool
    return pool


def command_client(layer: LayerOptions, url: str, options: dict[str, Any]) -> aioredis.Redis:
    """The bounded pool of one host for every command that does not block."""
    kwargs = {"max_connections": layer.max_connections, **_options(layer, options)}
    # timeout=None: wait for a free connection as long as it takes; each one
    # is held for one command at most, which socket_timeout bounds.
    return aioredis.Redis(connection_pool=_pool(url, {"timeout": None, **kwargs}, blocking=True))


def blocking_client(
    layer: LayerOptions,
    url: str,
    options: dict[str, Any],
    on_connect: Callable[[], None] | None = None,
) -> aioredis.Redis:
    """A client of exactly one connection, for one loop's blocking pops.

    ``on_connect`` runs after each (re)connection, including the ones redis-py
    makes silently when it finds the socket closed.
    """

    async def connected(connection: AbstractConnection) -> None:
        await connection.on_connect()
        if on_connect is not None:
            on_connect()

    kwargs = {**_options(layer, options), "max_connections": 1, "redis_connect_func": connected}
    return aioredis.Redis(connection_pool=_pool(url, kwargs))


def blocking_connection(
    layer: LayerOptions, url: str, options: dict[str, Any]
) -> AbstractConnection:
    """One connection of its own, driven command by command (``redis_mux.py``)."""
    # The pool only parses the URL and options; the connection is not pooled.
    pool = _pool(url, _options(layer, options))
    connection: AbstractConnection = pool.connection_class(**pool.connection_kwargs)
    return connection


async def close_client(client: aioredis.Redis) -> None:
    """Close ``client`` and the pool it was built on (it does not own it)."""
    await client.aclose()
    await client.connection_pool.disconnect()
