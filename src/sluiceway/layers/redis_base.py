"""What both Redis layers take and check the same way: hosts, key prefix, connections, serializer.

``RedisLayerBase.__init__`` is the queue layer's (``redis.py``) and the
pub/sub layer's (``redis_pubsub.py``) common start: the hosts parsed
(``redis_scripts.host_spec``: URLs, ``(host, port)`` pairs, Sentinel and
channels_redis entries), the key prefix, the receive timeout and the
connection-pool size checked, the message serializer built. What each does
with them (the hash ring, cluster buckets, loops) stays in its own class.

Imports ``sluiceway.errors`` and ``sluiceway.layers.*``; never redis itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sluiceway.errors import ConfigError
from sluiceway.layers.base import BaseChannelLayer, CapacityPatterns
from sluiceway.layers.redis_scripts import host_spec
from sluiceway.layers.serializers import MessageSerializer

PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
DEFAULT_HOST = "redis://localhost:6379/0"


class RedisLayerBase(BaseChannelLayer):
    """The settings both Redis layers share; see their classes for the arguments."""

    def __init__(
        self,
        hosts: Sequence[object] | None,
        *,
        prefix: str,
        expiry_s: float,
        group_expiry_s: float,
        capacity: int,
        channel_capacity: CapacityPatterns | None,
        symmetric_encryption_keys: Sequence[str | bytes] | None,
        max_message_bytes: int,
        receive_timeout_s: float,
        max_connections: int,
        cluster: bool,
    ) -> None:
        super().__init__(
            expiry_s=expiry_s,
            group_expiry_s=group_expiry_s,
            capacity=capacity,
            channel_capacity=channel_capacity,
        )
        if isinstance(hosts, str):
            hosts = [hosts]
        self._hosts = [host_spec(h) for h in (hosts or [DEFAULT_HOST])]
        if not PREFIX_RE.match(prefix):
            raise ConfigError(f"redis key prefix {prefix!r}: use 1-64 of A-Z a-z 0-9 _ . -")
        if receive_timeout_s <= 0:
            raise ConfigError("receive_timeout_s must be positive")
        if not isinstance(max_connections, int) or max_connections < 1:
            raise ConfigError("max_connections must be a positive int")
        self.max_connections = max_connections
        self.prefix = prefix
        self._key = prefix + ":"
        self.receive_timeout_s = receive_timeout_s
        self.cluster = bool(cluster)
        self._serializer = MessageSerializer(symmetric_encryption_keys, max_message_bytes)
        # Messages found expired when received (never delivered).
        self.expired_on_receive = 0
