"""The pub/sub layer on a Redis Cluster: sharded pub/sub (SSUBSCRIBE/SPUBLISH, Redis 7).

Plain PUBLISH on a cluster is broadcast to every node over the cluster bus;
sharded pub/sub routes a channel by its key slot (CRC16 of its name, or of
its ``{hash tag}``) to the primary that owns the slot, so the traffic is
spread over the primaries (cluster spec, "Sharded Pub/Sub"; ``SPUBLISH``).
A topic of the layer (``P:c:<channel>``, ``P:c:<prefix.id!>``,
``P:g:<group>``, see ``redis_pubsub.py``) is one shard channel; a process's
inbox topic and a group's topic are independent slots, so they land on
different primaries, which is the point.

Per event loop: one ``RedisCluster`` client, used only for its slot map
(``SlotMap``: read on first use, refreshed when something says it is stale);
a ``ShardPublisher`` (SPUBLISH, pipelined as ``Publisher``) and a
``ShardSubscriber`` (SSUBSCRIBE, as ``Subscriber``) per primary that owns a
slot of a topic used here, both made on first need. ``ClusterPublisher`` and
``ClusterSubscriber`` stand for them in ``PubSubLoop`` (one "host").

When a topic's slot moves (``ClusterSubscriber.moved``):

* resharded: the old owner drops its subscribers of the slot, each getting
  an ``sunsubscribe`` push for a topic it still wants; a publish to it
  answers MOVED (retried at the new owner: it ran nowhere), and so does an
  SSUBSCRIBE (its topics go straight to the node the MOVED names);
* failed over: the subscriber's connection is lost and cannot be made
  again; after each failed attempt the slot map is read again, every
  ``RELOOK_S`` while it still names the dead node, and the topics follow
  the promoted replica as soon as it does. A publish on the lost connection
  raises (as on one host: it may have run); the next reads the new map, and
  while the cluster says CLUSTERDOWN a publish is retried as the queue
  layer's calls are (``redis_cluster.retry_refused``).

What is published to a topic between the moment its slot leaves a node and
the moment the new owner confirms the topic is lost, as any pub/sub message
with nobody listening (docs/layers.md gives measured numbers).

Invariants: a wanted topic is in ``ClusterSubscriber.home``, naming the one
``ShardSubscriber`` that wants it; moving it unsubscribes it there before it
is subscribed at the new owner, so no message is delivered twice by this
loop.

Imports redis and ``sluiceway.layers.redis_*``; never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.crc import key_slot
from redis.exceptions import MovedError

from sluiceway.layers.redis_cluster import (
    REFUSED,
    cluster_client,
    refresh_slots,
    request_refresh,
    retry_refused,
)
from sluiceway.layers.redis_conn import RETRYABLE, LayerOptions
from sluiceway.layers.redis_pubsub_pub import (
    Publisher,
    ReplyError,
    encode_command,
    redis_error,
)
from sluiceway.layers.redis_pubsub_sub import Subscriber

logger = logging.getLogger("sluiceway.layers.redis_pubsub")

# How often the slot map is read again while a subscriber's node is
# unreachable and the map still names it (a failover in progress: with
# cluster-node-timeout 1 s it took 2 to 3 s here).
RELOOK_S = 0.25


class SlotMap:
    """Which primary owns a slot, by redis-py's ``RedisCluster`` client of this loop."""

    def __init__(self, layer: LayerOptions, hosts: Sequence[tuple[str, dict[str, Any]]]) -> None:
        self.client = cluster_client(layer, hosts)
        self.seed = urlsplit(hosts[0][0])
        self.options = hosts[0][1]
        self.urls: dict[str, str] = {}  # node name -> its URL

    async def owner(self, slot: int) -> str:
        """The URL of the primary that owns ``slot`` (the map is read first if need be).

        Raises:
            SlotNotCoveredError: the map names no owner (a failover).
            redis.exceptions.ConnectionError and such: no node answered.
        """
        await self.client.initialize()
        node = self.client.nodes_manager.get_node_from_slot(slot)
        url = self.urls.get(node.name)  # every publish asks: made once per node
        if url is None:
            url = self.urls[node.name] = self.url(f"{node.host}:{node.port}")
        return url

    def url(self, address: str) -> str:
        """The URL of the node at ``address`` (``host:port``).

        The seed's scheme and credentials, the node's address: redis-py
        opens the connection (TLS, AUTH) as for the seed.
        """
        auth = self.seed.netloc.rpartition("@")[0]
        return urlunsplit(
            (self.seed.scheme, f"{auth}@{address}" if auth else address, "/0", "", "")
        )

    async def refresh(self) -> None:
        """Read the map again (at most every 0.1 s: redis-py rate-limits it)."""
        await refresh_slots(self.client)

    def stale(self) -> None:
        """Something said the map is out of date: the next lookup reads it again."""
        request_refresh(self.client)

    async def close(self) -> None:
        await self.client.aclose()


