"""Multiplexed receiving of normal channels: one blocking connection per host.

Every ``receive()`` of a normal channel in one event loop registers a waiter
here, on the host of its channel (on a Redis Cluster, its bucket: one
``BLPOP`` may only name keys of one slot, so it is one connection per bucket
in use, to the node serving it, see ``redis_cluster.py``); one task per host pops for all of them
with a single ``BLPOP key1 key2 ... wake timeout`` on a dedicated connection.
So 5,000 waiting receivers cost one connection, not 5,000, and they never
take a connection that a sender needs (``redis_conn.py``).

How it stays correct:

* a key that gets its first waiter while the pop is blocked is added by a
  wake-up: an entry pushed to this loop's wake key, which every pop also
  watches, ends the pop at once, and the next pop names the new key;
* a waiter that goes away (cancelled ``receive()``) stays in the running pop
  until it returns: what the pop takes for a key without a waiter is *held*,
  handed to the next ``receive()`` of that key in this loop if one comes, and
  otherwise pushed back to the head of its list (with the key's TTL) before
  the next pop, on the same connection, so it keeps its place;
* one pop per message: ``BLPOP`` returns at once when a key has data (Redis
  scans the keys in C, about 25 ns each) and blocks otherwise; the key just
  served goes last in the next pop, so one busy channel cannot starve the
  others (``BLPOP`` serves the first non-empty key it is given). The command
  is built from each key's encoding, made once, so that a pop naming 5,000
  keys costs the client a join, not 5,000 argument encodings.

The price is Redis time per pop that grows with the keys waiting in this
process: a pop that blocks costs Redis about 0.35 µs a key (1.8 ms for 5,000).
Thousands of receivers per process should use process-local channels
(``new_channel()``), which are received through one inbox whatever their
number.

Invariants: a popped entry goes to exactly one waiter, or is held, or is back
in Redis; the task outlives any error (connection errors are retried with
backoff; an error Redis returns for a key is raised to that key's waiters).

Imports redis and ``sluiceway.layers.redis_conn``; never
``redis.py`` at run time, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError

from sluiceway.layers.redis_conn import (
    RETRYABLE,
    Backoff,
    as_bytes,
    blocking_connection,
    shielded,
)

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection

    from sluiceway.layers.redis_loop import LoopState

logger = logging.getLogger("sluiceway.layers.redis")

# Errors of a Redis Cluster that say where to pop, not what is wrong with the
# keys (AskError covers MOVED).
REDIRECTED = (AskError, TryAgainError, ClusterDownError)

# What a wake-up pushes: any value ends the pop; nobody reads it.
WAKE = b"w"


def _encode(value: bytes) -> bytes:
    """One argument of a command, as RESP frames it."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


