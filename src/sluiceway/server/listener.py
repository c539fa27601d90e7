"""Protocol factories for listeners, and the connection ``shutdown()`` contract.

``make_protocol_factory(config, app, state)`` returns the zero-argument
callable that ``loop.create_server`` wants. It adapts ASGI 2 apps, builds the
per-server ``Shared`` facts once (limits, timeouts, TLS info) and makes one
``HTTP1Protocol`` per accepted connection. The runner owns binding (TCP, Unix
socket, inherited fd, TLS context); tests use ``tests/support.py``.

Contract with the runner (``server/runner.py``), for every member of
``state.connections``:

* ``shutdown()``: graceful. An idle connection (no request in flight) closes
  at once; a busy one stops reading, drops requests queued behind the
  in-flight one (the client sees the connection close and may retry them),
  marks the in-flight response ``Connection: close`` if its head is not out,
  and closes once that response completes. Call it after setting
  ``state.shutting_down = True``: requests that still reach an app after that
  get 503 with ``Connection: close``.
* ``abort()``: close the socket now (after the graceful timeout).
* A connection leaves ``state.connections`` in ``connection_lost``;
  ``await state.wait_connections_closed()`` returns when none is left.
* App tasks live in ``state.tasks``; the runner cancels what is left after
  aborting. A cancelled app's connection closes without a response.

Imports ``sluiceway.http1.protocol``, ``sluiceway.asgi.compat``,
``sluiceway.connection`` and, lazily, ``sluiceway.http2.config`` and
``sluiceway.transport.tls``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, cast

from sluiceway.asgi.compat import guarantee_single_callable
from sluiceway.config import Config
from sluiceway.connection.shared import Shared
from sluiceway.connection.state import ServerState
from sluiceway.http1.protocol import HTTP1Protocol


def make_protocol_factory(
    config: Config,
    app: Any,
    state: ServerState,
    ssl_context: ssl.SSLContext | None = None,
) -> Callable[[], asyncio.Protocol]:
    """A factory for ``loop.create_server``: one ``HTTP1Protocol`` per connection.

    Args:
        config: the server configuration (limits, timeouts, headers).
        app: the ASGI application (ASGI 2 apps are adapted).
        state: the server's live state (connections, tasks, Date header).
        ssl_context: the server's TLS context, if any; used once to precompute
            the ``tls`` scope extension's per-server facts.
    """
    tls_info = None
    if config.is_ssl:
        from sluiceway.transport.tls import create_ssl_context, load_tls_info

        tls_info = load_tls_info(config, ssl_context or create_ssl_context(config))
    h2 = None
    if config.http2:
        from sluiceway.http2.config import h2_config

        h2 = h2_config(config)
    shared = Shared(
        config,
        guarantee_single_callable(app),
        state,
        tls_info,
        tls=ssl_context is not None,
        h2=h2,
    )

    def factory() -> asyncio.Protocol:
        return cast(asyncio.Protocol, HTTP1Protocol(shared))  # a Protocol by duck typing

    return factory
