"""Everything the Redis layer binds to one event loop, and its life cycle.

``LoopState`` holds, per event loop: a ``Shard`` per host (the bounded pool of
commands and the scripts registered on it, ``redis_conn.py``), the
multiplexed receivers of normal channels (``redis_mux.py``), the process
inboxes (``redis_inbox.py``), the local receive buffer they fill, and the
timer and task that send capacity releases when no pop carries them.

Life cycle: ``close()`` wakes every blocking pop (so what it took reaches the
buffer, or goes back to Redis), sends what releases it can, and closes every
connection; the buffer, the waiters, the inboxes' counts and this loop's
client id are kept, and ``reopen()`` (the next use of the layer on this loop)
connects again and carries on: a message fetched before ``close()`` is still
received after it.

Invariants: a connection is only ever used from the loop that made it; no
release of an inbox is sent while its counts are being rebuilt.

Imports redis, ``sluiceway.layers.base``/``memory``/``redis_*``; never
``redis.py`` at run time (only for type hints), never the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from sluiceway.layers.base import non_local_name
from sluiceway.layers.memory import ChannelStore
from sluiceway.layers.redis_conn import Backoff, close_client, command_client
from sluiceway.layers.redis_inbox import Inbox
from sluiceway.layers.redis_mux import WAKE, PlainReceiver
from sluiceway.layers.redis_scripts import LUA_GROUP_SEND, LUA_RELEASE, LUA_SEND

if TYPE_CHECKING:
    from sluiceway.layers.redis import RedisChannelLayer

logger = logging.getLogger("sluiceway.layers.redis")

# How long a received message may keep holding its capacity in Redis when the
# inbox loop is idle (busy loops release with their next pop, sooner).
_RELEASE_DELAY_S = 0.005
# The local buffer holds up to this many times a channel's capacity. Redis's
# counts decide what is admitted; right after Redis lost them (a restart),
# senders can admit up to one capacity more before the inbox has rebuilt
# them, and those messages need room.
_BUFFER_SLACK = 2
# How long close() waits for the pops it woke to return.
_CLOSE_WAIT_S = 1.0


class Shard:
    """One Redis host as one event loop sees it: its command pool and scripts.

    On a cluster, a ``redis_cluster.ClusterShard`` per bucket stands in for it,
    with the same attributes.
    """

    __slots__ = ("client", "group_send", "head", "options", "release", "send", "url")

    def __init__(self, layer: RedisChannelLayer, url: str, options: dict[str, Any]) -> None:
        self.url = url
        self.options = options
        self.head = layer._key  # the start of every key (see redis_cluster.py)
        self.client = command_client(layer, url, options)
        self.send = self.client.register_script(LUA_SEND)
        self.group_send = self.client.register_script(LUA_GROUP_SEND)
        self.release = self.client.register_script(LUA_RELEASE)

    async def locate(self) -> str:
        """The URL for a blocking connection to this host."""
        return self.url

    async def relocate(self) -> None:
        """After a blocking connection failed: nothing to learn, the host is fixed."""


def make_shards(layer: RedisChannelLayer) -> list[Any]:
    """A ``Shard`` per host, or on a cluster a ``ClusterShard`` per bucket."""
    if layer.cluster:
        from sluiceway.layers.redis_cluster import cluster_shards

        return cluster_shards(layer)
    return [Shard(layer, url, options) for url, options in layer._hosts]


class LoopState:
    """Everything bound to one event loop: connections, receivers, inboxes, local buffer."""

    def __init__(self, layer: RedisChannelLayer) -> None:
        self.layer = layer
        self.client_id = secrets.token_hex(6)
        # What ends the non-local part of every channel new_channel() makes here.
        self.local_suffix = f".{self.client_id}!"
        self.shards = make_shards(layer)
        self.muxes: dict[int, PlainReceiver] = {}
        self.inboxes: dict[str, Inbox] = {}
        self.store = ChannelStore(self._buffer_capacity, self.on_remove)
        self.release_task: asyncio.Task[None] | None = None
        self.release_timer: asyncio.TimerHandle | None = None
        self.background: set[asyncio.Task[Any]] = set()
        # redis-py (8.1) sometimes swallows a cancellation that lands inside a
        # command, so loops also check this flag rather than trust cancel().
        self.closing = False
        self.closed = False
        self.stopping = asyncio.Event()  # set by close(): ends backoff waits early

    def _buffer_capacity(self, channel: str) -> int:
        return _BUFFER_SLACK * self.layer.get_capacity(channel)

    def mux(self, index: int) -> PlainReceiver:
        mux = self.muxes.get(index)
        if mux is None:
            mux = self.muxes[index] = PlainReceiver(self, index)
        return mux

    def inbox(self, name: str) -> Inbox:
        """The inbox ``name`` (``prefix.id!``), its task running."""
        inbox = self.inboxes.get(name)
        if inbox is None:
            inbox = self.inboxes[name] = Inbox(self, name)
        inbox.start()
        return inbox

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def wake(self, inboxes: Iterable[Inbox] = (), muxes: Iterable[PlainReceiver] = ()) -> None:
        """End the blocking pops of ``inboxes`` and ``muxes`` early, in the background."""
        by_host: dict[int, list[str]] = {}
        owners: list[Inbox | PlainReceiver] = [*inboxes, *muxes]
        for item in owners:
            by_host.setdefault(item.index, []).append(item.wake_key)
        for index, keys in by_host.items():
            self.spawn(self._push_wakes(index, keys))

    async def _push_wakes(self, index: int, keys: list[str]) -> None:
        try:
            async with self.shards[index].client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.lpush(key, WAKE)
                    pipe.pexpire(key, self.layer._ttl_ms)
                await pipe.execute()
        except Exception as exc:
            # The pops end within receive_timeout_s anyway: a delay, not a loss.
            logger.debug("redis wake-up failed: %s", exc)

    # -- capacity releases ------------------------------------------------------------------

    def on_remove(self, channel: str, count: int) -> None:
        # Runs synchronously inside ChannelStore. The inbox loop sends pending
        # releases along with its next pop (no extra round trip when messages
        # keep coming); if it stays blocked, a timer sends them on their own
        # after _RELEASE_DELAY_S, batched, so a burst of receives costs one call.
        inbox = self.inboxes.get(non_local_name(channel))
        if inbox is not None:
            inbox.removed(channel, count)
            self.schedule_release()

    def schedule_release(self) -> None:
        if self.release_timer is None and not self.closing:
            self.release_timer = asyncio.get_running_loop().call_later(
                _RELEASE_DELAY_S, self._release_now
            )

    def _release_now(self) -> None:
        self.release_timer = None
        if self.release_task is None or self.release_task.done():
            self.release_task = asyncio.get_running_loop().create_task(self.release_loop())

    async def release_loop(self) -> None:
        """Hand back, in Redis, the capacity of messages the app has received."""
        backoff = Backoff(self.stopping)
        while not self.closing:
            for inbox in self.inboxes.values():
                epoch = inbox.epoch
                packed = inbox.take_release()
                if packed is not None:
                    break
            else:
                return
            try:
                result = await self.shards[inbox.index].release(
                    keys=[inbox.counts_key], args=[packed, epoch]
                )
            except asyncio.CancelledError:
                inbox.give_back(packed, epoch)
                raise
            except Exception as exc:
                inbox.released(packed, epoch, exc)  # logged and kept
                await backoff.sleep()
                continue
            backoff.reset()
            inbox.released(packed, epoch, result)

    async def flush_releases(self) -> None:
        """Send every pending release now, one call per inbox (best effort)."""
        for inbox in self.inboxes.values():
            epoch = inbox.epoch
            packed = inbox.take_release()
            if packed is None:
                continue
            try:
                result = await self.shards[inbox.index].release(
                    keys=[inbox.counts_key], args=[packed, epoch]
                )
            except Exception as exc:
                result = exc
            inbox.released(packed, epoch, result)

    def forget_counts(self) -> None:
        """After ``flush()``: what was owed is void, and the counts must be rebuilt.

        Each inbox rebuilds them before its next pop (no wake-up: that would
        leave a key behind the flush).
        """
        for inbox in self.inboxes.values():
            inbox.releases.clear()
            inbox.limbo.clear()
            inbox.resync = True
        for mux in self.muxes.values():
            mux.held.clear()

    # -- life cycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop this loop's tasks and close its connections; keep what was received."""
        self.closing = True
        self.stopping.set()
        if self.release_timer is not None:
            self.release_timer.cancel()
            self.release_timer = None
        inboxes = [i for i in self.inboxes.values() if i.task is not None and not i.task.done()]
        muxes = [m for m in self.muxes.values() if m.task is not None and not m.task.done()]
        owners: list[Inbox | PlainReceiver] = [*inboxes, *muxes]
        loops = [o.task for o in owners if o.task is not None]
        if loops:
            for mux in muxes:
                mux.wanted.set()  # an idle receiver task only has to see the flag
            # Woken, a pop returns what it took, and its loop files it (in the
            # buffer, or back in Redis) before it stops: nothing is lost.
            self.wake(inboxes, muxes)
            _, pending = await asyncio.wait(loops, timeout=_CLOSE_WAIT_S)
            if pending:
                for task in pending:
                    task.cancel()
                # Cut the sockets under any pop that swallowed the cancel.
                for inbox in self.inboxes.values():
                    if inbox.client is not None:
                        await inbox.client.connection_pool.disconnect(inuse_connections=True)
                for mux in self.muxes.values():
                    await mux.close()
                await asyncio.wait(pending, timeout=self.layer.receive_timeout_s + 1.0)
        tasks = list(self.background)
        if self.release_task is not None:
            tasks.append(self.release_task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)
        await self.flush_releases()
        for inbox in self.inboxes.values():
            if inbox.client is not None:
                await close_client(inbox.client)
                inbox.client = None
        for mux in self.muxes.values():
            await mux.close()
        for client in {id(shard.client): shard.client for shard in self.shards}.values():
            # On a cluster every bucket shares one client: closed once.
            if self.layer.cluster:
                await client.aclose()
            else:
                await close_client(client)
        self.closed = True

    def reopen(self) -> None:
        """Connect again after ``close()``, and resume what was running."""
        self.shards = make_shards(self.layer)
        self.closing = self.closed = False
        self.stopping = asyncio.Event()
        for inbox in self.inboxes.values():
            inbox.resync = True  # check the counts: Redis may have restarted since
            inbox.start()
        for mux in self.muxes.values():
            if mux.waiters or mux.held:
                mux.start()
        self.schedule_release()
