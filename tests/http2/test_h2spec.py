"""h2spec, the HTTP/2 conformance suite, against the sans-I/O engine alone.

``conformance_server`` wraps ``H2Connection`` in a bare asyncio protocol
(no ASGI, no HTTP/1.1), so a failure here is the engine's. Strict mode: all
147 cases (146 plus the GOAWAY-before-close check of 5.4.1/2). The binary is
the copy in ``tests/tools/h2spec/`` (README there);
``H2SPEC`` names another. ``test_server_h2spec.py`` runs it against the real
server.
"""

from __future__ import annotations

from .conformance_server import start
from .server_support import run_h2spec


async def test_h2spec_strict_passes_every_case() -> None:
    server = await start()
    port = server.sockets[0].getsockname()[1]
    try:
        summary, failures = await run_h2spec(port, "-S")
    finally:
        server.close()
        await server.wait_closed()
    assert summary == (147, 147, 0, 0), failures
