"""h2spec, the HTTP/2 conformance suite, against the sans-I/O engine alone.

``conformance_server`` wraps ``H2Connection`` in a bare asyncio protocol
(no ASGI, no HTTP/1.1), so a failure here is the engine's. Strict mode: all
147 cases (146 plus the GOAWAY-before-close check of 5.4.1/2). The binary is
the project's build (``/work/shared/h2spec``, README beside it); ``H2SPEC``
names another.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

import pytest

from .conformance_server import start

H2SPEC = Path(os.environ.get("H2SPEC", "/work/shared/h2spec/h2spec"))


@pytest.mark.skipif(not H2SPEC.exists(), reason=f"h2spec binary not found at {H2SPEC}")
async def test_h2spec_strict_passes_every_case() -> None:
    server = await start()
    port = server.sockets[0].getsockname()[1]
    try:
        process = await asyncio.create_subprocess_exec(
            str(H2SPEC),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-S",
            "-o",
            "2",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 50)
    finally:
        server.close()
        await server.wait_closed()
    text = output.decode("utf-8", "replace")
    summary = re.search(r"(\d+) tests, (\d+) passed, (\d+) skipped, (\d+) failed", text)
    assert summary is not None, text[-2000:]
    total, passed, skipped, failed = map(int, summary.groups())
    assert (total, passed, skipped, failed) == (147, 147, 0, 0), text[text.find("Failures:") :]
