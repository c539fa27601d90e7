"""The seam where an HTTP/1.1 connection may be handed to another protocol.

Contract (the WebSocket engineer fills in ``try_upgrade``):

``try_upgrade(request) -> bool`` is called by ``http1/protocol.py`` once the
head of a request asking to switch protocols is complete (it carries
``Upgrade`` and ``Connection: upgrade``; llhttp raised ``HttpParserUpgrade``)
and no earlier request on the connection is still in flight. ``request`` is an
``UpgradeRequest`` holding:

* ``protocol``: the ``asyncio.Protocol`` currently attached to ``transport``;
* ``transport``: the connection's transport, still reading;
* ``info``: the connection's ``ConnectionInfo`` (client, server, scheme, TLS);
* ``scope``: the fully built ``http`` scope of the request (method, path,
  headers with lowercased names, ...); a websocket scope can be derived from
  it with ``type``/``scheme`` changed and the HTTP-only keys dropped;
* ``upgrade``: the lowercased ``Upgrade`` header value (e.g. ``b"websocket"``);
* ``buffered``: bytes already read past the request head (the first frames a
  client may send at once); the new protocol must process them first;
* ``app``, ``config``, ``state``: the ASGI app, ``Config`` and ``ServerState``.

Return ``True`` when the new protocol took the connection over: it has called
``transport.set_protocol(new)`` and will drive the transport from now on,
and it registers itself in ``state.connections`` (``shutdown()`` contract of
``server/listener.py``). The HTTP/1 protocol then forgets the transport.

Return ``False`` to decline: the request is served as plain HTTP (what uvicorn
does with ``--ws none``) and the buffered bytes are parsed as the next request.

Must not import ``http1/protocol.py`` (that module imports this one).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sluiceway.asgi.types import ASGIApp
    from sluiceway.config import Config
    from sluiceway.server.state import ConnectionInfo, ServerState


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    protocol: asyncio.Protocol
    transport: asyncio.Transport
    info: ConnectionInfo
    scope: dict[str, Any]
    upgrade: bytes
    buffered: bytes
    app: ASGIApp
    config: Config
    state: ServerState


def try_upgrade(request: UpgradeRequest) -> bool:
    """Offer the connection to another protocol; see the module docstring."""
    return False
