"""Server metrics (``--metrics-port``): snapshots of the per-process registry, the text exposition.

The registry the protocols bump, ``Metrics``, lives below them in
``connection/metrics.py``.

``snapshot(state)`` turns a process's registry, plus what is cheaper to count
at scrape time than per request (open connections, open WebSockets, the
channel layers' ``stats()``), into a ``Snapshot``: a JSON-able dict, so a
worker can hand it to the supervisor through a file
(``server/metrics_listener.py``). ``Snapshot`` values are either counters
(monotonic: summed across workers, and folded into a base when a worker is
replaced so that totals never go down) or gauges (summed across live
workers only). ``render(snapshot)`` writes the Prometheus text exposition
format 0.0.4 (HELP and TYPE lines, ``_total``/``_seconds``/``_bytes`` names,
cumulative histogram buckets computed here, at scrape time).

Invariants: a ``Snapshot`` has every key of ``empty_snapshot()``; counter
values never decrease across snapshots of one process.

Imports only the standard library, ``sluiceway.connection.metrics`` and, when the app
loaded them, the channel layer registry (looked up in ``sys.modules``: the server never imports the
toolkit itself).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any

from sluiceway.connection.metrics import DURATION_BUCKETS_S

if TYPE_CHECKING:
    from sluiceway.connection.state import ServerState


Snapshot = dict[str, Any]

# Keys of a Snapshot that are gauges (the rest are counters), and the layer
# stats that are gauges.
GAUGE_KEYS = frozenset({"http_connections", "websockets"})
LAYER_GAUGE_KEYS = frozenset({"queued_messages"})

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def empty_snapshot() -> Snapshot:
    return {
        "responses": [0] * 6,
        "duration_buckets": [0] * (len(DURATION_BUCKETS_S) + 1),
        "duration_sum_s": 0.0,
        "request_body_bytes": 0,
        "response_body_bytes": 0,
        "app_exceptions": 0,
        "http_connections": 0,
        "websockets": 0,
        "layers": {},
    }


def snapshot(state: ServerState) -> Snapshot:
    """This process's numbers now. Runs on the loop thread (it walks the connections)."""
    from sluiceway.transport.linger import LingeringClose
    from sluiceway.websocket.protocol import Phase, WebSocketAdapter

    snap = empty_snapshot()
    metrics = state.metrics
    if metrics is not None:
        snap["responses"] = list(metrics.responses)
        snap["duration_buckets"] = list(metrics.duration_buckets)
        snap["duration_sum_s"] = metrics.duration_sum_s
        snap["request_body_bytes"] = metrics.request_body_bytes
        snap["response_body_bytes"] = metrics.response_body_bytes
        snap["app_exceptions"] = metrics.app_exceptions
    # Counted here, once per scrape, instead of a gauge bumped per connection:
    # the hot path pays nothing. A connection that became a WebSocket left
    # the registry as HTTP and is in it as its WebSocketAdapter; one closing
    # lingers as a LingeringClose, which is neither.
    websockets = 0
    other = 0
    for conn in state.connections:
        if isinstance(conn, WebSocketAdapter):
            other += 1
            websockets += conn.phase is Phase.OPEN
        elif isinstance(conn, LingeringClose):
            other += 1
    snap["http_connections"] = len(state.connections) - other
    # An HTTP/2 connection carries its WebSockets as streams (RFC 8441): they
    # register as adapters too, and the connection counts as HTTP.
    snap["websockets"] = websockets
    snap["layers"] = layer_stats()
    return snap


def layer_stats() -> dict[str, dict[str, int]]:
    """``stats()`` of each channel layer the app built through ``sluiceway.layers``, by alias."""
    layers = sys.modules.get("sluiceway.layers")
    if layers is None:
        return {}
    out: dict[str, dict[str, int]] = {}
    for alias, layer in layers.channel_layers.built().items():
        stats = getattr(layer, "stats", None)
        if stats is not None:
            out[alias] = {k: int(v) for k, v in stats().items()}
    return out