class PlainReceiver:
    """The waiting ``receive()`` calls of normal channels on one host, in one event loop."""

    def __init__(self, state: LoopState, index: int) -> None:
        self.state = state
        self.index = index
        # With the host's (on a cluster, the bucket's) key head: one pop names
        # it with the channels' keys, so it must share their slot.
        self.wake_key = state.layer._heads[index] + "w:" + state.client_id
        self._wake_arg = _encode(self.wake_key.encode("ascii"))
        # key -> its waiting receivers, in the order the next pop names the keys.
        self.waiters: dict[str, deque[asyncio.Future[bytes]]] = {}
        # key -> its argument encoding, made once, in the same order (see _pop).
        self.encoded: dict[str, bytes] = {}
        # Keys whose last waiter went away: dropped before the next pop.
        self.emptied: set[str] = set()
        self.held: dict[str, deque[bytes]] = {}
        # A pop is in progress: a key not in self.waiters when it started
        # (every key removed since is removed only before a pop) must wake it.
        self.blocking = False
        self.woken = False
        self.wanted = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.client: AbstractConnection | None = None

    # -- the receiver's side ----------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        """The next entry of list ``key``. Cancelling it loses nothing."""
        held = self.held.get(key)
        if held:
            entry = held.popleft()
            if not held:
                del self.held[key]
            return entry
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        queue = self.waiters.get(key)
        if queue is None:
            queue = self._add(key)
            if self.blocking:
                self.wake()
        queue.append(waiter)
        self.start()
        if not self.blocking:
            self.wanted.set()
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed an entry, then cancelled before taking it.
                self.give_back(key, waiter.result())
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    queue.remove(waiter)
                if not queue:
                    self.emptied.add(key)
            raise

    def give_back(self, key: str, entry: bytes) -> None:
        """Return an entry no receiver took: to the next waiter, else held at the front."""
        if self._hand_over(key, entry):
            return
        self.held.setdefault(key, deque()).appendleft(entry)
        # The task pushes it back to Redis; wake it if it is blocked or idle.
        self.start()
        self.wanted.set()
        if self.blocking:
            self.wake()

    def start(self) -> None:
        if (self.task is None or self.task.done()) and not self.state.closing:
            self.task = asyncio.get_running_loop().create_task(self.run())

    def wake(self) -> None:
        """End the blocked pop early (once per pop), so the next one sees new keys."""
        if not self.woken:
            self.woken = True
            self.state.wake(muxes=[self])

    # -- the task ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Pop for every waiting receiver, until the layer closes."""
        state = self.state
        backoff = Backoff(state.stopping)
        while True:
            if self.held:
                try:
                    await self._return_held()
                except Exception as exc:
                    # Kept (held): a receive() here still gets them, and the
                    # next pass, or the next use after close(), retries.
                    logger.warning("redis: could not return popped messages (%s)", exc)
                    if state.closing:
                        return
                    await self._relocate()
                    await backoff.sleep()
                    continue
            if state.closing:
                return
            self._prune()
            if not self.waiters:
                self.wanted.clear()
                await self.wanted.wait()
                continue
            try:
                got = await shielded(self._pop())
            except REDIRECTED as exc:
                # A cluster's slot moved, is moving, or is failing over: not
                # the waiters' fault. Taken nothing; pop again where it is now.
                logger.info("redis receive redirected (%s); retrying", exc)
                await self._relocate()
                await backoff.sleep()
                continue
            except ResponseError as exc:
                await self._refused(exc)
                await backoff.sleep()
                continue
            except RETRYABLE as exc:
                if not state.closing:
                    logger.warning("redis receive failed (%s); retrying", exc)
                    await self._relocate()
                    await backoff.sleep()
                continue
            except Exception:
                logger.exception("redis receive: unexpected error; retrying")
                await backoff.sleep()
                continue
            finally:
                self.blocking = False
            backoff.reset()
            if got is not None:
                self._deliver(*got)

    def _add(self, key: str) -> deque[asyncio.Future[bytes]]:
        queue: deque[asyncio.Future[bytes]] = deque()
        self.waiters[key] = queue
        self.encoded[key] = _encode(key.encode("ascii"))
        self.emptied.discard(key)
        return queue

    def _drop(self, key: str) -> None:
        self.waiters.pop(key, None)
        self.encoded.pop(key, None)

    def _prune(self) -> None:
        # Cancelled waiters remove themselves: an emptied queue has none left.
        for key in self.emptied:
            if not self.waiters.get(key, True):
                self._drop(key)
        self.emptied.clear()

    async def _connection(self) -> AbstractConnection:
        if self.client is None:
            shard = self.state.shards[self.index]
            url = await shard.locate()
            self.client = blocking_connection(self.state.layer, url, shard.options)
        return self.client

    async def _relocate(self) -> None:
        """On a cluster, after an error: reconnect to whichever node serves the bucket now."""
        if self.state.layer.cluster:
            await self.close()
            await self.state.shards[self.index].relocate()

    async def _call(self, packed: list[bytes], replies: int = 1) -> Any:
        """Send a packed command (or several) on the dedicated connection; the last reply."""
        connection = await self._connection()
        # A failed send or read disconnects it (redis-py does); the next call reconnects.
        await connection.send_packed_command(packed, check_health=False)
        reply: Any = None
        for _ in range(replies):
            reply = await connection.read_response()
        return reply

    async def _pop(self) -> tuple[str, bytes] | None:
        encoded = self.encoded
        self.blocking = True
        self.woken = False
        timeout = repr(float(self.state.layer.receive_timeout_s)).encode()
        reply: Any = await self._call(
            [
                b"*%d\r\n$5\r\nBLPOP\r\n" % (len(encoded) + 3),
                b"".join(encoded.values()),
                self._wake_arg,
                _encode(timeout),
            ]
        )
        if reply is None:
            return None
        key = as_bytes(reply[0]).decode("ascii")
        return None if key == self.wake_key else (key, as_bytes(reply[1]))

    def _hand_over(self, key: str, entry: bytes) -> bool:
        queue = self.waiters.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(entry)
                encoded = self.encoded.pop(key)
                del self.waiters[key]
                if queue:
                    # Re-inserted: this key goes last in the next pop.
                    self.waiters[key] = queue
                    self.encoded[key] = encoded
                return True
        return False

    def _deliver(self, key: str, entry: bytes) -> None:
        if not self._hand_over(key, entry):
            self.held.setdefault(key, deque()).append(entry)

    async def _return_held(self) -> None:
        ttl = self.state.layer._ttl_ms
        while self.held:
            key = next(iter(self.held))
            # Taken out first: a receive() may claim the key's entries meanwhile.
            entries = self.held.pop(key)
            try:
                # On this connection, so it lands before our next pop. The pop
                # that took them may have emptied, and so deleted, the list: it
                # needs its TTL again, or it would outlive every user.
                packed = (await self._connection()).pack_commands(
                    [
                        ("MULTI",),
                        ("LPUSH", key, *reversed(entries)),
                        ("PEXPIRE", key, ttl),
                        ("EXEC",),
                    ]
                )
                await self._call(packed, replies=4)
            except BaseException:
                self.held.setdefault(key, deque()).extendleft(reversed(entries))
                raise

    async def _refused(self, exc: ResponseError) -> None:
        """Redis refused the pop: raise its error to the waiters of the keys at fault."""
        culprits = list(self.waiters)
        if "WRONGTYPE" in str(exc):
            # A foreign key of another type under the prefix: find it, so the
            # other channels' receivers are not failed with it.
            keys = culprits
            try:
                async with self.state.shards[self.index].client.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.type(key)
                    types: list[Any] = await pipe.execute()
                culprits = [
                    k for k, t in zip(keys, types, strict=True) if t not in (b"list", b"none")
                ]
            except Exception:
                culprits = keys
        logger.error("redis receive refused (%s) for %d channel(s)", exc, len(culprits))
        for key in culprits:
            for waiter in self.waiters.get(key, ()):
                if not waiter.done():
                    waiter.set_exception(exc)
            self._drop(key)

    async def close(self) -> None:
        """Close the dedicated connection; the waiters and held entries are kept."""
        connection, self.client = self.client, None
        if connection is not None:
            await connection.disconnect()