class ShardPublisher(Publisher):
    """``Publisher`` with SPUBLISH: one per primary and event loop."""

    HEAD = b"*3\r\n$8\r\nSPUBLISH\r\n"


class ClusterPublisher:
    """Every SPUBLISH of one event loop, each to the primary that owns its topic's slot."""

    def __init__(self, layer: LayerOptions, slots: SlotMap) -> None:
        self.layer = layer
        self.slots = slots
        self.publishers: dict[str, ShardPublisher] = {}  # node URL -> its publisher

    def _at(self, url: str) -> ShardPublisher:
        publisher = self.publishers.get(url)
        if publisher is None:
            publisher = self.publishers[url] = ShardPublisher(self.layer, url, self.slots.options)
        return publisher

    async def publish(self, topic: bytes, entry: bytes) -> int:
        """SPUBLISH ``entry`` on ``topic``: how many subscribers heard it.

        Raises:
            redis.exceptions.ConnectionError: as ``Publisher.publish`` (never
                retried: it may have run).
            REFUSED errors: the cluster refused it for ``REFUSED_WAIT_S``.
        """
        slot = key_slot(topic)
        slots = self.slots
        try:
            return await self._at(await slots.owner(slot)).publish(topic, entry)
        except REFUSED:
            pass  # MOVED, CLUSTERDOWN...: it ran nowhere, so again below
        except RETRYABLE:
            slots.stale()  # a failover, maybe: the next publish looks again
            raise

        async def again() -> int:
            return await self._at(await slots.owner(slot)).publish(topic, entry)

        return await retry_refused(slots.client, again)

    async def close(self) -> None:
        for publisher in self.publishers.values():
            await publisher.close()
        await self.slots.close()


class ShardSubscriber(Subscriber):
    """``Subscriber`` with SSUBSCRIBE, on one primary: it reports topics whose slot left."""

    SUBSCRIBE = b"SSUBSCRIBE"
    UNSUBSCRIBE = b"SUNSUBSCRIBE"
    MESSAGE = b"smessage"
    CONFIRMED = b"ssubscribe"

    router: ClusterSubscriber  # set by the router that makes it

    def _command(self, verb: bytes, topics: list[bytes]) -> bytes:
        # The shard channels of one SSUBSCRIBE must share a slot (CROSSSLOT).
        by_slot: dict[int, list[bytes]] = {}
        for topic in topics:
            by_slot.setdefault(key_slot(topic), []).append(topic)
        return b"".join(encode_command(verb, *part) for part in by_slot.values())

    def _other(self, reply: list[Any]) -> None:
        # An sunsubscribe for a topic still wanted was not asked for: the
        # slot left this node (a reshard), which dropped its subscribers.
        if reply[0] == b"sunsubscribe" and reply[1] in self.wanted:
            self.router.moved([reply[1]], None)

    def _refused(self, reply: ReplyError) -> None:
        error = redis_error(reply)
        if isinstance(error, MovedError):
            # An SSUBSCRIBE for a slot this node no longer owns: its topics
            # go where the answer says.
            gone = [t for t in self.wanted if key_slot(t) == error.slot_id]
            self.router.moved(gone, f"{error.host}:{error.port}")
            return
        # CLUSTERDOWN and such: which topic it was is not said. Reconnecting
        # (with backoff) subscribes every wanted topic again.
        logger.warning("redis pub/sub (cluster): %s refused: %s; reconnecting", self.url, reply)
        if self.transport is not None:
            self.transport.abort()

    def _failed(self) -> None:
        self.router.moved(list(self.wanted), None)

    def resubscribe(self, topic: bytes) -> None:
        """SSUBSCRIBE ``topic`` again: Redis dropped it, and the map still names this node."""
        if self.live and topic in self.wanted:
            self.confirming.setdefault(topic, [])
            self._write(encode_command(self.SUBSCRIBE, topic))


