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
concurrently, whatever the group's size: a group's members are stored on the
host of each member's messages, so each host's script reads its members,
drops expired ones and pushes to each with its capacity check. A normal
``receive`` is one BLPOP. Process-local channels are received by one loop per
inbox and event loop, which moves messages into a bounded local buffer
(one BLMPOP: a batch when busy, a wait when idle); the capacity a message holds in
Redis is released (``P:n`` decremented, batched) when the app receives it, so
a slow consumer makes senders see ``ChannelFull``: backpressure, never a
silently dropped message.

Connections: one client (pool) per host per event loop, so a layer used from
several loops (tests, threads running their own loops) never shares a
connection across loops.

What is bound to one event loop (connections, the inbox loop, the local
buffer, capacity releases) lives in ``redis_inbox.py``; the scripts and the
entry format in ``redis_scripts.py``.

Imports redis (through ``redis_inbox``), msgpack via serializers, and
``sluiceway.layers.base``/``sharding``; never the server.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sluiceway.errors import ChannelFull, ConfigError, InvalidMessage
from sluiceway.layers.base import (
    BaseChannelLayer,
    CapacityPatterns,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
)
from sluiceway.layers.redis_inbox import (
    RETRYABLE,
    Backoff,
    LoopState,
    Shard,
    as_bytes,
)
from sluiceway.layers.redis_scripts import encode_entry, host_spec, parse_entry, public_id
from sluiceway.layers.serializers import DEFAULT_MAX_MESSAGE_BYTES, MessageSerializer
from sluiceway.layers.sharding import HashRing

