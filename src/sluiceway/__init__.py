"""sluiceway: a complete ASGI implementation.

The protocol server (``sluiceway.run``, ``sluiceway.Server``, ``sluiceway.Config``),
the application toolkit (``sluiceway.routing``, ``.middleware``, ``.consumers``,
``.sync``, ``.wsgi``, ``.testing``) and the channel layers (``sluiceway.layers``).

uvicorn's Python API works as written: ``Config(app, host=..., port=...)`` with
uvicorn's keyword names, ``Server(config).run()`` or ``await server.serve()``,
``server.started``, ``server.should_exit`` and ``run(app, **options)``.

Importing ``sluiceway`` stays light: the server side loads on first use of
``run``, ``Server`` or ``Config``, so a toolkit import never pulls in the
protocol server, httptools or uvloop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The one definition of the version: pyproject.toml reads it (dynamic = ["version"]).
__version__ = "0.1.0"

__all__ = ["Config", "Server", "__version__", "run"]

if TYPE_CHECKING:
    from sluiceway.config import Config
    from sluiceway.server.process import run
    from sluiceway.server.runner import Server


def __getattr__(name: str) -> Any:
    if name == "Config":
        from sluiceway.config import Config

        return Config
    if name == "Server":
        from sluiceway.server.runner import Server

        return Server
    if name == "run":
        from sluiceway.server.process import run

        return run
    raise AttributeError(f"module 'sluiceway' has no attribute {name!r}")