class ClusterSubscriber:
    """The topics one event loop listens to on a cluster, each on its slot's primary.

    Has ``Subscriber``'s interface (``listening``, ``subscribe``,
    ``unsubscribe``, ``close``, ``restart``) for ``PubSubLoop``.
    """

    def __init__(
        self, layer: LayerOptions, slots: SlotMap, on_message: Callable[[bytes, bytes], None]
    ) -> None:
        self.layer = layer
        self.slots = slots
        self.on_message = on_message
        self.nodes: dict[str, ShardSubscriber] = {}  # node URL -> its subscriber
        self.home: dict[bytes, ShardSubscriber] = {}  # wanted topic -> its subscriber
        # Topics to move, with where to (an address a MOVED named) or None
        # (read the map).
        self.pending: dict[bytes, str | None] = {}
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    def _at(self, url: str) -> ShardSubscriber:
        subscriber = self.nodes.get(url)
        if subscriber is None:
            subscriber = ShardSubscriber(self.layer, url, self.slots.options, self.on_message)
            subscriber.router = self
            self.nodes[url] = subscriber
        return subscriber

    def listening(self, topic: bytes) -> bool:
        subscriber = self.home.get(topic)
        return subscriber is not None and subscriber.listening(topic)

    async def subscribe(self, topic: bytes, wait_s: float) -> None:
        """As ``Subscriber.subscribe``, at the primary that owns ``topic``'s slot.

        Raises:
            The cluster's errors, if no node could say which primary that is
            (``retry_refused``).
        """
        subscriber = self.home.get(topic)
        if subscriber is None:
            slots = self.slots

            async def owner() -> str:
                return await slots.owner(key_slot(topic))

            url = await retry_refused(slots.client, owner)
            subscriber = self.home.setdefault(topic, self._at(url))
        await subscriber.subscribe(topic, wait_s)

    async def unsubscribe(self, topics: list[bytes]) -> None:
        by_node: dict[ShardSubscriber, list[bytes]] = {}
        for topic in topics:
            subscriber = self.home.pop(topic, None)
            if subscriber is not None:
                by_node.setdefault(subscriber, []).append(topic)
        for subscriber, part in by_node.items():
            await subscriber.unsubscribe(part)

    def moved(self, topics: list[bytes], where: str | None) -> None:
        """``topics`` are no longer served where they are: move them (in a task)."""
        if not topics or self.stopping:
            return
        for topic in topics:
            self.pending[topic] = where
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._rehome())

    async def _rehome(self) -> None:
        while self.pending and not self.stopping:
            pending, self.pending = self.pending, {}
            if None in pending.values():
                await self.slots.refresh()
            unreachable: list[bytes] = []
            for topic, where in pending.items():
                old = self.home.get(topic)
                if old is None:
                    continue  # no longer wanted
                try:
                    url = (
                        self.slots.url(where) if where else await self.slots.owner(key_slot(topic))
                    )
                except Exception as exc:  # the map names no owner yet: look again
                    logger.debug("redis pub/sub (cluster): no owner for %r (%s)", topic, exc)
                    unreachable.append(topic)
                    continue
                new = self._at(url)
                if new is old:
                    if old.live:
                        old.resubscribe(topic)  # a MOVED answer brings it back here
                    else:
                        unreachable.append(topic)  # its node is down: look again soon
                    continue
                logger.info("redis pub/sub (cluster): %r moves from %s to %s", topic, old.url, url)
                self.home[topic] = new
                await old.unsubscribe([topic])
                # Not waiting for Redis to confirm: messages flow once it has.
                await new.subscribe(topic, 0)
            if unreachable and not self.stopping:
                await asyncio.sleep(RELOOK_S)  # polling the map: no event says it changed
                for topic in unreachable:
                    self.pending.setdefault(topic, None)

    async def close(self) -> None:
        self.stopping = True
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for subscriber in self.nodes.values():
            await subscriber.close()

    def restart(self) -> None:
        self.stopping = False
        for subscriber in self.nodes.values():
            subscriber.restart()


def cluster_connections(
    layer: LayerOptions,
    hosts: Sequence[tuple[str, dict[str, Any]]],
    on_message: Callable[[bytes, bytes], None],
) -> tuple[ClusterPublisher, ClusterSubscriber]:
    """One event loop's publisher and subscriber on the cluster seeded by ``hosts``."""
    slots = SlotMap(layer, hosts)
    return ClusterPublisher(layer, slots), ClusterSubscriber(layer, slots, on_message)
