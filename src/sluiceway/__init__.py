"""sluiceway: a complete ASGI implementation.

The protocol server (``sluiceway.run``, ``sluiceway.Server``, ``sluiceway.Config``),
the application toolkit (``sluiceway.routing``, ``.middleware``, ``.consumers``,
``.sync``, ``.wsgi``, ``.testing``) and the channel layers (``sluiceway.layers``).

Importing ``sluiceway`` stays light: the server side loads on first use of
``run``, ``Server`` or ``Config``, so a toolkit import never pulls in the
protocol server, httptools or uvloop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Config", "Server", "__version__", "run"]

if TYPE_CHECKING:
    from sluiceway.config import Config
    from sluiceway.server.runner import Server, run


def __getattr__(name: str) -> Any:
    if name == "Config":
        from sluiceway.config import Config

        return Config
    if name in ("Server", "run"):
        from sluiceway.server import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'sluiceway' has no attribute {name!r}")
