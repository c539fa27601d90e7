"""One process inbox of the Redis layer: its receive loop and its capacity counts.

Messages of process-local channels ``prefix.id!*`` all wait in one list, the
inbox ``P:c:prefix.id!``. One task per inbox moves them into the loop's local
buffer (a ``ChannelStore``) with one ``BLMPOP ... COUNT 100`` per batch, on a
dedicated connection; the capacity a message holds in ``P:n:prefix.id!`` is
released (batched) once the app has received it, so a slow consumer makes
senders see ``ChannelFull``.

Those counts are exact only while Redis keeps them: a restart with
persistence off, a FLUSHALL or the key's expiry loses them, and senders would
then fill a buffer that is already full. So the counts hash carries an epoch
(the token this inbox wrote when it last built it), a release applies only to
the epoch it was counted in, and the inbox rebuilds the counts (what its
buffer holds, plus what waits in the list) whenever its connection
(re)connects or a release finds another epoch. Until the rebuild is done, no
release of this inbox is sent.

Invariants: a capacity release is sent at least once or kept while its epoch
lasts (over-counting in ``P:n`` would block senders for good); ``held`` is
what the local buffer holds per channel; the loop outlives any error; what a
pop returns is always dispatched into the buffer (``close()`` wakes the pop
rather than cancel it, and keeps the buffer).

Imports redis and ``sluiceway.layers.redis_*``; never ``redis.py`` at run time
(only for type hints), never the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from sluiceway.errors import InvalidMessage
from sluiceway.layers.redis_conn import (
    RETRYABLE,
    Backoff,
    as_bytes,
    blocking_client,
    close_client,
    shielded,
)
from sluiceway.layers.redis_mux import REDIRECTED
from sluiceway.layers.redis_scripts import LUA_RELEASE, LUA_RESYNC, parse_entry

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from sluiceway.layers.redis_loop import LoopState

# The layer's own logger: where users filtering on the Redis layer look.
logger = logging.getLogger("sluiceway.layers.redis")

_INBOX_BATCH = 100


def pack_counts(counts: dict[str, int]) -> str:
    """``{"a": 2}`` as ``"a=2"``: the one-argument form the scripts split."""
    return ",".join([f"{channel}={n}" for channel, n in counts.items()])


class Inbox:
    """One inbox (``prefix.id!``) of one event loop: its task, counts and releases."""

    def __init__(self, state: LoopState, name: str) -> None:
        self.state = state
        self.name = name
        self.index = state.layer._route(name)
        # Same host; on a cluster, same hash tag: the pops name both keys.
        key = state.layer._heads[self.index]
        self.key = key + "c:" + name
        self.counts_key = key + "n:" + name
        self.wake_key = key + "w:" + name
        # The token of the counts this inbox built; '' while it holds nothing
        # (then the hash has no epoch, and is built again once it does).
        self.epoch = ""
        self.resync = True  # check (and rebuild if lost) the counts before the next pop
        self.held: dict[str, int] = {}  # channel -> messages in the local buffer
        self.releases: dict[str, int] = {}  # channel -> received, capacity not yet released
        # Releases that failed while a rebuild was pending: owed only if the
        # rebuild finds the counts intact.
        self.limbo: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.client: aioredis.Redis | None = None
        self.blmpop = True  # BLMPOP is Redis 7; older servers get LPOP + BLPOP

    # -- counts -----------------------------------------------------------------------------

    def owe(self, channel: str, count: int) -> None:
        self.releases[channel] = self.releases.get(channel, 0) + count

    def take_release(self) -> str | None:
        """The pending releases packed for LUA_RELEASE, now owed by the caller."""
        if self.resync or not self.releases:
            return None
        packed = pack_counts(self.releases)
        self.releases = {}
        return packed

    def restore(self, packed: str) -> None:
        for item in packed.split(","):
            channel, _, n = item.partition("=")
            self.owe(channel, int(n))

    def give_back(self, packed: str, epoch: str) -> None:
        """Undo ``take_release`` after the write failed: over-counting blocks senders."""
        if epoch != self.epoch:
            return  # counted in counts that are gone: nothing to release
        if self.resync:
            self.limbo.append(packed)
        else:
            self.restore(packed)
        self.state.schedule_release()

    def released(self, packed: str, epoch: str, result: object) -> None:
        """Act on LUA_RELEASE's reply (or error) for ``packed`` of ``epoch``."""
        if isinstance(result, Exception):
            # Kept, whatever the error (-OOM at maxmemory, a lost connection).
            logger.warning("redis capacity release failed (%s); retrying", result)
            self.give_back(packed, epoch)
        elif not result and epoch == self.epoch and not self.resync:
            # Redis holds no counts of this epoch any more (a restart, a
            # FLUSHALL, the key expired while idle): rebuild them. If the
            # buffer holds messages, senders are filling it while Redis
            # believes it empty: wake the pop, so that happens now.
            self.resync = True
            if self.held:
                logger.warning("redis capacity counts of %r were lost; rebuilding", self.name)
                self.state.wake([self])
            else:
                logger.debug("redis capacity counts of %r expired; rebuilding", self.name)

    # -- the task ---------------------------------------------------------------------------

    def start(self) -> None:
        if (self.task is None or self.task.done()) and not self.state.closing:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def _client(self) -> aioredis.Redis:
        if self.client is None:
            shard = self.state.shards[self.index]
            self.client = blocking_client(
                self.state.layer, await shard.locate(), shard.options, self._reconnected
            )
        return self.client

    async def _relocate(self) -> None:
        """On a cluster, after an error: reconnect to whichever node serves the inbox now."""
        if self.state.layer.cluster:
            # The node it finds may be a promoted replica that missed the
            # last writes: check the counts there before popping.
            self.resync = True
            client, self.client = self.client, None
            if client is not None:
                await close_client(client)
            await self.state.shards[self.index].relocate()

    def _reconnected(self) -> None:
        # A new connection may be to a Redis that restarted empty.
        self.resync = True

    async def run(self) -> None:
        """Move this inbox's messages from Redis into the local buffer, until closed."""
        state = self.state
        backoff = Backoff(state.stopping)
        while not state.closing:
            try:
                # Only a close() that could not wake the pop, and the end of
                # asyncio.run(), cancel this loop.
                entries = await shielded(self._rebuild() if self.resync else self._pop())
            except ResponseError as exc:
                if self.blmpop and "unknown command" in str(exc).lower():
                    self.blmpop = False
                    continue
                # OOM, a wrong key type, a replica: nothing we can fix, but the
                # loop must outlive it, or every receiver of this process starves.
                if isinstance(exc, REDIRECTED):
                    # A MOVED, ASK, TRYAGAIN or CLUSTERDOWN on a cluster: the
                    # slot moved or is moving, a failover is under way.
                    logger.info("redis inbox %r redirected (%s); retrying", self.name, exc)
                else:
                    logger.error("redis inbox %r: %s; retrying", self.name, exc)
                await self._relocate()
                await backoff.sleep()
                continue
            except RETRYABLE as exc:
                # The next connection may be to a Redis that restarted empty:
                # check the counts before popping into a buffer they describe.
                self.resync = True
                if not state.closing:
                    logger.warning("redis inbox %r unreachable (%s); retrying", self.name, exc)
                    await self._relocate()
                    await backoff.sleep()
                continue
            except Exception:
                # A client bug or a reply we cannot read: same rule, the loop lives on.
                logger.exception("redis inbox %r: unexpected error; retrying", self.name)
                await backoff.sleep()
                continue
            backoff.reset()
            self._dispatch_all(entries)

    async def _rebuild(self) -> list[Any]:
        """Check the counts, and rebuild them from the buffer and the list if lost."""
        client = await self._client()
        layer = self.state.layer
        old, new = self.epoch, secrets.token_hex(8)
        # Everything owed now is for messages that left the buffer already:
        # released in the old epoch if it still holds, void if not.
        packed = pack_counts(self.releases) if self.releases else None
        self.releases = {}
        results: list[Any] = []
        try:
            async with client.pipeline(transaction=False) as pipe:
                if packed is not None:
                    pipe.eval(LUA_RELEASE, 1, self.counts_key, packed, old)
                pipe.eval(
                    LUA_RESYNC,
                    2,
                    self.counts_key,
                    self.key,
                    old,
                    new,
                    layer._ttl_ms,
                    pack_counts(self.held),
                )
                results = await pipe.execute(raise_on_error=False)
        finally:
            release_failed = packed is not None and (
                not results or isinstance(results[0], Exception)
            )
            rebuilt = bool(results) and results[-1] in (1, 2)
            if rebuilt:
                self.epoch = new if results[-1] == 1 else ""
                self.limbo.clear()
            elif release_failed and packed is not None:
                self.restore(packed)
        if isinstance(results[-1], Exception):
            raise results[-1]
        if not rebuilt:
            for item in self.limbo:
                self.restore(item)
            self.limbo.clear()
        elif old and results[-1] == 1:
            # Counts this inbox had built, of messages still pending, were gone:
            # Redis restarted or lost the key.
            logger.info("redis inbox %r: capacity counts rebuilt", self.name)
        self.resync = False
        self.state.schedule_release()
        return []

    async def _pop(self) -> list[Any]:
        client = await self._client()
        timeout = self.state.layer.receive_timeout_s
        keys = [self.key, self.wake_key]
        epoch = self.epoch
        release = self.take_release()
        popped: Any
        try:
            if release is not None or not self.blmpop:
                # One round trip for the release and the (first) pop.
                async with client.pipeline(transaction=False) as pipe:
                    if release is not None:
                        pipe.eval(LUA_RELEASE, 1, self.counts_key, release, epoch)
                    if self.blmpop:
                        pipe.blmpop(timeout, 2, *keys, direction="LEFT", count=_INBOX_BATCH)
                    else:
                        pipe.lpop(self.key, _INBOX_BATCH)
                    # Errors come back as values: a refused release (-OOM) must
                    # not throw away the entries the pop took in the same trip.
                    results = await pipe.execute(raise_on_error=False)
                if release is not None:
                    self.released(release, epoch, results[0])
                release = None  # spent or given back: owed no more
                popped = results[-1]
                if isinstance(popped, Exception):
                    raise popped
            else:
                popped = await client.blmpop(
                    timeout, 2, *keys, direction="LEFT", count=_INBOX_BATCH
                )
        except BaseException:
            if release is not None:
                self.give_back(release, epoch)
            raise
        if self.blmpop:
            if not popped or as_bytes(popped[0]).decode("ascii") == self.wake_key:
                return []
            return list(popped[1])
        if popped:
            return list(popped)
        one: Any = await client.blpop(keys, timeout=timeout)
        if not one or as_bytes(one[0]).decode("ascii") == self.wake_key:
            return []
        return [one[1]]

    # -- into the buffer --------------------------------------------------------------------

    def _dispatch_all(self, entries: list[Any]) -> None:
        for entry in entries:
            try:
                self._dispatch(as_bytes(entry))
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                # Not an entry we wrote (another program shares the prefix?).
                logger.error("redis inbox %r: dropped a malformed entry (%s)", self.name, exc)

    def _dispatch(self, entry: bytes) -> None:
        state = self.state
        layer = state.layer
        deadline, names, payload = parse_entry(entry)
        channels = names.split(",")
        remaining = deadline - time.time()
        message: dict[str, Any] | None = None
        if remaining <= 0:
            layer.expired_on_receive += len(channels)
        else:
            try:
                message = layer._serializer.loads(payload)
            except InvalidMessage as exc:
                logger.error("dropped an unreadable layer message for %s: %s", names, exc)
        if message is None:
            for channel in channels:
                self.owe(channel, 1)
            state.schedule_release()
            return
        mono_deadline = time.monotonic() + remaining
        shared = len(channels) > 1
        held = self.held
        for channel in channels:
            # Group members share one decoded message: each gets a shallow
            # copy, as the in-memory layer gives them.
            copy = dict(message) if shared else message
            if state.store.put(channel, copy, mono_deadline):
                held[channel] = held.get(channel, 0) + 1
                if not self.epoch:
                    # Holding messages, with no counts of its own in Redis
                    # to protect them: build them before the next pop.
                    self.resync = True
                continue
            # Redis admitted it, so another process must run a larger capacity
            # for this channel than we do: say so loudly.
            layer.receive_buffer_overflows += 1
            self.owe(channel, 1)
            state.schedule_release()
            logger.error(
                "local buffer of %r is full (capacity %d): message dropped;"
                " do all processes configure the same capacities?",
                channel,
                layer.get_capacity(channel),
            )

    def removed(self, channel: str, count: int) -> None:
        """``count`` messages of ``channel`` left the buffer: their capacity is owed."""
        held = self.held
        n = held.get(channel, 0) - count
        if n > 0:
            held[channel] = n
        else:
            held.pop(channel, None)
        releases = self.releases  # owe(), inlined: this runs for every message received
        releases[channel] = releases.get(channel, 0) + count
