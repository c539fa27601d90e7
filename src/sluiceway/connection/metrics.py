"""The per-process metrics registry (``--metrics-port``) the protocols bump; the WebSocket wrapper.

``Metrics`` holds one process's counters as plain ints and floats, bumped by
the protocols on the event loop thread: no locks, and nothing allocated per
request. It exists only with ``--metrics-port`` (``ServerState.metrics`` is
``None`` otherwise), and the protocols test ``metrics is not None`` once per
exchange, where status, body size and duration are already known (the same
place as the access log line). Snapshots, summing across workers and the
Prometheus text are the server's (``server/metrics.py``, ``server/metrics_listener.py``).

Imports only the standard library and ``sluiceway.errors``.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import TYPE_CHECKING

from sluiceway.errors import ClientDisconnected

if TYPE_CHECKING:
    from sluiceway.asgi.types import ASGIApp, Receive, Scope, Send

# Upper bounds of the request duration histogram, seconds: the Prometheus
# client libraries' defaults (5 ms .. 10 s), which cover a web request from a
# cache hit to a slow report; +Inf is implied.
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

_FIRST_BOUND_S = DURATION_BUCKETS_S[0]


class Metrics:
    """One process's counters, bumped by the protocols on the loop thread.

    ``responses[c]`` counts responses of status class ``c``xx (index 1..5;
    0 would hold a status below 100, which the ASGI cycle never sends).
    ``duration_buckets[i]`` counts exchanges whose duration is at most
    ``DURATION_BUCKETS_S[i]`` and above the bound before it (not cumulative:
    ``render`` adds them up); the last one is over every bound.
    """

    __slots__ = (
        "app_exceptions",
        "duration_buckets",
        "duration_sum_s",
        "request_body_bytes",
        "response_body_bytes",
        "responses",
    )

    def __init__(self) -> None:
        self.responses = [0] * 6
        self.duration_buckets = [0] * (len(DURATION_BUCKETS_S) + 1)
        self.duration_sum_s = 0.0
        self.request_body_bytes = 0
        self.response_body_bytes = 0
        self.app_exceptions = 0

    def observe(self, status: int, body_bytes: int, duration_s: float) -> None:
        """One exchange is complete: its status, response body size and duration."""
        self.responses[status // 100] += 1
        if duration_s <= _FIRST_BOUND_S:
            # Most answers: no bisect (a call) needed for the first bucket.
            self.duration_buckets[0] += 1
        else:
            self.duration_buckets[bisect_left(DURATION_BUCKETS_S, duration_s)] += 1
        self.duration_sum_s += duration_s
        self.response_body_bytes += body_bytes

    def count_status(self, status: int) -> None:
        """A response the server made without an exchange (a 400 to a malformed request)."""
        self.responses[status // 100] += 1


def counting_exceptions(app: ASGIApp, metrics: Metrics) -> ASGIApp:
    """``app``, counting what it raises into ``metrics.app_exceptions`` (for WebSockets).

    An HTTP exchange is counted where the protocol logs the exception; a
    WebSocket's app is run by ``WebSocketCycle``, which the server side does
    not see into, so with ``--metrics-port`` its app is wrapped (once per
    WebSocket; nothing is wrapped without the option). What the cycle does
    not log as an error is not counted: the client leaving, a cancel.
    """

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except (ClientDisconnected, asyncio.CancelledError):
            raise
        except BaseException:
            metrics.app_exceptions += 1
            raise

    return counted
