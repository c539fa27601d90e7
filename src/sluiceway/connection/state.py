"""Server-wide live state shared by every connection, and per-connection facts.

``ServerState`` is created once per server by the runner (or ``tests/support``)
and handed to ``make_protocol_factory``. It owns:

* ``connections``: the live connection objects (each offers ``shutdown()``);
* ``tasks``: the running application tasks (its size is the in-flight count
  that ``limit_concurrency`` compares against);
* the cached ``Date`` header, rebuilt at most once a second by a loop timer,
  and the pre-encoded default response headers (``Server`` and ``--header``);
* ``lifespan_state``: the dict the lifespan protocol filled, shallow-copied
  into each request scope;
* ``shutting_down``: set by the runner before it calls ``shutdown()`` on the
  connections, so that no connection starts a new request afterwards;
* ``requests``: how many request heads were accepted; with ``request_limit``
  set (``--limit-max-requests``), the tick calls ``on_request_limit`` once
  the count reaches it (the hot path pays one increment, no comparison);
* ``h2_websockets``: how many WebSockets opened over HTTP/2 streams (RFC 8441
  extended CONNECT; ``http2/websocket.py``), to tell them from upgrades;
* ``metrics``: the ``connection/metrics.py`` registry with ``--metrics-port``,
  else ``None`` (the protocols test that once per exchange).

The same timer (``tick``) also enforces per-connection deadlines (keep-alive
idle, request-header and request-body timeouts): a connection stores an absolute
``deadline`` and the tick closes the late ones. That costs one float store per
request instead of a timer handle per request.

``ConnectionInfo`` bundles what a protocol knows about its socket; it is made
once per connection and passed on (to scope building and to the upgrade seam).

Imports only the standard library, ``sluiceway.config``, ``sluiceway.errors``,
``sluiceway.forward_throw`` and, with ``--metrics-port``, ``sluiceway.connection.metrics``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Protocol

from sluiceway.errors import ConfigError
from sluiceway.forward_throw import forward_throw

if TYPE_CHECKING:
    from sluiceway.config import Config
    from sluiceway.connection.metrics import Metrics

SERVER_NAME = b"sluiceway"


class Connection(Protocol):
    """What the runner may do to a live connection (``server/listener.py``).

    A connection may also carry ``deadline: float | None`` (loop time) and
    ``on_deadline()``; the tick calls ``on_deadline()`` once that time passes.
    """

    def shutdown(self) -> None: ...

    def abort(self) -> None: ...


class ConnectionInfo:
    """Facts about one accepted connection, computed once in ``connection_made``.

    ``server`` is ``(host, port)`` for TCP and ``(path, None)`` for a Unix socket
    (ASGI www spec, ``server`` key). ``tls`` is the ``tls`` scope extension dict
    (ASGI TLS extension 0.2) or ``None`` on plain connections. Read-only by
    convention.

    A plain class, not a frozen dataclass: one is made per connection, and a
    dataclass's generated ``__init__`` stays interpreted under mypyc (a frozen
    one sets each field through ``object.__setattr__``), which made it a
    visible part of a connection's setup in scenario (e).
    """

    __slots__ = ("client", "scheme", "server", "ssl_object", "tls")

    def __init__(
        self,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        scheme: str,
        ssl_object: ssl.SSLObject | None = None,
        tls: dict[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.server = server
        self.scheme = scheme
        self.ssl_object = ssl_object
        self.tls = tls

    def __repr__(self) -> str:
        return (
            f"ConnectionInfo(client={self.client!r}, server={self.server!r},"
            f" scheme={self.scheme!r})"
        )


def _default_headers(config: Config) -> bytes:
    lines = []
    if config.server_header:
        lines.append(b"server: " + SERVER_NAME + b"\r\n")
    for name, value in config.headers:
        # Validated here once: a bad --header must never reach the wire.
        raw_name = name.strip().lower().encode("latin-1")
        raw_value = value.strip().encode("latin-1")
        if (
            not raw_name
            or any(c in raw_name for c in b" \t\r\n\0:")
            or any(c in raw_value for c in b"\r\n\0")
        ):
            raise ConfigError(f"invalid --header {name!r}: {value!r}")
        lines.append(raw_name + b": " + raw_value + b"\r\n")
    return b"".join(lines)


class ServerState:
    """Live state of one server; see the module docstring."""

    def __init__(self, config: Config, lifespan_state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.lifespan_state: dict[str, Any] = lifespan_state if lifespan_state is not None else {}
        self.shutting_down = False
        self.requests = 0
        self.h2_websockets = 0
        self.metrics: Metrics | None = None
        if config.metrics_port is not None:
            from sluiceway.connection.metrics import Metrics

            self.metrics = Metrics()
        self.request_limit: int | None = None
        self.on_request_limit: Callable[[], None] | None = None
        self.extra_headers = _default_headers(config)
        # Bytes appended to every response head: Date (if on) + Server + extras.
        self.default_headers = b""
        self._date_second = -1
        self._timer: asyncio.TimerHandle | None = None
        self._tick_s = 1.0
        self._idle: asyncio.Future[None] | None = None
        self.refresh_date()

    def refresh_date(self) -> None:
        """Rebuild the cached ``Date`` header if the second changed."""
        now = int(time.time())
        if now == self._date_second:
            return
        self._date_second = now
        if self.config.date_header:
            date = formatdate(now, usegmt=True).encode("ascii")
            self.default_headers = b"date: " + date + b"\r\n" + self.extra_headers
        else:
            self.default_headers = self.extra_headers

    # -- the tick: Date refresh + deadlines ---------------------------------

    def start_clock(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the once-a-tick timer (idempotent). Connections start it lazily."""
        if self._timer is not None:
            return
        cfg = self.config
        # Tick often enough that a short timeout (tests use tenths of a second)
        # still fires close to on time; never slower than once a second (Date).
        # WebSocket keepalive rides on the same tick (websocket/protocol.py).
        timeouts = (
            1.0,
            cfg.keep_alive_timeout_s,
            cfg.request_headers_timeout_s,
            cfg.request_body_timeout_s,
            cfg.ws_ping_interval_s,
            cfg.ws_ping_timeout_s,
        )
        shortest = min(t for t in timeouts if t > 0)
        self._tick_s = max(0.02, min(1.0, shortest / 4))
        self._timer = loop.call_later(self._tick_s, self._tick, loop)

    def stop_clock(self) -> None:
        """Stop the timer (the runner calls this once the server is closed)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self.refresh_date()
        limit = self.request_limit
        if limit is not None and self.requests >= limit and self.on_request_limit is not None:
            callback, self.on_request_limit = self.on_request_limit, None
            callback()
        now = loop.time()
        # Connections that took over from HTTP/1 (WebSocket) may keep their
        # own timers and carry no deadline at all.
        late = [c for c in self.connections if (getattr(c, "deadline", None) or now + 1) <= now]
        for conn in late:
            conn.on_deadline()  # type: ignore[attr-defined]  # has a deadline, so has this
        self._timer = loop.call_later(self._tick_s, self._tick, loop)

    # -- connection registry --------------------------------------------------

    def add_connection(self, conn: Connection) -> None:
        self.connections.add(conn)

    def remove_connection(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def wait_connections_closed(self) -> None:
        """Return once no connection is left (used by graceful shutdown)."""
        if not self.connections:
            return
        if self._idle is None or self._idle.done():
            self._idle = asyncio.get_running_loop().create_future()
        await forward_throw(self._idle)
