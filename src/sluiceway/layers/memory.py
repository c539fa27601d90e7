"""The in-memory channel layer, and the bounded expiring store it is built on.

``ChannelStore`` holds one FIFO per channel with a capacity and a deadline per
message. The Redis layer reuses it as its process-local receive buffer.

Invariants:

* a channel never holds more than its capacity; a full channel refuses the
  new message (``put`` returns ``False``), it never drops an old one;
* an expired message is never returned by ``get``;
* expiry is driven by a heap holding at most one entry per channel that had
  a message within the expiry window, keyed by (a lower bound of) its oldest
  deadline, so each call pays for the channels that actually expired, never
  a scan of every channel;
* a channel with neither messages nor waiting receivers is deleted, so memory
  is bounded by live channels times their capacity;
* a group holds at most about twice its unexpired members: expired ones are
  dropped by ``group_send`` and whenever ``group_add`` doubles the group;
* many receivers may wait on one channel; each message goes to exactly one,
  and a cancelled receiver passes its wake-up on, so nothing is stranded.

The layer is for one process (one event loop at a time). Imports the standard
library and ``sluiceway.layers.base``/``serializers`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sluiceway.errors import ChannelFull
from sluiceway.layers.base import (
    BaseChannelLayer,
    CapacityPatterns,
    require_valid_channel_name,
    require_valid_group_name,
    require_valid_message,
)
from sluiceway.layers.serializers import DEFAULT_MAX_MESSAGE_BYTES, MessageSerializer

logger = logging.getLogger(__name__)

_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1
# Groups smaller than this are never swept by group_add: too small to matter.
_SWEEP_MIN_MEMBERS = 64

_Entry = tuple[float, dict[str, Any]]  # (deadline on time.monotonic(), message)


class _Queue:
    __slots__ = ("items", "waiters")

    def __init__(self) -> None:
        self.items: deque[_Entry] = deque()
        self.waiters: deque[asyncio.Future[None]] = deque()


class ChannelStore:
    """Bounded per-channel FIFOs with per-message deadlines.

    Deadlines are ``time.monotonic()`` values supplied by the caller.
    ``on_remove(channel, count)``, if given, is told of every message that
    leaves the store, whether received, expired or cleared (the Redis layer
    uses it to release capacity it holds in Redis).
    """

    def __init__(
        self,
        get_capacity: Callable[[str], int],
        on_remove: Callable[[str, int], None] | None = None,
    ) -> None:
        self._get_capacity = get_capacity
        self._on_remove = on_remove
        # Read by the pub/sub layer's receive(): empty means nothing is buffered.
        self.queues: dict[str, _Queue] = {}
        self._heap: list[tuple[float, str]] = []
        # Channels with an entry in the heap. Kept apart from the queues, which
        # come and go with every message on a quiet channel: a channel gets one
        # heap entry at a time however often its queue is recreated.
        self._scheduled: set[str] = set()

    def __len__(self) -> int:
        return len(self.queues)

    def queued(self) -> int:
        """Messages queued on every channel (expired ones included until purged)."""
        return sum(len(q.items) for q in self.queues.values())

    def depth(self, channel: str) -> int:
        """Messages queued on ``channel`` (expired ones included until purged)."""
        q = self.queues.get(channel)
        return len(q.items) if q else 0

    def put(self, channel: str, message: dict[str, Any], deadline: float) -> bool:
        """Queue ``message``; ``False`` (and nothing queued) when the channel is full."""
        now = time.monotonic()
        if self._heap and self._heap[0][0] <= now:
            self.purge_expired(now)
        q = self.queues.get(channel)
        if q is None:
            q = self.queues[channel] = _Queue()
        items = q.items
        dropped = 0
        while items and items[0][0] <= now:
            items.popleft()
            dropped += 1
        if dropped and self._on_remove is not None:
            self._on_remove(channel, dropped)
        if len(items) >= self._get_capacity(channel):
            return False
        items.append((deadline, message))
        if channel not in self._scheduled:
            self._scheduled.add(channel)
            heapq.heappush(self._heap, (items[0][0], channel))
        if q.waiters:
            _wake_one(q)
        return True

    async def get(self, channel: str) -> dict[str, Any]:
        """Wait for and return the oldest unexpired message on ``channel``."""
        while True:
            # Looked up afresh each turn: while we slept the queue may have been
            # emptied by another receiver and deleted.
            q = self.queues.get(channel)
            if q is None:
                q = self.queues[channel] = _Queue()
            items = q.items
            if items:
                now = time.monotonic()
                taken = 0
                while items:
                    deadline, message = items.popleft()
                    taken += 1
                    if deadline > now:
                        if self._on_remove is not None:
                            self._on_remove(channel, taken)
                        if items:
                            _wake_one(q)
                        elif channel not in self._scheduled:
                            self._forget_if_idle(channel, q)
                        # else the queue stays until its heap entry comes due
                        # (purge_expired forgets it then): a channel used in
                        # turns does not rebuild its queue for every message.
                        return message
                if self._on_remove is not None:
                    self._on_remove(channel, taken)
                self._forget_if_idle(channel, q)
                continue
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            q.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    # We were woken for a message we will not take: pass it on.
                    _wake_one(q)
                else:
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        q.waiters.remove(waiter)
                    self._forget_if_idle(channel, q)
                raise

    def purge_expired(self, now: float | None = None) -> int:
        """Drop expired messages at the head of channels the heap says are due."""
        if now is None:
            now = time.monotonic()
        heap = self._heap
        dropped = 0
        while heap and heap[0][0] <= now:
            _, channel = heapq.heappop(heap)
            self._scheduled.discard(channel)
            q = self.queues.get(channel)
            if q is None:
                continue
            items = q.items
            before = len(items)
            while items and items[0][0] <= now:
                items.popleft()
            if before != len(items):
                dropped += before - len(items)
                if self._on_remove is not None:
                    self._on_remove(channel, before - len(items))
            if items:
                self._scheduled.add(channel)
                heapq.heappush(heap, (items[0][0], channel))
            else:
                self._forget_if_idle(channel, q)
        return dropped

    def clear(self) -> None:
        """Drop every message. Waiting receivers keep waiting."""
        for channel, q in self.queues.items():
            if q.items and self._on_remove is not None:
                self._on_remove(channel, len(q.items))
            q.items.clear()
        self._heap.clear()
        self._scheduled.clear()
        for channel, q in list(self.queues.items()):
            self._forget_if_idle(channel, q)

    def _forget_if_idle(self, channel: str, q: _Queue) -> None:
        if not q.items and not q.waiters and self.queues.get(channel) is q:
            del self.queues[channel]


def _wake_one(q: _Queue) -> None:
    waiters = q.waiters
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


class InMemoryChannelLayer(BaseChannelLayer):
    """A channel layer inside one process: the embedded default.

    Every message is checked against the rules the Redis layer applies (msgpack
    types and ranges, the size limit) and copied, so an app that works here
    works there and a sender's later edits never reach the receiver.

    Args:
        expiry_s, group_expiry_s, capacity, channel_capacity: see ``BaseChannelLayer``.
        max_message_bytes: the largest packed message accepted.
    """

    def __init__(
        self,
        *,
        expiry_s: float = 60.0,
        group_expiry_s: float = 86400.0,
        capacity: int = 100,
        channel_capacity: CapacityPatterns | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__(
            expiry_s=expiry_s,
            group_expiry_s=group_expiry_s,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        self._serializer = MessageSerializer(max_message_bytes=max_message_bytes)
        self._store = ChannelStore(self.get_capacity)
        # group -> {channel: membership deadline (monotonic)}
        self._groups: dict[str, dict[str, float]] = {}
        self._client_id = secrets.token_hex(6)
        # Sends refused with ChannelFull (the server's metrics read it).
        self.send_full = 0

    def _copy(self, message: dict[str, Any]) -> dict[str, Any]:
        """An isolated copy, accepted only if the Redis layer would accept it too.

        Most layer messages are flat: str keys, immutable scalar values. For
        those a shallow copy is already isolated, and the checks msgpack would
        make are cheap to make here; anything else takes the msgpack round trip.
        """
        budget = self._serializer.max_message_bytes
        # An upper bound of the packed size: every key and value costs, a
        # scalar up to 9 bytes, a header up to 5, UTF-8 up to 4 bytes a char.
        size = 5
        for key, value in message.items():
            kind = type(value)
            if type(key) is not str:
                break
            size += 4 * len(key) + 14
            if kind is str:
                size += 4 * len(value)
            elif kind is bytes:
                size += len(value)
            elif kind is int:
                if not _INT_MIN <= value <= _UINT_MAX:  # msgpack's integer range
                    break
            elif kind is not float and kind is not bool and value is not None:
                break
        else:
            if size <= budget:
                return dict(message)
        ser = self._serializer
        return ser.loads(ser.dumps(message))

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        """Queue ``message`` on ``channel``.

        Raises:
            InvalidChannelName, InvalidMessage: bad input.
            ChannelFull: the channel holds ``capacity`` messages already.
        """
        require_valid_channel_name(channel)
        copy = self._copy(require_valid_message(message))
        if not self._store.put(channel, copy, time.monotonic() + self.expiry_s):
            self.send_full += 1
            raise ChannelFull(f"channel {channel!r} is full")

    async def receive(self, channel: str) -> dict[str, Any]:
        """Wait for the next unexpired message on ``channel``."""
        require_valid_channel_name(channel)
        return await self._store.get(channel)

    async def new_channel(self, prefix: str = "specific") -> str:
        """A fresh process-local channel name, ``<prefix>.<layer id>!<random>``."""
        return require_valid_channel_name(f"{prefix}.{self._client_id}!{secrets.token_hex(8)}")

    async def group_add(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        now = time.monotonic()
        members = self._groups.setdefault(group, {})
        members[channel] = now + self.group_expiry_s
        size = len(members)
        if size >= _SWEEP_MIN_MEMBERS and size & (size - 1) == 0:
            # A group that is never sent to would keep its expired members
            # for ever: sweep it each time it doubles (amortised O(1) per add),
            # so it stays within twice its live members.
            for stale in [c for c, deadline in members.items() if deadline <= now]:
                del members[stale]

    async def group_discard(self, group: str, channel: str) -> None:
        require_valid_group_name(group)
        require_valid_channel_name(channel)
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        """Queue ``message`` on every member of ``group``; full members are skipped.

        The message is serialised and copied once; each member gets its own
        shallow copy of that, so receivers never see each other's edits to
        top-level keys.
        """
        require_valid_group_name(group)
        copy = self._copy(require_valid_message(message))
        members = self._groups.get(group)
        if not members:
            return
        now = time.monotonic()
        deadline = now + self.expiry_s
        put = self._store.put
        expired: list[str] = []
        full = 0
        for channel, member_deadline in members.items():
            if member_deadline <= now:
                expired.append(channel)
            elif not put(channel, dict(copy), deadline):
                full += 1
        for channel in expired:
            del members[channel]
        if not members:
            del self._groups[group]
        if full:
            self.group_send_full_skips += full
            logger.warning(
                "group_send to %r skipped %d full channel(s) (capacity reached)", group, full
            )

    def stats(self) -> dict[str, int]:
        """Numbers for the server's metrics (``--metrics-port``), computed when asked.

        ``queued_messages``: messages waiting on every channel;
        ``send_full``: sends refused with ``ChannelFull``;
        ``group_send_full``: group members ``group_send`` skipped as full.
        """
        return {
            "queued_messages": self._store.queued(),
            "send_full": self.send_full,
            "group_send_full": self.group_send_full_skips,
        }

    async def flush(self) -> None:
        """Drop every message and group."""
        self._store.clear()
        self._groups.clear()

    async def close(self) -> None:
        """Nothing to release; here for the ``ChannelLayer`` contract."""
