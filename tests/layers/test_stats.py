"""``stats()`` of the in-memory and Redis layers: what the server's ``/metrics`` reads.

``queued_messages`` is what waits in this process (the Redis layer's local
receive buffer: a process-local channel's messages once its inbox fetched
them); ``send_full`` and ``group_send_full`` count what capacity refused.
"""

from __future__ import annotations

import pytest

from sluiceway.errors import ChannelFull
from tests.layers.conftest import LayerFactory

MESSAGE = {"type": "test.message"}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_stats_count_queued_messages_and_capacity_refusals(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=2)
    stats = layer.stats()  # type: ignore[attr-defined]  # both backends have it
    assert stats["queued_messages"] == 0
    assert stats["send_full"] == stats["group_send_full"] == 0

    channel = await layer.new_channel("stats")
    await layer.send(channel, MESSAGE)
    await layer.send(channel, MESSAGE)
    with pytest.raises(ChannelFull):
        await layer.send(channel, MESSAGE)
    assert layer.stats()["send_full"] == 1  # type: ignore[attr-defined]

    # Received one: the other waits in this process (Redis: the inbox
    # fetched both in one batch into the local buffer).
    assert await layer.receive(channel) == MESSAGE
    assert layer.stats()["queued_messages"] == 1  # type: ignore[attr-defined]

    # A member at capacity is skipped by group_send.
    member = await layer.new_channel("stats")
    await layer.send(member, MESSAGE)
    await layer.send(member, MESSAGE)
    await layer.group_add("stats-group", member)
    await layer.group_send("stats-group", MESSAGE)
    stats = layer.stats()  # type: ignore[attr-defined]
    assert stats["group_send_full"] == 1
    assert stats["send_full"] == 1
