"""The pub/sub channel layer: Redis PUBLISH/SUBSCRIBE, no queue in Redis.

For apps that prefer the lowest latency to holding messages for a consumer
that is not listening. The API, the name and message rules, the serializer
(msgpack, optional encryption) and the hosts (URLs, Sentinel entries, several
hosts on a hash ring) are the queue layer's (``redis.py``); what differs is
what is guaranteed (``docs/layers.md`` sets the two side by side):

* a message reaches the processes subscribed to its topic *when it is
  published*; nobody listening means it is lost (``send`` cannot tell: it
  counts, in ``unheard_sends``, the publishes no subscriber heard);
* topics: ``P:c:<channel>`` for a normal channel, subscribed by a
  ``receive()`` and kept while receivers come back (unsubscribed after
  ``expiry_s`` with none); ``P:c:<prefix.id!>`` for all the process-local
  channels of one ``new_channel()`` prefix of this loop (one subscription,
  whatever the number of consumers; the entry names the channel);
  ``P:g:<group>`` for a group with members in this loop;
* capacity and expiry apply to the local buffer (``ChannelStore``, as the
  in-memory layer): a message arriving for a full channel is dropped (the
  newest, as the queue layer refuses the newest), counted in
  ``receive_buffer_overflows`` and logged; a message past its ``expiry_s``
  when received is never returned (``expired_on_receive``). ``send`` never
  raises ``ChannelFull``: the sender cannot know. A message for a channel
  with a ``receive()`` already waiting (so an empty buffer) is handed to
  that receiver at once, in the subscriber's socket callback; a
  receiver cancelled before it resumes gives it back, first in line;
* groups are per process: ``group_add`` records the member in this loop and
  subscribes the group's topic, ``group_send`` is one PUBLISH, and each
  subscribed loop copies the message to its unexpired members.
  ``group_discard`` and ``flush`` act on this loop's records only.

Connections, per host and event loop: one publishing connection that
pipelines every PUBLISH (``redis_pubsub_pub.py``), and one subscriber
connection (``redis_pubsub_sub.py``) that multiplexes every topic,
resubscribed after a reconnection. On a Redis Cluster (``cluster=True``),
sharded pub/sub: one of each per primary that owns a slot of a topic used
here, each topic routed by its slot (``redis_pubsub_cluster.py``). All are
made by redis-py and then driven by hiredis from ``data_received``: see
``redis_pubsub_pub.py`` for why. What the layer keeps per event loop, and how
an arriving message is delivered (to a waiting receiver, else the
buffer): ``redis_pubsub_loop.py``.

Imports redis (through ``redis_conn`` and ``redis_pubsub_*``), ``sluiceway.layers.*``;
never the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sluiceway.layers.base import (
    CapacityPatterns,
    non_local_name,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
)
from sluiceway.layers.redis_base import RedisLayerBase
from sluiceway.layers.redis_pubsub_loop import PubSubLoop
from sluiceway.layers.redis_pubsub_loop import receive as receive_in_loop
from sluiceway.layers.redis_scripts import encode_entry, public_id
from sluiceway.layers.serializers import DEFAULT_MAX_MESSAGE_BYTES
from sluiceway.layers.sharding import HashRing

logger = logging.getLogger(__name__)

# At most one "dropped: buffer full" warning per this many seconds (a flood
# must not flood the log too); the counter counts every one.
_WARN_EVERY_S = 1.0


class RedisPubSubChannelLayer(RedisLayerBase):
    """A channel layer on Redis pub/sub: lowest latency, no queue (see the module docstring).

    Args:
        hosts, prefix, expiry_s, group_expiry_s, capacity, channel_capacity,
        symmetric_encryption_keys, max_message_bytes: as
            ``RedisChannelLayer``; capacity and expiry apply to the local
            buffer of the receiving process.
        max_connections: accepted (the queue layer's settings carry it) and
            unused: one pipelined connection per host publishes.
        receive_timeout_s: how long the subscriber connection may stay silent
            before it is PINGed (and dropped, if silent as long again); a
            publish unanswered this long plus 5 s fails with
            ``ConnectionError``; also the longest a subscription waits for
            Redis to confirm it.
        cluster: ``hosts`` are seed nodes of one Redis Cluster (Redis 7+):
            sharded pub/sub, each topic on the primary that owns its slot
            (``redis_pubsub_cluster.py``); the hash ring is not used.
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
        # On a cluster, the seeds are one "host" (the slot map routes).
        seeds = self._hosts[:1] if self.cluster else self._hosts
        self._ring = HashRing([public_id(url) for url, _ in seeds])
        self._loops: dict[asyncio.AbstractEventLoop, PubSubLoop] = {}
        # Messages dropped because the local buffer of their channel was full.
        self.receive_buffer_overflows = 0
        # Publishes that no subscriber heard (lost: nobody was listening).
        self.unheard_sends = 0
        self._warned_at = 0.0

    # -- plumbing ---------------------------------------------------------------------------

    def _state(self) -> PubSubLoop:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            for other in [lp for lp in self._loops if lp.is_closed()]:
                del self._loops[other]
            state = self._loops[loop] = PubSubLoop(self)
        elif state.closed:
            state.reopen()
        return state

    def _topic(self, channel: str) -> bytes:
        return (self._key + "c:" + non_local_name(channel)).encode("ascii")

    def _group_topic(self, group: str) -> bytes:
        return (self._key + "g:" + group).encode("ascii")

    def _overflowed(self, channel: str) -> None:
        self.receive_buffer_overflows += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "local buffer of %r is full (capacity %d): message dropped"
                " (%d dropped so far in this process)",
                channel,
                self.get_capacity(channel),
                self.receive_buffer_overflows,
            )

    async def _publish(self, state: PubSubLoop, name: str, topic: bytes, entry: bytes) -> None:
        heard = await state.publishers[self._ring.index_for(name)].publish(topic, entry)
        if not heard:
            self.unheard_sends += 1

    # -- the API ----------------------------------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Publish ``message`` to whoever receives ``channel`` now: one round trip.

        Raises:
            InvalidChannelName, InvalidMessage: bad input.
            redis.exceptions.ConnectionError: Redis is unreachable (never retried).
        """
        require_valid_channel_name(channel)
        payload = self._serializer.dumps(require_valid_message(message))
        state = self._state()
        deadline_ms = int((time.time() + self.expiry_s) * 1000)
        local = non_local_name(channel)
        await self._publish(
            state, local, self._topic(channel), encode_entry(deadline_ms, channel, payload)
        )

    # The hot path of every consumer: compiled with mypyc, with what it
    # reads of PubSubLoop (redis_pubsub_loop.receive, where the docstring is).
    receive = receive_in_loop

    async def new_channel(self, prefix: str = "specific") -> str:
        """A fresh process-local channel, ``<prefix>.<loop id>!<random>``, listened to already.

        The first of a prefix subscribes that prefix's topic (one round trip);
        the next ones cost nothing.
        """
        state = self._state()
        name = require_valid_channel_name(f"{prefix}.{state.client_id}!{secrets.token_hex(8)}")
        subscriber, topic = state.route(non_local_name(name))
        if not subscriber.listening(topic):
            await subscriber.subscribe(topic, self.receive_timeout_s)
        return name

    async def group_add(self, group: str, channel: str) -> None:
        """Make ``channel`` a member of ``group`` in this loop (or renew it) and listen to it."""
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        members = state.groups.setdefault(group, {})
        members[channel] = time.monotonic() + self.group_expiry_s
        state.start_sweeper()
        await state.subscriber(group).subscribe(self._group_topic(group), self.receive_timeout_s)

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        state = self._state()
        members = state.groups.get(group)
        if members is None or members.pop(channel, None) is None or members:
            return
        del state.groups[group]
        await state.subscriber(group).unsubscribe([self._group_topic(group)])

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Publish ``message`` to the members of ``group`` in every process: one PUBLISH."""
        require_valid_group_name(group)
        payload = self._serializer.dumps(require_valid_message(message))
        state = self._state()
        deadline_ms = int((time.time() + self.expiry_s) * 1000)
        entry = encode_entry(deadline_ms, group, payload)
        await self._publish(state, group, self._group_topic(group), entry)

    async def flush(self) -> None:
        """Forget this loop's buffered messages and group members (Redis keeps nothing)."""
        state = self._state()
        state.store.clear()
        state.returned.clear()
        groups, state.groups = list(state.groups), {}
        for group in groups:
            await state.subscriber(group).unsubscribe([self._group_topic(group)])

    def stats(self) -> dict[str, int]:
        """Numbers for the server's metrics (``--metrics-port``), known in this process.

        As the queue layer's, where they apply: ``queued_messages`` waits in
        this process's local buffers; ``send_full`` and ``group_send_full``
        are always 0 (a sender never sees a full channel here); plus
        ``receive_buffer_overflows`` and ``unheard_sends`` (see ``__init__``).
        """
        return {
            "queued_messages": sum(
                state.store.queued() + sum(len(q) for q in state.returned.values())
                for state in list(self._loops.values())
            ),
            "send_full": 0,
            "group_send_full": 0,
            "receive_buffer_overflows": self.receive_buffer_overflows,
            "unheard_sends": self.unheard_sends,
        }

    async def close(self) -> None:
        """Close this loop's connections; the layer reconnects (and resubscribes) on next use."""
        state = self._loops.get(asyncio.get_running_loop())
        if state is not None and not state.closed:
            await state.close()
