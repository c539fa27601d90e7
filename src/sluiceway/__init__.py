"""sluiceway: a complete ASGI implementation.

The protocol server (``sluiceway.run``, ``sluiceway.Server``), the application
toolkit (``sluiceway.routing``, ``.middleware``, ``.consumers``, ``.sync``,
``.wsgi``, ``.testing``) and the channel layers (``sluiceway.layers``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