def add_snapshot(total: Snapshot, snap: Snapshot, gauges: bool = True) -> None:
    """Add ``snap`` into ``total``; ``gauges=False`` adds its counters only (a departed worker)."""
    for key, value in snap.items():
        if key == "layers":
            _add_layers(total["layers"], value, gauges)
        elif key in GAUGE_KEYS:
            if gauges:
                total[key] += value
        elif isinstance(value, list):
            into = total[key]
            for i, n in enumerate(value):
                into[i] += n
        else:
            total[key] += value


def _add_layers(total: dict[str, dict[str, int]], layers: dict[str, Any], gauges: bool) -> None:
    for alias, stats in layers.items():
        into = total.setdefault(alias, {})
        for key, value in stats.items():
            if key in LAYER_GAUGE_KEYS and not gauges:
                continue
            into[key] = into.get(key, 0) + int(value)


# --- the text exposition ----------------------------------------------------------------------


def _float(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label(value: str) -> str:
    # Exposition format: backslash, double quote and line feed are escaped.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snap: Snapshot) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of ``snap``."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family(
        "sluiceway_http_responses_total",
        "counter",
        "HTTP responses sent, by status class (server-made 400/500/503 included).",
    )
    for cls in range(1, 6):
        count = snap["responses"][cls]
        lines.append(f'sluiceway_http_responses_total{{status_class="{cls}xx"}} {count}')

    name = "sluiceway_http_request_duration_seconds"
    family(name, "histogram", "Time from the request head read to the response complete.")
    cumulative = 0
    for bound, count in zip((*DURATION_BUCKETS_S, math.inf), snap["duration_buckets"], strict=True):
        cumulative += count
        lines.append(f'{name}_bucket{{le="{_float(bound)}"}} {cumulative}')
    lines.append(f"{name}_sum {_float(snap['duration_sum_s'])}")
    lines.append(f"{name}_count {cumulative}")

    family(
        "sluiceway_http_request_body_bytes_total",
        "counter",
        "Request body bytes received (after chunked decoding; heads not counted).",
    )
    lines.append(f"sluiceway_http_request_body_bytes_total {snap['request_body_bytes']}")
    family(
        "sluiceway_http_response_body_bytes_total",
        "counter",
        "Response body bytes sent (before chunked framing; heads not counted).",
    )
    lines.append(f"sluiceway_http_response_body_bytes_total {snap['response_body_bytes']}")
    family(
        "sluiceway_app_exceptions_total",
        "counter",
        "Exceptions raised by the ASGI application (HTTP requests and WebSockets).",
    )
    lines.append(f"sluiceway_app_exceptions_total {snap['app_exceptions']}")
    family(
        "sluiceway_http_connections_open",
        "gauge",
        "Open HTTP/1.1 and HTTP/2 connections (a connection upgraded to a WebSocket is not one).",
    )
    lines.append(f"sluiceway_http_connections_open {snap['http_connections']}")
    family("sluiceway_websockets_open", "gauge", "Open (accepted) WebSockets.")
    lines.append(f"sluiceway_websockets_open {snap['websockets']}")

    layers: dict[str, dict[str, int]] = snap["layers"]
    if layers:
        family(
            "sluiceway_channel_layer_messages_queued",
            "gauge",
            "Messages waiting in this process's channel layer buffers"
            " (in-memory layer: all; Redis layer: the local receive buffer).",
        )
        for alias in sorted(layers):
            queued = layers[alias].get("queued_messages", 0)
            lines.append(
                f'sluiceway_channel_layer_messages_queued{{layer="{_label(alias)}"}} {queued}'
            )
        family(
            "sluiceway_channel_layer_full_total",
            "counter",
            "Messages refused for capacity: send raised ChannelFull, group_send skipped a"
            " full member, or (Redis) a message overflowed the local receive buffer.",
        )
        for alias in sorted(layers):
            stats = layers[alias]
            for operation, key in (
                ("send", "send_full"),
                ("group_send", "group_send_full"),
                ("receive_buffer", "receive_buffer_overflows"),
            ):
                if key in stats:
                    lines.append(
                        f'sluiceway_channel_layer_full_total{{layer="{_label(alias)}",'
                        f'operation="{operation}"}} {stats[key]}'
                    )
    lines.append("")
    return "\n".join(lines).encode("utf-8")
