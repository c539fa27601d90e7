"""The Redis layer on a Redis Cluster: where each key lives, and one call per node.

Redis Cluster places a key by the CRC16 slot of its hash tag (the part of
the name in ``{}``) and refuses a command or script whose keys span slots
(CROSSSLOT). Each operation of the layer touches several keys (a channel's
list and its capacity counts; a group's members and their lists), so every
key carries the tag of one of ``BUCKETS`` buckets, right after the prefix::

    P:{tag}:c:<channel>   P:{tag}:n:<prefix.id!>   P:{tag}:w:...
    P:{tag}:g:<group>     P:{tag}:gc:<group>       P:{tag}:gs:<walk>

that is ``redis.py``'s layout with the key head ``P:{tag}:`` for ``P:``. A
channel's bucket is ``bucket_for`` its non-local name, so a list, an inbox,
its counts and its wake key share a slot; a group's members are split by
bucket: ``P:{tag}:g:<group>`` holds the members whose lists carry ``tag``.
So every script's keys are in one slot, except the group send below.

The tags are picked so that bucket ``b``'s slot lies in
``[b * 16384 / BUCKETS, (b + 1) * 16384 / BUCKETS)``: the slot ranges a
cluster is made with split the buckets evenly, and a reshard moves the
buckets of the slots it moves. 128 buckets spread the load within one
bucket (1/128) of even for up to a dozen or so primaries; the price is
that each group send looks at the group's 128 membership keys (about
0.5 µs each when absent). The number is part of the key layout: every
process of a deployment must use the same.

``group_send`` costs one round trip per primary: one call of
``LUA_GROUP_SEND_NODE`` with Redis 7's ``allow-cross-slot-keys`` flag, which
serves every bucket the node serves (by redis-py's slot map); a bucket whose
part of the group exceeds the call's budget is walked on its own
(``LUA_GROUP_SEND``). Declared keys must share a slot even with that flag,
so the node script takes its keys as arguments, and before it writes it
reads each bucket's probe key ``P:{tag}:probe`` (never created): Redis
refuses the read when the slot is not on the node or is migrating, and the
script then returns having done nothing. Its buckets are then sent one by one
through the client with the probe key declared, so that Redis refuses each
call (TRYAGAIN, ASK) before it runs until the migration ends, and
``retry_refused`` retries it. So no group send serves part of a bucket and
fails on the rest, and none is served twice.

Everything else goes through ``redis.asyncio.cluster.RedisCluster``, which
routes by slot, follows MOVED and ASK, waits out TRYAGAIN and refreshes the
slot map after errors. It is built with no retries: a command that failed on
a lost connection is not sent again (it may have run: a send delivered
twice). Its own patience is short: 16 redirections, the last 8 of them 50 ms
apart, then "TTL exhausted"; a multi-key call (a send to an inbox, with its
counts) meets TRYAGAIN for as long as its slot's keys are half moved, which
is longer on a busy machine. So every call of the layer that names keys
(send, the group send's buckets, group_add/discard, the capacity release,
flush, finding a bucket's node for a blocking connection) goes through
``retry_refused``: again, with backoff, while the cluster refuses it
(``REFUSED``, which by construction ran nowhere), for up to
``REFUSED_WAIT_S`` in all; a lost connection is raised at once, as before.
Blocking pops use connections of their own to the node that serves
their bucket (one per inbox, one per bucket of normal channels received in
this loop); after any error they ask for a refresh of the slot map and
reconnect to the node it names (``Shard.relocate``), and never give up.

Imports redis and ``sluiceway.layers.redis_scripts``/``sharding``; never
``redis.py`` at run time, never the server.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterError,
    NoScriptError,
    SlotNotCoveredError,
    TryAgainError,
)

from sluiceway.layers.redis_conn import LayerOptions
from sluiceway.layers.redis_scripts import (
    LUA_GROUP_SEND,
    LUA_GROUP_SEND_NODE,
    LUA_RELEASE,
    LUA_SEND,
)

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

    from sluiceway.layers.redis import RedisChannelLayer

logger = logging.getLogger("sluiceway.layers.redis")

BUCKETS = 128
# How long a call waits, in all, for its slot to finish migrating or failing
# over: a slot's keys move a few per MIGRATE (redis-cli --cluster reshard: 10),
# and a failover took 2 to 3 s with cluster-node-timeout 1 s (docs/layers.md);
# beyond this the caller hears of it.
REFUSED_WAIT_S = 10.0
# The longest pause between two tries: a migration ends unannounced, and a
# send should not wait seconds longer than it.
_REFUSED_MAX_DELAY_S = 0.5
_SLOTS = 16384

# Errors that say a call ran nowhere, so that running it again cannot apply
# it twice (a send delivered twice). Each is Redis's or redis-py's refusal
# before the call ran:
# - MOVED (MovedError, a subclass of AskError): the node does not serve the
#   slot; it answers before looking at the command (cluster spec,
#   "Redirection and resharding").
# - ASK: the slot is migrating and a key is already on the target; checked
#   before running, against a script's declared keys too (our scripts touch
#   only declared keys). A transaction refused so is aborted whole (EXECABORT).
# - TRYAGAIN: a multi-key call whose keys are half moved; refused likewise.
# - CLUSTERDOWN (ClusterDownError, and MasterDownError under it): the node
#   refuses every keyed command while its view of the cluster is down.
# - "TTL exhausted" (ClusterError): redis-py followed 16 MOVED/ASK/TRYAGAIN
#   answers, each a refusal above; any other error ends its loop at once
#   with that error instead, a lost connection included.
# - SlotNotCoveredError: redis-py's slot map names no node: nothing was sent.
# Not here: ConnectionError and TimeoutError (a call lost with its connection
# may have run), RedisClusterUnreachableError (a refresh reached no node: the
# cluster's own "connection refused", raised at once as a ConnectionError is), and other
# RedisClusterExceptions (CROSSSLOT and such: a bug, that waiting cannot fix).
REFUSED = (AskError, TryAgainError, ClusterError, SlotNotCoveredError)

_T = TypeVar("_T")


async def retry_refused(client: Any, call: Callable[[], Awaitable[_T]]) -> _T:
    """``await call()``, again while the cluster refuses it (``REFUSED``).

    Args:
        client: the ``RedisCluster`` that ``call`` uses, whose slot map is
            refreshed between tries (at most every 0.1 s): a MOVED the client
            did not follow (in a transaction) is answered by the new map.
        call: one call that names keys of one slot (or a bucket's probe key).

    Raises:
        The last refusal, once ``REFUSED_WAIT_S`` have passed since the first
        try; any other error at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REFUSED_WAIT_S
    delay = 0.0
    while True:
        try:
            return await call()
        except REFUSED as exc:
            left = deadline - loop.time()
            if left <= 0:
                raise
            logger.debug("redis cluster: call refused (%s); retrying", exc)
            request_refresh(client)
            delay = min(max(delay * 2, 0.01), _REFUSED_MAX_DELAY_S, left)
            await asyncio.sleep(delay)


@functools.cache
def bucket_tags() -> tuple[str, ...]:
    """The hash tag of each bucket: bucket ``b``'s slot is in its 1/BUCKETS of the slots."""
    width = _SLOTS // BUCKETS
    tags = []
    for bucket in range(BUCKETS):
        n = 0
        # About BUCKETS tries each (CRC16 spreads evenly): a few ms, once.
        while key_slot(f"{bucket}.{n}".encode()) // width != bucket:
            n += 1
        tags.append(f"{bucket}.{n}")
    return tuple(tags)


def heads(key: str) -> list[str]:
    """The key head of each bucket: the prefix ``P:`` with the bucket's tag."""
    return [f"{key}{{{tag}}}:" for tag in bucket_tags()]


def cluster_client(layer: LayerOptions, hosts: Sequence[tuple[str, dict[str, Any]]]) -> Any:
    """The client of every non-blocking command: seeds ``hosts``, one pool per node."""
    url, options = hosts[0]
    parts = urlsplit(url)
    seeds = [
        ClusterNode(urlsplit(u).hostname or "localhost", urlsplit(u).port or 6379) for u, _ in hosts
    ]
    kwargs: dict[str, Any] = {
        "startup_nodes": seeds,
        # No retries: a command lost with its connection may have run (see
        # the module docstring); redirections are followed regardless.
        "retry": Retry(NoBackoff(), 0),
        "socket_connect_timeout": 5.0,
        "socket_timeout": layer.receive_timeout_s + 5.0,
        # redis-py's cluster pools raise when full instead of waiting: sized
        # so that they do not, the bound being the callers' concurrency.
        "max_connections": max(100, layer.max_connections),
        "ssl": parts.scheme == "rediss",
        **options,
    }
    if "topology_refresh_min_interval" in inspect.signature(RedisCluster).parameters:
        # A failover or reshard is seen within 0.1 s of the first error (redis-py 8.2+).
        kwargs["topology_refresh_min_interval"] = 0.1
    if parts.username:
        kwargs.setdefault("username", parts.username)
    if parts.password:
        kwargs.setdefault("password", parts.password)
    return RedisCluster(**kwargs)


class ClusterShard:
    """One bucket of a cluster, as one event loop sees it: like ``redis_loop.Shard``.

    ``client`` is the loop's one ``RedisCluster``, shared by every bucket;
    ``url`` is the node that serves the bucket now, for blocking connections.
    """

    __slots__ = ("_group_send", "_release", "_seed", "_send", "client", "head", "options", "slot")

    def __init__(
        self,
        client: Any,
        scripts: tuple[AsyncScript, AsyncScript, AsyncScript],
        head: str,
        seed: tuple[str, dict[str, Any]],
    ) -> None:
        self.client = client
        self._send, self._group_send, self._release = scripts
        self.head = head
        self.slot = key_slot(head.encode())
        self._seed = seed[0]
        self.options = seed[1]

    # The scripts, as ``redis_loop.Shard``'s, each retried while refused.

    async def send(self, keys: list[str], args: list[Any]) -> Any:
        """One LUA_SEND call; see ``retry_refused``."""
        return await retry_refused(self.client, lambda: self._send(keys=keys, args=args))

    async def release(self, keys: list[str], args: list[Any]) -> Any:
        """One LUA_RELEASE call; see ``retry_refused``."""
        return await retry_refused(self.client, lambda: self._release(keys=keys, args=args))

    async def group_send(self, keys: list[str], args: list[Any]) -> Any:
        """One LUA_GROUP_SEND call on this bucket; see ``retry_refused``.

        The bucket's probe key, declared, makes Redis refuse the call while
        the slot migrates (before it runs: nothing served twice), even when
        none of the other keys exists.
        """
        keys = [*keys, self.head + "probe"]
        return await retry_refused(self.client, lambda: self._group_send(keys=keys, args=args))

    @property
    def url(self) -> str:
        node = self.client.nodes_manager.get_node_from_slot(self.slot)
        parts = urlsplit(self._seed)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@{node.host}:{node.port}" if auth else f"{node.host}:{node.port}"
        return urlunsplit((parts.scheme, netloc, "/0", "", ""))

    async def locate(self) -> str:
        """The URL of the node serving this bucket (the slot map is read first if need be).

        During a failover the map may name no node for the slot for a while
        (SlotNotCoveredError): waited out as any refusal.
        """

        async def find() -> str:
            await self.client.initialize()
            return self.url

        return await retry_refused(self.client, find)

    async def relocate(self) -> None:
        """After an error on a blocking connection: refresh the slot map (rate-limited)."""
        # redis-py refreshes after its own commands' errors; a blocking pop
        # is not one of them, so it asks here.
        await refresh_slots(self.client)


def request_refresh(client: Any) -> None:
    """Ask ``client`` to read the slot map again before its next command.

    redis-py 8.2+ merges such requests and rate-limits them
    (``topology_refresh_min_interval``); before it, the client reads the map
    again in ``initialize()``, which each command runs when ``_initialize``
    is set (Python 3.10 gets redis-py 8.1).
    """
    request = getattr(client, "_request_refresh", None)
    if request is not None:
        request()
    else:
        client._initialize = True


async def refresh_slots(client: Any) -> None:
    """Read ``client``'s slot map again: at most every topology_refresh_min_interval."""
    request_refresh(client)
    try:
        await client.initialize()
    except Exception as exc:  # every node unreachable: the caller backs off
        logger.debug("redis cluster: slot map refresh failed (%s)", exc)


def cluster_shards(layer: RedisChannelLayer) -> list[ClusterShard]:
    """One shard per bucket, sharing one client and its registered scripts."""
    client = cluster_client(layer, layer._hosts)
    scripts = (
        client.register_script(LUA_SEND),
        client.register_script(LUA_GROUP_SEND),
        client.register_script(LUA_RELEASE),
    )
    return [ClusterShard(client, scripts, head, layer._hosts[0]) for head in layer._heads]


async def _eval_on(client: Any, node: Any, args: list[Any]) -> Any:
    """Run LUA_GROUP_SEND_NODE on ``node``, loading it there first if need be."""
    sha = _node_script_sha()
    try:
        return await client.execute_command("EVALSHA", sha, 0, *args, target_nodes=node)
    except NoScriptError:
        await client.execute_command("SCRIPT LOAD", LUA_GROUP_SEND_NODE, target_nodes=node)
        return await client.execute_command("EVALSHA", sha, 0, *args, target_nodes=node)


@functools.cache
def _node_script_sha() -> str:
    import hashlib

    return hashlib.sha1(LUA_GROUP_SEND_NODE.encode()).hexdigest()


async def cluster_group_send(
    shards: Sequence[ClusterShard],
    group: str,
    args: list[Any],
    budget: int,
    walk: Callable[[ClusterShard], Awaitable[int]],
) -> int:
    """Serve ``group`` on every primary, one call each; the number of members skipped as full.

    ``args`` are LUA_SERVE's; ``walk(shard)`` serves one bucket on its own,
    through the client (``RedisChannelLayer._group_send_host``).
    """
    client = shards[0].client
    await client.initialize()
    by_node: dict[str, tuple[Any, list[ClusterShard]]] = {}
    for shard in shards:
        node = client.nodes_manager.get_node_from_slot(shard.slot)
        by_node.setdefault(node.name, (node, []))[1].append(shard)
    counts = await asyncio.gather(
        *(
            _node_group_send(client, node, part, group, args, budget, walk)
            for node, part in by_node.values()
        )
    )
    return sum(counts)


async def _node_group_send(
    client: Any,
    node: Any,
    shards: list[ClusterShard],
    group: str,
    args: list[Any],
    budget: int,
    walk: Callable[[ClusterShard], Awaitable[int]],
) -> int:
    keys: list[str] = []
    for shard in shards:
        keys += [shard.head + "g:" + group, shard.head + "gc:" + group, shard.head]
    try:
        reply = await _eval_on(client, node, [*args, budget, *keys])
    except REFUSED as exc:
        reply = [-1]
        logger.info("redis cluster: group send to node %s refused (%s)", node.name, exc)
    if int(reply[0]) < 0:
        # It ran nowhere: the slot map was stale (the slots moved since it
        # was read). Each bucket on its own, routed and redirected by the client.
        request_refresh(client)
        return sum(await asyncio.gather(*(walk(shard) for shard in shards)))
    n = int(reply[0])
    full = len(reply) - 1 - n
    for index in reply[1 : 1 + n]:
        full += await walk(shards[int(index) - 1])
    return full
