"""The pub/sub layer's state in one event loop: connections, local buffer, delivery.

``RedisPubSubChannelLayer`` (``redis_pubsub.py``) keeps one ``PubSubLoop``
per event loop it is used in. It holds the loop's publishers and
subscribers (one of each per host; on a cluster, one of each standing for
every primary: ``redis_pubsub_cluster.py``), the local buffer (``ChannelStore``),
the group members and normal channels received here, and turns each
published entry into deliveries (``on_message``, called from the
subscriber's socket callback).

Delivery: a message for a channel whose ``receive()`` already waits (so
nothing is buffered for it) is handed to that receiver's waiter at once
(``wakeups.Waiter``: receivers woken in one loop callback per burst);
otherwise it goes into the store, where capacity and expiry apply. A
receiver cancelled after the hand-over and before it resumed gives the
message back (``withdraw``): to the next waiting receiver, else kept in
``returned``, taken before anything in the store (it is older).

Invariants: a receiver's ``Waiter`` is in ``waiting`` (the first of a
channel) or ``behind`` (the others, in line) only while the store and
``returned`` hold nothing for its channel; a channel is in ``behind`` only
while it is in ``waiting``; each message goes to
exactly one receiver of this loop, or is buffered, or is dropped and counted
(full, expired).

Compiled with mypyc (setup.py's HOT_PATH: ``on_message`` runs once per
member of a group message, ``receive`` once per message received), so every
``await`` here of something mypyc did not compile goes through
``forward_throw`` (see that module: a cancelled receiver must get its
CancelledError on Python 3.12+).

Imports ``sluiceway.layers.*`` and ``sluiceway.forward_throw``; never the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from sluiceway.errors import InvalidChannelName, InvalidMessage
from sluiceway.forward_throw import forward_throw
from sluiceway.layers.base import non_local_name, require_valid_channel_name
from sluiceway.layers.memory import ChannelStore
from sluiceway.layers.redis_pubsub_cluster import (
    ClusterPublisher,
    ClusterSubscriber,
    cluster_connections,
)
from sluiceway.layers.redis_pubsub_pub import Publisher
from sluiceway.layers.redis_pubsub_sub import Subscriber
from sluiceway.layers.redis_scripts import parse_entry
from sluiceway.layers.wakeups import Waiter, Waker

if TYPE_CHECKING:
    from sluiceway.layers.redis_pubsub import RedisPubSubChannelLayer

logger = logging.getLogger("sluiceway.layers.redis_pubsub")

# A message on its way to a receiver: (deadline on time.monotonic(), message).
Delivery = tuple[float, dict[str, Any]]

# The most process-local channel names remember_local keeps: more than the
# consumers one process serves at once (about 1 MB of table; the names of
# consumers gone since the last clear stay alive until the next).
_LOCAL_ROUTES_MAX = 16384

# A group with no members in this loop; never written to.
_NO_MEMBERS: dict[str, float] = {}
# The membership deadline of a normal or process-local channel's one target.
_FOREVER = float("inf")


class PubSubLoop:
    """What the layer binds to one event loop: connections, buffer, members, topics."""

    def __init__(self, layer: RedisPubSubChannelLayer) -> None:
        self.layer = layer
        # Wakes the receivers whose messages arrived, one loop callback per
        # burst of messages (wakeups.py).
        self.waker = Waker(asyncio.get_running_loop())
        self.client_id = secrets.token_hex(6)
        self.local_suffix = f".{self.client_id}!"
        self.publishers: list[Publisher | ClusterPublisher]
        self.subscribers: list[Subscriber | ClusterSubscriber]
        if layer.cluster:
            # The cluster is one "host": it routes each topic to its slot's primary.
            publisher, subscriber = cluster_connections(layer, layer._hosts, self.on_message)
            self.publishers, self.subscribers = [publisher], [subscriber]
        else:
            self.publishers = [Publisher(layer, url, opts) for url, opts in layer._hosts]
            self.subscribers = [
                Subscriber(layer, url, opts, self.on_message) for url, opts in layer._hosts
            ]
        self.store = ChannelStore(layer.get_capacity)
        # Receivers waiting with nothing buffered: a message for one of them
        # is handed to its waiter (``receive``); the store holds the rest.
        # The first waiter of a channel is here, any others in line behind
        # it in ``behind``: most channels have one receiver, and a list per
        # receive() would be one more object made (and collected) per message.
        self.waiting: dict[str, Waiter] = {}
        self.behind: dict[str, deque[Waiter]] = {}
        # Messages handed to a receiver that was cancelled before it took
        # them: older than anything in the store, so taken first.
        self.returned: dict[str, deque[Delivery]] = {}
        self.groups: dict[str, dict[str, float]] = {}  # group -> {member: monotonic deadline}
        self.receivers: dict[str, int] = {}  # normal channel -> receive() calls waiting
        self.last_used: dict[str, float] = {}  # normal channel -> when a receive() last ended
        # Non-local name -> (its subscriber, its topic), made once: per
        # process-local prefix of this loop, and per normal channel until the
        # sweeper unsubscribes it (so bounded by what is received here).
        self.routes: dict[str, tuple[Subscriber | ClusterSubscriber, bytes]] = {}
        # Process-local channel -> its prefix's route, for receive(): a
        # cache of names already checked, cleared when it reaches
        # _LOCAL_ROUTES_MAX (channels come and go with their consumers, and
        # nothing says when one is gone).
        self.local_routes: dict[str, tuple[Subscriber | ClusterSubscriber, bytes]] = {}
        self.sweeper: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.closed = False

    def on_message(self, topic: bytes, data: bytes) -> None:
        """One published entry, from a subscriber's socket callback: to its receivers here."""
        layer = self.layer
        try:
            deadline, channel, payload = parse_entry(data)
            name = topic.decode("ascii")[len(layer._key) :]
        except (ValueError, UnicodeDecodeError) as exc:
            logger.error("dropped a malformed pub/sub entry on %r: %s", topic, exc)
            return
        # Targets and their membership deadlines: walked once, below, with
        # the expiry check inline (no filtered list built per message).
        targets: dict[str, float]
        if name.startswith("g:"):
            targets = self.groups.get(name[2:], _NO_MEMBERS)
        elif name.startswith("c:") and non_local_name(channel) == name[2:]:
            targets = {channel: _FOREVER}
        else:
            return  # a topic we no longer want (its unsubscribe is in flight)
        if not targets:
            return
        now = time.monotonic()
        remaining = deadline - time.time()
        if remaining <= 0:
            layer.expired_on_receive += sum(1 for until in targets.values() if until > now)
            return
        try:
            message = layer._serializer.loads(payload)
        except InvalidMessage as exc:
            logger.error("dropped an unreadable layer message on %r: %s", topic, exc)
            return
        mono_deadline = now + remaining
        # Each member gets its own shallow copy: a receiver must not see
        # another's edits.
        shared = len(targets) > 1
        waiting = self.waiting
        behind = self.behind
        put = self.store.put
        # Nothing below can change ``targets``: set_result only schedules
        # the waiter's wake-up, and the store and the overflow log do not
        # touch the groups.
        for target, until in targets.items():
            if until <= now:
                continue  # membership expired; the sweeper removes it
            copy = dict(message) if shared else message
            first = waiting.pop(target, None)
            if first is not None:
                if behind and target in behind:
                    self._next_in_line(target)
                # A waiter here is pending: one that gave up withdrew itself.
                if not first.done():
                    first.set_result((mono_deadline, copy))
                    continue
                if self._hand_over(target, (mono_deadline, copy)):
                    continue
            if not put(target, copy, mono_deadline):
                layer._overflowed(target)

    def line_up(self, channel: str, waiter: Waiter) -> None:
        """``waiter``'s receiver waits on ``channel`` behind the one in ``waiting``."""
        line = self.behind.get(channel)
        if line is None:
            self.behind[channel] = deque((waiter,))
        else:
            line.append(waiter)

    def _next_in_line(self, channel: str) -> None:
        """The first waiter of ``channel`` left ``waiting``: the next in line takes its place."""
        line = self.behind[channel]
        self.waiting[channel] = line.popleft()
        if not line:
            del self.behind[channel]

    def _hand_over(self, channel: str, delivery: Delivery) -> bool:
        """Give ``delivery`` to the first receiver still waiting on ``channel``, if any."""
        while True:
            waiter = self.waiting.pop(channel, None)
            if waiter is None:
                return False
            if channel in self.behind:
                self._next_in_line(channel)
            if not waiter.done():
                waiter.set_result(delivery)
                return True

    def withdraw(self, channel: str, waiter: Waiter) -> None:
        """A receiver gave up: its message, if it had been handed one, goes to the next."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            if not self._hand_over(channel, waiter.result()):
                self.returned.setdefault(channel, deque()).append(waiter.result())
            return
        waiter.cancel()
        if self.waiting.get(channel) is waiter:
            del self.waiting[channel]
            if channel in self.behind:
                self._next_in_line(channel)
            return
        line = self.behind.get(channel)
        if line is not None and waiter in line:
            line.remove(waiter)
            if not line:
                del self.behind[channel]

    async def take_buffered(self, channel: str) -> dict[str, Any]:
        """The next message of ``channel`` already here: given back ones first, then the store."""
        returned = self.returned.get(channel)
        if returned is not None:
            now = time.monotonic()
            while returned:
                deadline, message = returned.popleft()
                if deadline > now:
                    if not returned:
                        del self.returned[channel]
                    return message
                self.layer.expired_on_receive += 1
            del self.returned[channel]
        # Waits only if everything buffered had expired; a message arriving
        # then goes to the store (no waiter here), which wakes us.
        return await forward_throw(self.store.get(channel))

    def subscriber(self, name: str) -> Subscriber | ClusterSubscriber:
        return self.subscribers[self.layer._ring.index_for(name)]

    def route(self, name: str) -> tuple[Subscriber | ClusterSubscriber, bytes]:
        """The subscriber and topic of ``name`` (a non-local name)."""
        route = self.routes.get(name)
        if route is None:
            route = self.routes[name] = (self.subscriber(name), self.layer._topic(name))
        return route

    def remember_local(
        self, channel: str, route: tuple[Subscriber | ClusterSubscriber, bytes]
    ) -> tuple[Subscriber | ClusterSubscriber, bytes]:
        """Cache ``route`` for ``channel`` (a checked process-local name of this loop)."""
        if len(self.local_routes) >= _LOCAL_ROUTES_MAX:
            self.local_routes.clear()
        self.local_routes[channel] = route
        return route

    def start_sweeper(self) -> None:
        if self.sweeper is None or self.sweeper.done():
            self.sweeper = asyncio.get_running_loop().create_task(self.sweep())

    async def sweep(self) -> None:
        """Unsubscribe what nobody here listens to any more: idle channels, empty groups."""
        while not self.stopping.is_set():
            expiry = self.layer.expiry_s
            try:
                await forward_throw(
                    asyncio.wait_for(self.stopping.wait(), min(max(expiry / 2, 0.1), 30.0))
                )
                return
            except asyncio.TimeoutError:
                pass
            now = time.monotonic()
            idle = [
                c
                for c, used in self.last_used.items()
                if not self.receivers.get(c) and now - used >= expiry
            ]
            for channel in idle:
                del self.last_used[channel]
                self.routes.pop(channel, None)
                await forward_throw(
                    self.subscriber(channel).unsubscribe([self.layer._topic(channel)])
                )
            for group, members in list(self.groups.items()):
                for member in [m for m, until in members.items() if until <= now]:
                    del members[member]
                if not members:
                    del self.groups[group]
                    await forward_throw(
                        self.subscriber(group).unsubscribe([self.layer._group_topic(group)])
                    )

    async def close(self) -> None:
        self.stopping.set()
        if self.sweeper is not None:
            self.sweeper.cancel()
        for subscriber in self.subscribers:
            await forward_throw(subscriber.close())
        for publisher in self.publishers:
            await forward_throw(publisher.close())
        self.closed = True

    def reopen(self) -> None:
        """Connect again after ``close()``; every topic still wanted is subscribed again."""
        self.stopping = asyncio.Event()
        self.closed = False
        for subscriber in self.subscribers:
            subscriber.restart()
        if self.last_used or self.groups:
            self.start_sweeper()


async def receive(layer: RedisPubSubChannelLayer, channel: Any) -> dict[str, Any]:
    """``RedisPubSubChannelLayer.receive``: the next message published on ``channel``.

    Listens to ``channel`` from now on. Survives Redis restarts (the
    subscriber reconnects); what was published while it was away is lost.

    Raises:
        InvalidChannelName: a bad name, or a process-local channel that
            this layer did not make in this event loop.
    """
    # The hot path of every consumer: one cached route lookup, an await
    # on Redis only while its topic is unconfirmed, and a waiter that
    # on_message resolves with the message itself. A process-local
    # channel received here before is in ``local_routes``: its name was
    # checked and routed then, so one lookup does both (a group member
    # calls this once per message of the group).
    state = layer._loops.get(asyncio.get_running_loop())
    if state is None or state.closed:
        require_valid_channel_name(channel)  # before connecting for it
        state = layer._state()
    try:
        route = state.local_routes.get(channel)
    except TypeError:  # unhashable: not a name; refused below
        route = None
    normal = False
    if route is None:
        require_valid_channel_name(channel)
        bang = channel.find("!")
        normal = bang < 0
        if normal:
            route = state.route(channel)
            state.receivers[channel] = state.receivers.get(channel, 0) + 1
            if state.sweeper is None or state.sweeper.done():
                state.start_sweeper()
        else:
            local = channel[: bang + 1]
            found = state.routes.get(local)
            if found is None:
                if not local.endswith(state.local_suffix):
                    raise InvalidChannelName(
                        f"channel {channel!r} is process-local to another process, layer"
                        f" or event loop: only the layer that made it with new_channel()"
                        f" may receive it (here, in this event loop: '*{state.local_suffix}*')"
                    )
                found = state.route(local)
            route = state.remember_local(channel, found)
    try:
        subscriber, topic = route
        if not subscriber.listening(topic):
            await forward_throw(subscriber.subscribe(topic, layer.receive_timeout_s))
        # Nothing buffered anywhere in this loop (the usual case for
        # receivers that keep up) is two truth tests.
        if (state.returned or state.store.queues) and (
            channel in state.returned or state.store.depth(channel)
        ):
            return await state.take_buffered(channel)
        # Wait in line for the next message (on_message hands it over):
        # written here rather than in a PubSubLoop method, one call less
        # per message received.
        waiter = Waiter(state.waker)
        if state.waiting.setdefault(channel, waiter) is not waiter:
            state.line_up(channel, waiter)
        try:
            delivery: Delivery = await waiter
            return delivery[1]
        except BaseException:
            state.withdraw(channel, waiter)
            raise
    finally:
        if normal:
            # Counted while waiting, stamped when done: the sweeper leaves
            # a channel subscribed while either says it is in use.
            receivers = state.receivers
            if receivers[channel] == 1:
                del receivers[channel]
            else:
                receivers[channel] -= 1
            state.last_used[channel] = time.monotonic()
