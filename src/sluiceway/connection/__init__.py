"""What the protocols share, below them: connection state, listener settings, app tasks, files.

``http1/``, ``http2/`` and ``websocket/`` import from here; ``server/`` above
them builds these objects (the runner a ``ServerState``, the listener a
``Shared``) and hands them down. Nothing here is specific to one HTTP version:

* ``state.py``: ``ServerState`` (live connections, app tasks, the cached
  ``Date`` header, the tick that enforces deadlines) and ``ConnectionInfo``;
* ``shared.py``: ``Shared``, the per-listener limits and timeouts every
  connection reads, and ``connection_info``;
* ``tasks.py``: ``start_eagerly``, how an app coroutine starts;
* ``files.py``: pathsend/zerocopysend file bodies;
* ``metrics.py``: the ``--metrics-port`` registry the protocols bump;
* ``app_errors.py``: how a failed app is told from a client that left, and reported.

May import only ``sluiceway.asgi``, ``sluiceway.transport``, ``sluiceway.errors``,
``sluiceway.config``, ``sluiceway.accesslog``, ``sluiceway.forward_throw`` and
the standard library; never ``http1``, ``http2``, ``websocket`` or ``server``
(one type-only import: ``Shared.h2`` is an ``http2.config.H2Config``).
"""
