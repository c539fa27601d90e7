"""A consistent-hash ring: which Redis host holds a channel's messages.

Each host gets ``VNODES`` points on a 64-bit ring, placed by hashing the
host's identity (its URL without password), not its position in the list, so
adding a host moves only about ``1/n`` of the names and reordering the list
moves none. A name belongs to the first point at or after its own hash.

Process-local channels (``prefix.id!suffix``) are placed by their non-local
part (``prefix.id!``) on both the sending and the receiving side, so a
process's inbox is one key on one host (channels_redis hashes the sender's
and the receiver's view differently: its issue #1492).

On a Redis Cluster the ring is not used: Redis places keys by slot, and
``bucket_for`` picks the hash tag a name's keys carry (``redis_cluster.py``).

Imports only the standard library.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence

# 160 points per host, as ketama does: the load spread stays within a few
# percent for a handful of hosts.
VNODES = 160


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """Map names to an index into the ``hosts`` list given at construction."""

    def __init__(self, host_ids: Sequence[str], vnodes: int = VNODES) -> None:
        if not host_ids:
            raise ValueError("a hash ring needs at least one host")
        if len(set(host_ids)) != len(host_ids):
            raise ValueError("each host may appear only once")
        self.size = len(host_ids)
        points: list[tuple[int, int]] = []
        for index, host_id in enumerate(host_ids):
            for v in range(vnodes):
                points.append((_hash(f"{host_id}#{v}".encode()), index))
        points.sort()
        self._keys = [p for p, _ in points]
        self._owners = [i for _, i in points]

    def index_for(self, name: str) -> int:
        """The host index for ``name`` (already reduced to its non-local part)."""
        if self.size == 1:
            return 0
        i = bisect.bisect_left(self._keys, _hash(name.encode()))
        return self._owners[i if i < len(self._keys) else 0]


def bucket_for(name: str, buckets: int) -> int:
    """The bucket of ``name`` among ``buckets``: how a Redis Cluster places it.

    The same hash as the ring, so a name's placement never depends on the
    process that computes it (``redis_cluster.py``).
    """
    return _hash(name.encode()) % buckets
