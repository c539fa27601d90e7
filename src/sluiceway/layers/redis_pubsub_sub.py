"""The pub/sub layer's subscriber: one SUBSCRIBE connection per host and event loop.

Every topic this loop listens to on one host (process inboxes, normal
channels being received, groups with local members) is multiplexed on one
dedicated connection, made by redis-py (so a Sentinel entry follows the
primary) and then driven by ``RESPProtocol`` (``redis_pubsub_pub.py``): each
published message is parsed in ``data_received`` and handed to
``on_message`` there, with no task between the socket and the local buffer.
``subscribe`` and ``unsubscribe`` write on the same connection at once; a
task only connects, watches for loss and reconnects.

Reconnection: a lost connection (an error, or no reply to a PING within
``receive_timeout_s`` of an idle stretch) is dropped; the task reconnects with
``Backoff`` and subscribes every wanted topic again in one command. What was
published while it was away is lost: Redis pub/sub keeps nothing.

Invariants: ``wanted`` is the set of topics this loop listens to, whatever
the state of the connection; commands are written only while ``live`` (the
task wrote the full SUBSCRIBE after its last connect), so a topic is never
subscribed on a connection about to be replaced and then forgotten. Writes
never await, so nothing can change ``wanted`` between a check and a write.
A ``subscribe`` whose caller is cancelled raises ``CancelledError``, even
when the confirmation came in the same instant (the topic stays wanted).

Imports redis and ``sluiceway.layers.redis_*`` (hiredis through ``redis_pubsub_pub``);
never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError

from sluiceway.layers.redis_conn import RETRYABLE, Backoff, LayerOptions
from sluiceway.layers.redis_pubsub_pub import (
    ReplyError,
    RESPProtocol,
    encode_command,
    take_over,
)

logger = logging.getLogger("sluiceway.layers.redis_pubsub")

_PING = encode_command(b"PING")


class Subscriber:
    """The topics one event loop listens to on one host, and the task that keeps them.

    The class attributes name the commands and replies of plain pub/sub;
    ``redis_pubsub_cluster.ShardSubscriber`` swaps in sharded pub/sub's.
    """

    SUBSCRIBE = b"SUBSCRIBE"
    UNSUBSCRIBE = b"UNSUBSCRIBE"
    MESSAGE = b"message"  # the first element of a published message's array
    CONFIRMED = b"subscribe"  # ... of a subscription's confirmation

    def __init__(
        self,
        layer: LayerOptions,
        url: str,
        options: dict[str, Any],
        on_message: Callable[[bytes, bytes], None],
    ) -> None:
        self.layer = layer
        self.url = url
        self.options = options
        self.on_message = on_message
        self.wanted: set[bytes] = set()
        self.confirming: dict[bytes, list[asyncio.Future[None]]] = {}
        self.transport: asyncio.Transport | None = None
        # Resolved (with the reason, None for "nothing wanted") when the
        # current connection is to be dropped.
        self.lost: asyncio.Future[Exception | None] | None = None
        self.heard = False  # a reply came since the watch last looked
        self.live = False
        self.task: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()  # a topic was wanted while the task idled
        # Connections made after the first: each one resubscribed every topic.
        self.reconnects = 0
        self._connected_once = False

    def listening(self, topic: bytes) -> bool:
        """Redis confirmed ``topic`` on the current connection: ``subscribe`` returns at once."""
        return self.live and topic in self.wanted and topic not in self.confirming

    async def subscribe(self, topic: bytes, wait_s: float) -> None:
        """Listen to ``topic``; wait up to ``wait_s`` for Redis to confirm it.

        Confirmed, a message published on ``topic`` from then on reaches
        this loop. Unconfirmed in time (Redis unreachable), the topic stays
        wanted and is subscribed on reconnection; nothing is raised.
        Cancelled, it raises ``CancelledError`` whether or not Redis has
        confirmed meanwhile; the topic stays wanted either way.
        """
        if self.listening(topic):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.confirming.setdefault(topic, []).append(future)
        if topic not in self.wanted:
            self.wanted.add(topic)
            self._start()
            if self.live:
                self._write(encode_command(self.SUBSCRIBE, topic))
            else:
                self.changed.set()
        # asyncio.wait, not wait_for(shield(...)): before Python 3.12, wait_for
        # cancelled after the future completed (a confirmation and a cancel in
        # the same instant) returns instead of raising. A receive() cancelled
        # so went on waiting, and took its channel's next message from the
        # receive() meant to get it. wait() neither cancels the shared future
        # nor swallows a cancellation.
        await asyncio.wait((future,), timeout=wait_s)

    async def unsubscribe(self, topics: list[bytes]) -> None:
        """Stop listening to ``topics`` (no wait for Redis to confirm)."""
        gone = [t for t in topics if t in self.wanted]
        for topic in gone:
            self.wanted.discard(topic)
            for future in self.confirming.pop(topic, []):
                if not future.done():
                    future.set_result(None)
        if gone and self.live:
            self._write(self._command(self.UNSUBSCRIBE, gone))
            if not self.wanted and self.lost is not None and not self.lost.done():
                self.lost.set_result(None)  # the task drops the connection and idles

    def _command(self, verb: bytes, topics: list[bytes]) -> bytes:
        """``verb`` for every one of ``topics``: one command (sharded pub/sub: one per slot)."""
        return encode_command(verb, *topics)

    def _write(self, data: bytes) -> None:
        # A closing transport drops it; the task resubscribes everything wanted.
        if self.transport is not None:
            self.transport.write(data)

    def _start(self) -> None:
        if (self.task is None or self.task.done()) and not self.stopping.is_set():
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Keep a connection subscribed to ``wanted``; reconnect and resubscribe after a loss."""
        backoff = Backoff(self.stopping)
        while not self.stopping.is_set():
            if not self.wanted:
                self.changed.clear()
                await self._idle()
                continue
            failed = True
            try:
                await self._connect()
                backoff.reset()
                await self._watch()
                failed = False
            except RETRYABLE as exc:
                if not self.stopping.is_set():
                    logger.warning("redis pub/sub connection lost (%s); resubscribing", exc)
            except Exception:
                # The loop must live on, or every receiver of this process starves.
                logger.exception("redis pub/sub subscriber: unexpected error; reconnecting")
            self.live = False
            self._drop()
            if failed and not self.stopping.is_set():
                self._failed()
                await backoff.sleep()

    async def _idle(self) -> None:
        stop = asyncio.ensure_future(self.stopping.wait())
        change = asyncio.ensure_future(self.changed.wait())
        try:
            await asyncio.wait([stop, change], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            change.cancel()

    async def _connect(self) -> None:
        lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.lost = lost

        def on_lost(exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(exc or RedisConnectionError("redis closed the connection"))

        protocol = RESPProtocol(self._on_reply, on_lost)
        self.transport = await take_over(self.layer, self.url, self.options, protocol)
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        # Topics wanted or dropped while connecting (not live, so subscribe()
        # left them to us) are all in this one command. Each is unconfirmed
        # until Redis says so: a receive() meanwhile waits for that, as the
        # first one did.
        if self.wanted:
            self.transport.write(self._command(self.SUBSCRIBE, sorted(self.wanted)))
            for topic in self.wanted:
                self.confirming.setdefault(topic, [])
        self.live = True

    async def _watch(self) -> None:
        """Return when nothing is wanted; raise when the connection is lost or silent."""
        lost = self.lost
        assert lost is not None  # set by _connect, the only caller before us
        timeout = self.layer.receive_timeout_s
        pinged = False
        while not self.stopping.is_set():
            self.heard = False
            await asyncio.wait([lost], timeout=timeout)
            if lost.done():
                reason = lost.result()
                if reason is None:
                    return
                raise reason
            if self.heard:
                pinged = False
                continue
            if pinged:
                raise RedisConnectionError("no reply to PING: the connection is dead")
            # Idle: prove the connection alive (RESP2: a pong in pub/sub mode).
            self._write(_PING)
            pinged = True

    def _on_reply(self, reply: Any) -> None:
        """One reply, parsed: a published message, a confirmation or a pong."""
        self.heard = True
        if type(reply) is not list:
            if isinstance(reply, ReplyError):
                self._refused(reply)
            return
        kind = reply[0]
        if kind == self.MESSAGE:
            try:
                self.on_message(reply[1], reply[2])
            except Exception:
                # One bad message must not end the parsing of the rest.
                logger.exception("redis pub/sub: a message could not be delivered")
        elif kind == self.CONFIRMED:
            for future in self.confirming.pop(reply[1], []):
                if not future.done():
                    future.set_result(None)
        else:
            self._other(reply)

    # Hooks for sharded pub/sub (``redis_pubsub_cluster.ShardSubscriber``).

    def _refused(self, reply: ReplyError) -> None:
        """Redis answered a command with an error."""
        logger.error("redis pub/sub: Redis refused a command: %s", reply)

    def _other(self, reply: list[Any]) -> None:
        """Any other push: an unsubscribe's confirmation, a pong."""

    def _failed(self) -> None:
        """The connection was lost, or could not be made: the backoff wait is next."""

    def _drop(self) -> None:
        transport, self.transport = self.transport, None
        self.lost = None
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        """Stop the task and close the connection; ``wanted`` is kept for a restart."""
        self.stopping.set()
        self.live = False
        task = self.task
        self._drop()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.task = None

    def restart(self) -> None:
        """Resume after ``close()``: connect again and subscribe every wanted topic."""
        self.stopping = asyncio.Event()
        self.changed = asyncio.Event()
        if self.wanted:
            self._start()