logger = logging.getLogger(__name__)

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class RedisChannelLayer(BaseChannelLayer):
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
        receive_timeout_s: how long one BLPOP blocks before it is reissued;
            bounds how long a dead connection can go unnoticed.
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
    ) -> None:
        super().__init__(
            expiry_s=expiry_s,
            group_expiry_s=group_expiry_s,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        if isinstance(hosts, str):
            hosts = [hosts]
        self._hosts = [host_spec(h) for h in (hosts or ["redis://localhost:6379/0"])]
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(f"redis key prefix {prefix!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if receive_timeout_s <= 0:
            raise ConfigError("receive_timeout_s must be positive")
        self.prefix = prefix
        self._key = prefix + ":"
        self.receive_timeout_s = receive_timeout_s
        self._ring = HashRing([public_id(url) for url, _ in self._hosts])
        self._serializer = MessageSerializer(symmetric_encryption_keys, max_message_bytes)
        self._loops: dict[asyncio.AbstractEventLoop, LoopState] = {}
        # Messages that reached this process's local buffer when it was full
        # (only possible if processes disagree on capacities): logged, counted.
        self.receive_buffer_overflows = 0
        # Messages found expired when received (never delivered).
        self.expired_on_receive = 0

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
        return state

    def _shard(self, state: LoopState, channel: str) -> Shard:
        return state.shards[self._ring.index_for(non_local_name(channel))]

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
        counts = self._key + "n:" + local if local != channel else ""
        entry = encode_entry(now_ms + int(self.expiry_s * 1000), channel, payload)
        args: list[bytes | str | int] = [
            now_ms,
            self.get_capacity(channel),
            entry,
            self._ttl_ms,
            channel,
        ]
        if not await shard.send(keys=[self._key + "c:" + local, counts], args=args):
            raise ChannelFull(f"channel {channel!r} is full")

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next unexpired message on ``channel``.

        Survives Redis restarts: connection errors are retried with backoff,
        never raised. Cancelling it loses no message.
        """
        require_valid_channel_name(channel)
        state = self._state()
        local = non_local_name(channel)
        if local != channel:
            task = state.inbox_tasks.get(local)
            if task is None or task.done():
                state.inbox_tasks[local] = asyncio.get_running_loop().create_task(
                    state.inbox_loop(local)
                )
            return await state.store.get(channel)
        return await self._receive_plain(state, channel)

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
        gkey = self._key + "g:" + group
        async with shard.client.pipeline(transaction=True) as pipe:
            pipe.zadd(gkey, {channel: int(time.time() * 1000) + group_ms})
            pipe.pexpire(gkey, group_ms)
            capacity = self.get_capacity(channel)
            if capacity != self.capacity:
                ckey = self._key + "gc:" + group
                pipe.hset(ckey, channel, capacity)
                pipe.pexpire(ckey, group_ms)
            await pipe.execute()

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        shard = self._shard(state, channel)
        async with shard.client.pipeline(transaction=True) as pipe:
            pipe.zrem(self._key + "g:" + group, channel)
            pipe.hdel(self._key + "gc:" + group, channel)
            await pipe.execute()

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Queue ``message`` on every member of ``group``: one round trip per host.

        Full members are skipped, counted in ``group_send_full_skips`` and
        logged; the others are served regardless.
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
            self._key,
        ]
        keys = [self._key + "g:" + group, self._key + "gc:" + group]
        results = await asyncio.gather(*(s.group_send(keys=keys, args=args) for s in state.shards))
        full = sum(len(r) for r in results)
        if full:
            self.group_send_full_skips += full
            logger.warning(
                "group_send to %r skipped %d full channel(s) (capacity reached)", group, full
            )

    async def flush(self) -> None:
        """Delete every key under this layer's prefix (SCAN + UNLINK, never KEYS)."""
        state = self._state()
        pattern = self._key + "*"
        for shard in state.shards:
            batch: list[bytes] = []
            async for key in shard.client.scan_iter(match=pattern, count=500):
                batch.append(key)
                if len(batch) >= 500:
                    await shard.client.unlink(*batch)
                    batch.clear()
            if batch:
                await shard.client.unlink(*batch)
        state.store.clear()
        state.releases.clear()

    async def close(self) -> None:
        """Stop this loop's inbox loops and close its connections."""
        loop = asyncio.get_running_loop()
        state = self._loops.pop(loop, None)
        if state is None:
            return
        state.closing = True
        if state.release_timer is not None:
            state.release_timer.cancel()
        tasks = [*state.inbox_tasks.values(), *state.background, *state.orphans.values()]
        if state.release_task is not None:
            tasks.append(state.release_task)
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=0.05)
            if pending:
                # Cut the sockets under any BLPOP that swallowed the cancel.
                for shard in state.shards:
                    await shard.client.connection_pool.disconnect(inuse_connections=True)
                await asyncio.wait(pending, timeout=self.receive_timeout_s + 1.0)
        for shard in state.shards:
            await shard.client.aclose()

    # -- receiving --------------------------------------------------------------------------

    async def _receive_plain(self, state: LoopState, channel: str) -> dict[str, Any]:
        shard = self._shard(state, channel)
        key = self._key + "c:" + channel
        backoff = Backoff()
        while True:
            # What the BLPOP of a cancelled receive() takes is the head of the
            # list: adopting it keeps a lone receiver's order exact, where a
            # new BLPOP would overtake it and take the second message.
            pop = state.orphans.pop(key, None)
            if pop is None:
                requeue = state.requeues.get(key)
                if requeue is not None:
                    # A message given back goes to the head: let it land first.
                    await asyncio.wait([requeue])
                pop = asyncio.ensure_future(
                    shard.client.blpop([key], timeout=self.receive_timeout_s)
                )
            try:
                result = await asyncio.shield(pop)
            except asyncio.CancelledError:
                self._orphan(state, shard, key, pop)
                raise
            except RETRYABLE as exc:
                logger.warning("redis receive on %r failed (%s); retrying", channel, exc)
                await backoff.sleep()
                continue
            backoff.reset()
            if result is None:
                continue
            message = self._open(as_bytes(result[1]))
            if message is not None:
                return message

    def _orphan(self, state: LoopState, shard: Shard, key: str, pop: asyncio.Future[Any]) -> None:
        """Leave a cancelled receive's BLPOP running for the next receive() to adopt."""
        if state.orphans.setdefault(key, pop) is not pop:
            # Several receivers of one list cancelled at once: no order among
            # their messages was ever promised, so this one just goes back.
            pop.add_done_callback(lambda p: self._requeue(state, shard, key, p))
            return

        def settle(p: asyncio.Future[Any]) -> None:
            if state.orphans.get(key) is p:  # it returned before anyone adopted it
                del state.orphans[key]
                self._requeue(state, shard, key, p)

        pop.add_done_callback(settle)

    def _requeue(self, state: LoopState, shard: Shard, key: str, pop: asyncio.Future[Any]) -> None:
        if pop.cancelled() or pop.exception() is not None or pop.result() is None:
            return
        task = asyncio.ensure_future(self._push_back(shard, key, pop.result()[1]))
        state.background.add(task)
        task.add_done_callback(state.background.discard)
        state.requeues[key] = task
        task.add_done_callback(
            lambda t: state.requeues.pop(key) if state.requeues.get(key) is t else None
        )

    async def _push_back(self, shard: Shard, key: str, entry: bytes) -> None:
        try:
            # The BLPOP may have emptied and so deleted the list: the key needs
            # its TTL again, or it would outlive every process that uses it.
            async with shard.client.pipeline(transaction=True) as pipe:
                pipe.lpush(key, entry)
                pipe.pexpire(key, self._ttl_ms)
                await pipe.execute()
        except RETRYABLE as exc:
            logger.error("a message taken by a cancelled receive on %r is lost: %s", key, exc)

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
