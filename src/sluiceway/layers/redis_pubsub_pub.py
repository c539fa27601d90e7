"""The pub/sub layer's wire: one pipelined PUBLISH connection, and the protocol both sides use.

A profile of the first version put a third of each round trip in redis-py's
per-command machinery (a pooled connection checked out, a ``wait_for`` task
per write, a timeout context per read). So both of the layer's connections
are made by redis-py (``redis_conn.blocking_connection``: URL, password, TLS,
database, a Sentinel's primary), and once its handshake is done the socket's
transport is handed to ``RESPProtocol``: bytes are parsed by hiredis in
``data_received`` and each reply handled there, with no task and no await
between the socket and the receiver (``take_over``).

``Publisher`` (one per host and event loop) writes every PUBLISH of the loop
on one connection: the first of a loop iteration at once, the others of that
iteration together in one write (as ``redis_mux.py`` batches its pops).
Replies come back in order, each resolving its sender's future. Because one
connection carries them all, a loop's sends reach Redis, and so every
subscriber, in the order they were called (a pool of connections does not
promise that for concurrent sends).

Failure: a lost connection, or no reply for ``receive_timeout_s + 5`` s (the
socket timeout the pool had), fails every unanswered publish with
``redis.exceptions.ConnectionError``: the sender learns it, and a publish is
never retried (it may or may not have reached Redis; a retry could deliver it
twice). The next publish connects again.

Invariants: ``waiting`` holds one future per command written or queued, in
write order; a reply resolves the oldest; the connection's loss fails all.

Imports redis, hiredis and ``sluiceway.layers.redis_conn``; never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, cast

try:
    import hiredis
except ImportError as exc:  # pragma: no cover - hiredis comes with the "redis" extra
    raise ImportError(
        "the pub/sub layer parses Redis replies with hiredis: pip install 'sluiceway[redis]'"
    ) from exc
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from sluiceway.layers.redis_conn import LayerOptions, blocking_connection

# What hiredis returns (not raises) for an error reply.
ReplyError = hiredis.ReplyError

# Both connections speak RESP2: a pub/sub message is then a plain array that
# every hiredis release parses (RESP3 pushes need hiredis 3).
_RESP2 = {"protocol": 2}

# The socket timeout the command pool had (redis_conn._options): a publish
# unanswered this long past receive_timeout_s means a dead connection.
_SLACK_S = 5.0


def redis_error(reply: ReplyError) -> ResponseError:
    """redis-py's exception for an error reply: MovedError, ClusterDownError, ResponseError..."""
    error: ResponseError = BaseParser.parse_error(str(reply))  # type: ignore[no-untyped-call]  # untyped in redis-py
    return error


