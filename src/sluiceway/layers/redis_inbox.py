"""The Redis layer's per-event-loop side: connections, the inbox loop, capacity releases.

``LoopState`` holds everything ``RedisChannelLayer`` binds to one event loop:
a client (pool) per host, the process-local receive buffer (a bounded
``ChannelStore``), one task per inbox that moves messages from Redis into that
buffer, and the releases of capacity for messages the app has received.

Invariants: a connection is only ever used from the loop that made it; a
capacity release is sent at least once or kept (over-counting in ``P:n``
would block senders for good); the inbox loop outlives any error.

Imports redis, ``sluiceway.layers.base``/``memory``/``redis_scripts``; never
``redis.py`` at run time (only for type hints) and never the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sluiceway.errors import InvalidMessage
from sluiceway.layers.base import non_local_name
from sluiceway.layers.memory import ChannelStore
from sluiceway.layers.redis_scripts import LUA_GROUP_SEND, LUA_RELEASE, LUA_SEND, parse_entry

if TYPE_CHECKING:
    from sluiceway.layers.redis import RedisChannelLayer

# The layer's own logger: where these lines were logged before the split, and
# where users filtering on the Redis layer look for them.
logger = logging.getLogger("sluiceway.layers.redis")

RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_INBOX_BATCH = 100
# How long a received message may keep holding its capacity in Redis when the
# inbox loop is idle (busy loops release with their next pop, sooner).
_RELEASE_DELAY_S = 0.005
_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class Backoff:
    """Waits between retries of a failing Redis call: 50 ms, doubling up to 5 s.

    Every loop that outlives a Redis outage waits with one of these, so none
    can spin while Redis is down, and none waits long once it is back.
    """

    __slots__ = ("delay",)

    def __init__(self) -> None:
        self.delay = _BACKOFF_FIRST_S

    def reset(self) -> None:
        self.delay = _BACKOFF_FIRST_S

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, _BACKOFF_MAX_S)


def as_bytes(value: object) -> bytes:
    # redis-py types replies as a union of every reply type; ours are bytes
    # because no client is built with decode_responses.
    if not isinstance(value, bytes):
        raise TypeError(f"unexpected redis reply {value!r}")
    return value


class Shard:
    __slots__ = ("client", "group_send", "release", "send")

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.send = client.register_script(LUA_SEND)
        self.group_send = client.register_script(LUA_GROUP_SEND)
        self.release = client.register_script(LUA_RELEASE)


class LoopState:
    """Everything bound to one event loop: connections, inbox loops, local buffer."""

    def __init__(self, layer: RedisChannelLayer) -> None:
        defaults: dict[str, Any] = {
            # redis-py retries 10 times by default: that can deliver a send twice
            # and stall a caller for a minute. The layer retries itself, where
            # retrying is safe (receiving), with its own backoff.
            "retry": Retry(NoBackoff(), 0),
            "socket_connect_timeout": 5.0,
            # A BLPOP waits receive_timeout_s for data: the socket must wait longer.
            "socket_timeout": layer.receive_timeout_s + 5.0,
        }
        self.shards = [
            Shard(aioredis.Redis.from_url(url, **{**defaults, **options}))
            for url, options in layer._hosts
        ]
        self.client_id = secrets.token_hex(6)
        self.store = ChannelStore(layer.get_capacity, self.on_remove)
        self.inbox_tasks: dict[str, asyncio.Task[None]] = {}
        self.releases: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self.release_task: asyncio.Task[None] | None = None
        self.release_timer: asyncio.TimerHandle | None = None
        self.background: set[asyncio.Task[Any]] = set()
        # By list key: the BLPOP of a cancelled receive(), still running, and
        # the push-back of a message such a BLPOP took that nobody adopted.
        self.orphans: dict[str, asyncio.Future[Any]] = {}
        self.requeues: dict[str, asyncio.Task[None]] = {}
        self.layer = layer
        # redis-py (8.1) sometimes swallows a cancellation that lands inside a
        # command, so loops also check this flag rather than trust cancel().
        self.closing = False

    def on_remove(self, channel: str, count: int) -> None:
        # Runs synchronously inside ChannelStore. The inbox loop sends pending
        # releases along with its next pop (no extra round trip when messages
        # keep coming); if it stays blocked, a timer sends them on their own
        # after _RELEASE_DELAY_S, batched, so a burst of receives costs one call.
        self.releases[non_local_name(channel)][channel] += count
        self.schedule_release()

    def schedule_release(self) -> None:
        if self.release_timer is None and not self.closing:
            self.release_timer = asyncio.get_running_loop().call_later(
                _RELEASE_DELAY_S, self._release_now
            )

    def _release_now(self) -> None:
        self.release_timer = None
        if self.releases and (self.release_task is None or self.release_task.done()):
            self.release_task = asyncio.get_running_loop().create_task(self.release_loop())

    def take_release(self, inbox: str) -> str | None:
        """Pending releases of ``inbox`` packed for LUA_RELEASE, now owed by the caller."""
        counts = self.releases.pop(inbox, None)
        if not counts:
            return None
        return ",".join([f"{channel}={n}" for channel, n in counts.items()])

    def give_back_release(self, inbox: str, packed: str) -> None:
        """Undo ``take_release`` after the write failed: over-counting blocks senders."""
        pending = self.releases[inbox]
        for item in packed.split(","):
            channel, _, n = item.partition("=")
            pending[channel] += int(n)
        self.schedule_release()

    async def inbox_loop(self, inbox: str) -> None:
        """Move this process's messages from Redis into the local buffer, forever."""
        client = self.shards[self.layer._ring.index_for(inbox)].client
        backoff = Backoff()
        # BLMPOP (Redis 7) waits when idle and takes a batch when busy, in one
        # command; older servers get LPOP with a count, then BLPOP.
        blmpop = True
        while not self.closing:
            pop = asyncio.ensure_future(self._pop_inbox(client, inbox, blmpop))
            try:
                # Shielded: redis-py can swallow a cancellation that lands inside
                # a command, and this loop would then run on, and asyncio.run()
                # would wait for it for ever. Landing here, it always stops us.
                entries = await asyncio.shield(pop)
            except asyncio.CancelledError:
                # Only close() and the end of asyncio.run() cancel this loop:
                # the local buffer goes with it, so what the pop may have
                # taken is lost either way (at most once). If redis-py swallows
                # this cancel too, the pop still ends within receive_timeout_s.
                pop.cancel()
                # Its error (close() cuts its socket) is expected: retrieve it,
                # or asyncio logs "Task exception was never retrieved".
                pop.add_done_callback(_retrieve)
                raise
            except ResponseError as exc:
                if blmpop and "unknown command" in str(exc).lower():
                    blmpop = False
                    continue
                # OOM, a wrong key type, a replica: nothing we can fix, but the
                # loop must outlive it, or every receiver of this process starves.
                logger.error("redis inbox %r: %s; retrying", inbox, exc)
                await backoff.sleep()
                continue
            except RETRYABLE as exc:
                if self.closing:
                    return
                logger.warning("redis inbox %r unreachable (%s); retrying", inbox, exc)
                await backoff.sleep()
                continue
            except Exception:
                # A client bug or a reply we cannot read: same rule, the loop lives on.
                logger.exception("redis inbox %r: unexpected error; retrying", inbox)
                await backoff.sleep()
                continue
            backoff.reset()
            self._dispatch_all(inbox, entries)

    async def _pop_inbox(self, client: aioredis.Redis, inbox: str, blmpop: bool) -> list[Any]:
        key = self.layer._key + "c:" + inbox
        release = self.take_release(inbox)
        popped: Any
        try:
            if release is not None or not blmpop:
                # One round trip for the release and the (first) pop.
                async with client.pipeline(transaction=False) as pipe:
                    if release is not None:
                        pipe.eval(LUA_RELEASE, 1, self.layer._key + "n:" + inbox, release)
                    if blmpop:
                        pipe.blmpop(
                            self.layer.receive_timeout_s,
                            1,
                            key,
                            direction="LEFT",
                            count=_INBOX_BATCH,
                        )
                    else:
                        pipe.lpop(key, _INBOX_BATCH)
                    # Errors come back as values: a refused release (-OOM) must
                    # not throw away the entries the pop took in the same trip.
                    results = await pipe.execute(raise_on_error=False)
                if release is not None and isinstance(results[0], Exception):
                    logger.warning("redis capacity release failed (%s); retrying", results[0])
                    self.give_back_release(inbox, release)
                release = None  # spent or given back: owed no more
                popped = results[-1]
                if isinstance(popped, Exception):
                    raise popped
            else:
                popped = await client.blmpop(
                    self.layer.receive_timeout_s, 1, key, direction="LEFT", count=_INBOX_BATCH
                )
        except BaseException:
            if release is not None:
                self.give_back_release(inbox, release)
            raise
        if blmpop:
            return list(popped[1]) if popped else []
        if popped:
            return list(popped)
        one: Any = await client.blpop([key], timeout=self.layer.receive_timeout_s)
        return [one[1]] if one else []

    def _dispatch_all(self, inbox: str, entries: list[Any]) -> None:
        for entry in entries:
            try:
                self._dispatch(as_bytes(entry))
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                # Not an entry we wrote (another program shares the prefix?).
                logger.error("redis inbox %r: dropped a malformed entry (%s)", inbox, exc)

    def _dispatch(self, entry: bytes) -> None:
        deadline, names, payload = parse_entry(entry)
        channels = names.split(",")
        remaining = deadline - time.time()
        message: dict[str, Any] | None = None
        if remaining <= 0:
            self.layer.expired_on_receive += len(channels)
        else:
            try:
                message = self.layer._serializer.loads(payload)
            except InvalidMessage as exc:
                logger.error("dropped an unreadable layer message for %s: %s", names, exc)
        if message is None:
            for channel in channels:
                self.on_remove(channel, 1)
            return
        mono_deadline = time.monotonic() + remaining
        shared = len(channels) > 1
        for channel in channels:
            # Group members share one decoded message: each gets a shallow
            # copy, as the in-memory layer gives them.
            copy = dict(message) if shared else message
            if self.store.put(channel, copy, mono_deadline):
                continue
            # Redis admitted it, so another process must run a larger capacity
            # for this channel than we do: say so loudly.
            self.layer.receive_buffer_overflows += 1
            self.on_remove(channel, 1)
            logger.error(
                "local buffer of %r is full (capacity %d): message dropped;"
                " do all processes configure the same capacities?",
                channel,
                self.layer.get_capacity(channel),
            )

    async def release_loop(self) -> None:
        """Hand back, in Redis, the capacity of messages the app has received."""
        backoff = Backoff()
        while self.releases and not self.closing:
            inbox = next(iter(self.releases))
            packed = self.take_release(inbox)
            if packed is None:
                continue
            shard = self.shards[self.layer._ring.index_for(inbox)]
            try:
                await shard.release(keys=[self.layer._key + "n:" + inbox], args=[packed])
                backoff.reset()
            except Exception as exc:
                # Keep them, whatever the error (-OOM at maxmemory, a lost
                # connection): over-counting would block senders for good.
                self.give_back_release(inbox, packed)
                logger.warning("redis capacity release failed (%s); retrying", exc)
                await backoff.sleep()
