"""The Redis channel layer: the same API across processes and machines.

Key layout (``P`` is the ``prefix``, default ``sluiceway``)::

    P:c:<channel>       list   messages of a normal channel, oldest first
    P:c:<prefix.id!>    list   the inbox of one process: messages of all its
                               process-local channels ``prefix.id!*``
    P:n:<prefix.id!>    hash   channel -> messages queued for it and not yet
                               received by the app (in the inbox or in the
                               process's local buffer): its capacity count
    P:g:<group>         zset   channel -> membership deadline (ms), on the host
                               that holds the member's messages
    P:gc:<group>        hash   channel -> capacity, only for channels matched
                               by a ``channel_capacity`` pattern

An entry is ``<13-digit deadline ms><channels>\\n<payload>``: the payload is
the msgpack (optionally Fernet-sealed) message, ``<channels>`` its channel, or
for a ``group_send`` into an inbox, every member in that process, comma
separated (one copy of the payload per process, not per member). The scripts
and the entry format live in ``redis_scripts.py``. Every key gets a TTL, so the keys
of a dead process vanish on their own.

Round trips: ``send`` is one EVALSHA (expired head trimmed, capacity checked,
pushed, TTL set, atomically). ``group_send`` is one EVALSHA per host, run
concurrently, for a small group (up to ``GROUP_BUDGET`` members in process
inboxes on that host, or a quarter as many normal channels): a group's
members are stored on the host of each member's messages, so each host's
script reads its members, drops expired ones and pushes to each with its
capacity check. A larger group is walked in parts of at most
``GROUP_BUDGET`` work, one call per round trip, so no call holds Redis for
long and other clients are served between the parts. A normal
``receive`` waits in the multiplexed receiver of its host (``redis_mux.py``:
one BLPOP for every waiting receiver of this loop). Process-local channels
are received by one loop per inbox (``redis_inbox.py``), which moves messages
into a bounded local buffer (one BLMPOP: a batch when busy, a wait when
idle); the capacity a message holds in Redis is released (``P:n``
decremented, batched) when the app receives it, so a slow consumer makes
senders see ``ChannelFull``: backpressure, never a silently dropped message.
The counts carry an epoch and are rebuilt after Redis lost them.

Connections (``redis_conn.py``): per host and event loop, a pool of at most
``max_connections`` for commands, callers queueing for a free one, plus one
dedicated connection for the blocking pops of normal channels and one per
inbox; a layer used from several loops never shares a connection across
loops. A ``receive()`` of a ``!`` channel is refused unless this layer made
the channel in this loop (another process's messages are not ours to take).

What is bound to one event loop lives in ``redis_loop.py``; the scripts and
the entry format in ``redis_scripts.py``. On a Redis Cluster (``cluster=True``)
every key carries a bucket's hash tag after the prefix (``P:{tag}:c:...``),
the ring is not used, and a group send is one call per primary
(``redis_cluster.py``).

Imports redis (through ``redis_loop``), msgpack via serializers, and
``sluiceway.layers.base``/``redis_base``/``sharding``; never the server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sluiceway.errors import ChannelFull, InvalidChannelName, InvalidMessage
from sluiceway.layers.base import (
    CapacityPatterns,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
)
from sluiceway.layers.redis_base import RedisLayerBase
from sluiceway.layers.redis_loop import LoopState, Shard

if TYPE_CHECKING:
    from sluiceway.layers.redis_cluster import ClusterShard
from sluiceway.layers.redis_scripts import encode_entry, parse_entry, public_id
from sluiceway.layers.serializers import DEFAULT_MAX_MESSAGE_BYTES
from sluiceway.layers.sharding import HashRing, bucket_for

logger = logging.getLogger(__name__)


# The work one group_send call may do on one host, in member costs: 1 for a
# member in a process inbox (about 2.5 µs of Redis, measured: a counter
# increment), 3 for a normal channel (about 6.5 µs: its own trim, check and
# push). So a call holds Redis for about 2 ms, and a group of up to 1,000
# consumers, or 333 normal channels, per host still costs one call.
GROUP_BUDGET = 1000


class RedisChannelLayer(RedisLayerBase):
    """A channel layer on one or more Redis servers.

    Args:
        hosts: Redis URLs (``redis://[:password@]host:port/db``, ``rediss://``
            for TLS, ``unix://``), ``(host, port)`` pairs, or dicts with an
            ``address`` and extra ``redis.asyncio.Redis`` options. Several
            hosts are sharded by a consistent-hash ring. Default: localhost.
        prefix: the start of every key this layer touches.
        expiry_s, group_expiry_s, capacity, channel_capacity: see ``BaseChannelLayer``.
        symmetric_encryption_keys: encrypt message bodies; the first key
            encrypts, all decrypt (rotation).
        max_message_bytes: the largest serialised message accepted.
        receive_timeout_s: how long one blocking pop waits before it is
            reissued; bounds how long a dead connection can go unnoticed.
        max_connections: the size of the pool of commands, per host and
            event loop; blocking pops use dedicated connections besides it
            (see ``redis_conn.py``).
        cluster: ``hosts`` are seed nodes of one Redis Cluster (Redis 7+),
            not independent servers: keys are placed by hash tags, the
            hash ring is not used (see ``redis_cluster.py``).
    """

    def __init__(
        self,
        hosts: Sequence[object] | None = None,
        *,
        prefix: str = "sluiceway",
        expiry_s: float = 60.0,
        group_expiry_s: float = 86400.0,
        capacity: int = 100,
        channel_capacity: CapacityPatterns | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        receive_timeout_s: float = 2.0,
        max_connections: int = 8,
        cluster: bool = False,
    ) -> None:
        super().__init__(
            hosts,
            prefix=prefix,
            expiry_s=expiry_s,
            group_expiry_s=group_expiry_s,
            capacity=capacity,
            channel_capacity=channel_capacity,
            symmetric_encryption_keys=symmetric_encryption_keys,
            max_message_bytes=max_message_bytes,
            receive_timeout_s=receive_timeout_s,
            max_connections=max_connections,
            cluster=cluster,
        )
        self._ring: HashRing | None = None
        if self.cluster:
            from sluiceway.layers.redis_cluster import BUCKETS, heads

            self._buckets = BUCKETS
            # Per bucket: the start of its keys, with its hash tag.
            self._heads = heads(self._key)
        else:
            self._ring = HashRing([public_id(url) for url, _ in self._hosts])
            self._heads = [self._key] * len(self._hosts)
        self._loops: dict[asyncio.AbstractEventLoop, LoopState] = {}
        # Messages that reached this process's local buffer when it was full
        # (processes disagree on capacities, or Redis lost its counts more than
        # once before they were rebuilt): logged, counted.
        self.receive_buffer_overflows = 0
        # Sends refused with ChannelFull (the server's metrics read it).
        self.send_full = 0

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def _ttl_ms(self) -> int:
        # Derived, not stored: it must follow expiry_s, which is a plain attribute.
        # A list lives one second longer than its newest message may wait.
        return int(self.expiry_s * 1000) + 1000

    def _state(self) -> LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            for other in [lp for lp in self._loops if lp.is_closed()]:
                # A closed loop's sockets cannot be closed politely any more;
                # dropping the clients lets their transports be collected.
                del self._loops[other]
            state = self._loops[loop] = LoopState(self)
        elif state.closed:
            state.reopen()
        return state

    def _route(self, name: str) -> int:
        """The shard of ``name`` (a non-local name): a host's, or on a cluster a bucket's."""
        if self._ring is None:
            return bucket_for(name, self._buckets)
        return self._ring.index_for(name)

    def _shard(self, state: LoopState, channel: str) -> Shard:
        shard: Shard = state.shards[self._route(non_local_name(channel))]
        return shard

    async def _refusable(
        self, shard: Shard | ClusterShard, call: Callable[[], Awaitable[None]]
    ) -> None:
        """``await call()``; on a cluster, again while refused (``redis_cluster.retry_refused``).

        Only for calls that, once refused, ran nowhere (a MULTI/EXEC whose
        command was refused is aborted whole) or may run twice harmlessly.
        """
        if not self.cluster:
            return await call()
        from sluiceway.layers.redis_cluster import retry_refused

        return await retry_refused(shard.client, call)

    # -- the API ----------------------------------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Queue ``message`` on ``channel``, in one round trip.

        Raises:
            InvalidChannelName, InvalidMessage: bad input.
            ChannelFull: the channel holds ``capacity`` messages already.
            redis.exceptions.ConnectionError: Redis is unreachable (never retried:
                a retry could deliver twice).
        """
        require_valid_channel_name(channel)
        payload = self._serializer.dumps(require_valid_message(message))
        state = self._state()
        shard = self._shard(state, channel)
        now_ms = int(time.time() * 1000)
        local = non_local_name(channel)
        keys = [shard.head + "c:" + local]
        if local != channel:
            keys.append(shard.head + "n:" + local)
        entry = encode_entry(now_ms + int(self.expiry_s * 1000), channel, payload)
        args: list[bytes | str | int] = [
            now_ms,
            self.get_capacity(channel),
            entry,
            self._ttl_ms,
            channel,
        ]
        if not await shard.send(keys=keys, args=args):
            self.send_full += 1
            raise ChannelFull(f"channel {channel!r} is full")

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next unexpired message on ``channel``.

        Survives Redis restarts: connection errors are retried with backoff,
        never raised. Cancelling it loses no message.

        Raises:
            InvalidChannelName: a bad name, or a process-local channel that
                this layer did not make in this event loop (its messages are
                another process's: taking them would starve it).
        """
        require_valid_channel_name(channel)
        state = self._state()
        local = non_local_name(channel)
        if local != channel:
            if not local.endswith(state.local_suffix):
                # Channels' Redis layer refuses the same (an assert on the prefix).
                raise InvalidChannelName(
                    f"channel {channel!r} is process-local to another process, layer"
                    f" or event loop: only the layer that made it with new_channel()"
                    f" may receive it (here, in this event loop: '*{state.local_suffix}*')"
                )
            state.inbox(local)
            return await state.store.get(channel)
        index = self._route(channel)
        mux = state.mux(index)
        key = self._heads[index] + "c:" + channel
        while True:
            message = self._open(await mux.get(key))
            if message is not None:
                return message

    async def new_channel(self, prefix: str = "specific") -> str:
        """A fresh process-local channel name, ``<prefix>.<loop id>!<random>``."""
        state = self._state()
        return require_valid_channel_name(f"{prefix}.{state.client_id}!{secrets.token_hex(8)}")

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` to ``group`` (or renew its membership), in one round trip."""
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        shard = self._shard(state, channel)
        group_ms = int(self.group_expiry_s * 1000)
        gkey = shard.head + "g:" + group
        capacity = self.get_capacity(channel)

        async def add() -> None:
            async with shard.client.pipeline(transaction=True) as pipe:
                pipe.zadd(gkey, {channel: int(time.time() * 1000) + group_ms})
                pipe.pexpire(gkey, group_ms)
                if capacity != self.capacity:
                    ckey = shard.head + "gc:" + group
                    pipe.hset(ckey, channel, capacity)
                    pipe.pexpire(ckey, group_ms)
                await pipe.execute()

        await self._refusable(shard, add)

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        shard = self._shard(state, channel)

        async def discard() -> None:
            async with shard.client.pipeline(transaction=True) as pipe:
                pipe.zrem(shard.head + "g:" + group, channel)
                pipe.hdel(shard.head + "gc:" + group, channel)
                await pipe.execute()

        await self._refusable(shard, discard)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Queue ``message`` on every member of ``group``: one round trip per host.

        A host holding a large group takes one round trip per
        ``GROUP_BUDGET`` of work (each member exactly once, even if members
        renew or leave meanwhile). Full members are skipped, counted in
        ``group_send_full_skips`` and logged; the others are served regardless.
        """
        require_valid_group_name(group)
        payload = self._serializer.dumps(require_valid_message(message))
        state = self._state()
        now_ms = int(time.time() * 1000)
        args: list[bytes | str | int] = [
            now_ms,
            b"%013d" % (now_ms + int(self.expiry_s * 1000)),
            payload,
            self._ttl_ms,
            self.capacity,
        ]
        if self.cluster:
            from sluiceway.layers.redis_cluster import cluster_group_send

            full = await cluster_group_send(
                state.shards,
                group,
                args,
                GROUP_BUDGET,
                lambda shard: self._group_send_host(shard, group, args),
            )
        else:
            results = await asyncio.gather(
                *(self._group_send_host(shard, group, args) for shard in state.shards)
            )
            full = sum(results)
        if full:
            self.group_send_full_skips += full
            logger.warning(
                "group_send to %r skipped %d full channel(s) (capacity reached)", group, full
            )

    async def _group_send_host(
        self, shard: Shard | ClusterShard, group: str, args: list[bytes | str | int]
    ) -> int:
        """Serve ``group``'s members on one host (a cluster: one bucket); how many were full."""
        head = shard.head
        keys = [
            head + "g:" + group,
            head + "gc:" + group,
            # A fresh name per call: concurrent sends to one group never share a walk.
            head + "gs:" + secrets.token_hex(8),
        ]
        reply = await shard.group_send(keys=keys, args=[*args, head, GROUP_BUDGET, "", 0, ""])
        full = len(reply) - 4
        while not reply[0]:
            # One call per round trip, not pipelined: Redis runs every command
            # of a pipeline that reaches it in one read back to back, so other
            # clients would wait for all the parts; between round trips they
            # get their turn.
            cursor = reply[1:4]
            reply = await shard.group_send(keys=keys, args=[*args, head, GROUP_BUDGET, *cursor])
            full += len(reply) - 4
        return full

    def stats(self) -> dict[str, int]:
        """Numbers for the server's metrics (``--metrics-port``), known in this process.

        ``queued_messages``: messages fetched into this process's local
        receive buffers and not yet received by the app (what waits in Redis
        is not counted: that would cost a round trip per scrape);
        ``send_full``: this process's sends refused with ``ChannelFull``;
        ``group_send_full``: group members its ``group_send`` skipped as full;
        ``receive_buffer_overflows``: see ``__init__``.
        """
        return {
            "queued_messages": sum(state.store.queued() for state in list(self._loops.values())),
            "send_full": self.send_full,
            "group_send_full": self.group_send_full_skips,
            "receive_buffer_overflows": self.receive_buffer_overflows,
        }

    async def flush(self) -> None:
        """Delete every key under this layer's prefix (SCAN + UNLINK, never KEYS)."""
        state = self._state()
        pattern = self._key + "*"

        async def flush_host(shard: Shard | ClusterShard) -> None:
            batch: list[bytes] = []
            async for key in shard.client.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await shard.client.unlink(*batch)
                    batch.clear()
            if batch:
                await shard.client.unlink(*batch)

        # On a cluster every bucket shares one client, whose SCAN visits every
        # primary and whose UNLINK splits its keys by slot: once is enough,
        # and all of it again if refused (deleting twice is harmless).
        for shard in state.shards[:1] if self.cluster else state.shards:
            await self._refusable(shard, functools.partial(flush_host, shard))
        state.store.clear()
        state.forget_counts()

    async def close(self) -> None:
        """Stop this loop's receive loops and close its connections.

        What was already fetched from Redis is kept: in the local buffer, or
        pushed back to its list. The layer can be used again on this loop
        afterwards; it reconnects on first use.
        """
        state = self._loops.get(asyncio.get_running_loop())
        if state is not None and not state.closed and not state.closing:
            await state.close()

    # -- receiving --------------------------------------------------------------------------

    def _open(self, entry: bytes) -> dict[str, Any] | None:
        """Decode an entry of a normal channel; ``None`` if expired or unreadable."""
        try:
            deadline, _, payload = parse_entry(entry)
        except (ValueError, UnicodeDecodeError) as exc:
            logger.error("dropped a malformed layer entry: %s", exc)
            return None
        if deadline <= time.time():
            self.expired_on_receive += 1
            return None
        try:
            return self._serializer.loads(payload)
        except InvalidMessage as exc:
            logger.error("dropped an unreadable layer message: %s", exc)
            return None