def encode_command(*args: bytes) -> bytes:
    """One command in RESP (the unified request protocol), ready for the socket."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class RESPProtocol(asyncio.Protocol):
    """Parses replies as they arrive and hands each to ``on_reply``; reports the loss."""

    def __init__(
        self, on_reply: Callable[[Any], None], on_lost: Callable[[Exception | None], None]
    ) -> None:
        self.reader = hiredis.Reader()
        self.writer: asyncio.StreamWriter | None = None  # see take_over
        self.on_reply = on_reply
        self.on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        on_reply = self.on_reply
        while (reply := reader.gets()) is not False:
            on_reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(exc)


async def take_over(
    layer: LayerOptions, url: str, options: dict[str, Any], protocol: RESPProtocol
) -> asyncio.Transport:
    """Connect as redis-py does (handshake included), then drive the socket with ``protocol``.

    Raises:
        redis.exceptions.ConnectionError, OSError: Redis is unreachable.
    """
    connection = blocking_connection(layer, url, {**options, **_RESP2})
    await connection.connect()  # type: ignore[no-untyped-call]  # untyped in redis-py
    # redis-py keeps its stream pair private; redis-py 5 to 8 name them so.
    # After the handshake nothing is left unread in them.
    reader = getattr(connection, "_reader", None)
    writer = getattr(connection, "_writer", None)
    if not isinstance(writer, asyncio.StreamWriter) or reader is None:
        with contextlib.suppress(Exception):
            await connection.disconnect()
        raise RuntimeError("this redis-py does not expose its connection's stream")
    # Typed as asyncio's; uvloop's transports have the same methods but are
    # not its subclasses, so no isinstance check here.
    transport = cast(asyncio.Transport, writer.transport)
    if transport.is_closing():
        raise RedisConnectionError("redis pub/sub: Redis closed the connection at once")
    leftover = bytes(getattr(reader, "_buffer", b""))
    transport.set_protocol(protocol)
    # The connection and the stream writer close the transport when they are
    # collected: the connection forgets it, the protocol keeps the writer.
    connection._writer = connection._reader = None
    protocol.writer = writer
    if leftover:
        protocol.data_received(leftover)
    return transport


class Publisher:
    """Every PUBLISH of one event loop to one host, pipelined on one connection.

    ``HEAD`` starts each command: ``redis_pubsub_cluster.ShardPublisher``
    makes it SPUBLISH (sharded pub/sub).
    """

    HEAD = b"*3\r\n$7\r\nPUBLISH\r\n"

    def __init__(self, layer: LayerOptions, url: str, options: dict[str, Any]) -> None:
        self.layer = layer
        self.url = url
        self.options = options
        self.transport: asyncio.Transport | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.outgoing: list[bytes] = []  # written by the next _flush
        self.flushing = False  # a _flush is scheduled
        self.replies = 0  # replies read on this connection, for the liveness check
        self.checked = -1
        self.timer: asyncio.TimerHandle | None = None
        self.closes = 0  # close() calls, so that a connect in flight knows

    async def publish(self, topic: bytes, entry: bytes) -> int:
        """PUBLISH ``entry`` on ``topic``: how many subscribers heard it.

        Raises:
            redis.exceptions.ConnectionError: no connection, or it was lost
                before the reply (the message may or may not have gone out).
            redis.exceptions.ResponseError: Redis refused the command.
        """
        transport = self.transport
        if transport is None:
            await self._connect()
            transport = self.transport
            if transport is None:
                raise RedisConnectionError("redis pub/sub: the publishing connection was lost")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(future)
        command = b"%s$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
            self.HEAD,
            len(topic),
            topic,
            len(entry),
            entry,
        )
        if self.flushing:
            # Another publish of this loop iteration went first: join the
            # one write that _flush makes of the rest.
            self.outgoing.append(command)
        else:
            # The first of the iteration goes out at once (no added latency);
            # the ones after it in the same iteration are batched.
            self.flushing = True
            loop.call_soon(self._flush)
            if not transport.is_closing():  # else connection_lost() fails it
                transport.write(command)
                if self.timer is None:
                    self._arm()
        reply = await future
        if not isinstance(reply, int):  # pragma: no cover - PUBLISH replies an integer
            raise ResponseError(f"unexpected reply to PUBLISH: {reply!r}")
        return reply

    async def _connect(self) -> None:
        # Concurrent first publishes share one connection attempt.
        if self.connecting is None or self.connecting.done():
            self.connecting = asyncio.get_running_loop().create_task(self._open())
            # Retrieved even if every caller was cancelled meanwhile.
            self.connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
        await asyncio.shield(self.connecting)

    async def _open(self) -> None:
        transport: asyncio.Transport | None = None

        def lost(exc: Exception | None) -> None:
            # Only this connection's loss counts: close() may have replaced it.
            if transport is not None and transport is self.transport:
                self._on_lost(exc)

        protocol = RESPProtocol(self._on_reply, lost)
        closes = self.closes
        transport = await take_over(self.layer, self.url, self.options, protocol)
        if closes != self.closes:
            # close() ran meanwhile: this connection must not outlive it.
            transport.close()
            raise RedisConnectionError("redis pub/sub: the layer was closed")
        self.transport = transport
        self.replies, self.checked = 0, -1

    def _flush(self) -> None:
        self.flushing = False
        outgoing, self.outgoing = self.outgoing, []
        transport = self.transport
        if transport is None:
            # Lost, or closed, since publish(): nothing could answer them.
            self._fail_all("redis pub/sub: the publishing connection was lost")
        elif outgoing and not transport.is_closing():  # closing: connection_lost() fails them
            transport.write(b"".join(outgoing))

    def _arm(self) -> None:
        delay = self.layer.receive_timeout_s + _SLACK_S
        self.timer = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        """Every unanswered stretch of the timeout: no reply at all means a dead connection."""
        self.timer = None
        if not self.waiting:
            return
        if self.replies == self.checked and self.transport is not None:
            self.transport.abort()  # connection_lost fails the waiting publishes
            return
        self.checked = self.replies
        self._arm()

    def _on_reply(self, reply: Any) -> None:
        self.replies += 1
        if not self.waiting:
            # Out of step with Redis (cannot happen unless the wire is
            # corrupt): every later reply would answer the wrong sender.
            if self.transport is not None:
                self.transport.abort()
            return
        future = self.waiting.popleft()
        if future.done():  # its sender was cancelled
            return
        if isinstance(reply, ReplyError):
            # redis-py's class for it (MovedError, ClusterDownError...), so
            # that the cluster's retry knows a refusal.
            future.set_exception(redis_error(reply))
        else:
            future.set_result(reply)

    def _on_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_all(f"redis pub/sub: the publishing connection was lost ({exc})")

    def _fail_all(self, why: str) -> None:
        """Fail every publish not answered, written or not: none goes out after this."""
        waiting, self.waiting = self.waiting, deque()
        self.outgoing = []
        for future in waiting:
            if not future.done():
                future.set_exception(RedisConnectionError(why))

    async def close(self) -> None:
        self.closes += 1
        transport, self.transport = self.transport, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if transport is not None:
            transport.close()
        self._fail_all("redis pub/sub: the layer was closed")
