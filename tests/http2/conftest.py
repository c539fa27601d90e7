"""Run every async HTTP/2 test on both event loops the server supports, as tests/http1 does.

Except ``test_h2spec.py``: its bare engine wrapper (``conformance_server.py``)
asserts an ``asyncio.Transport``, which uvloop's transports are not; it tests
the sans-I/O engine, which no loop touches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from tests.http1.conftest import pytest_asyncio_loop_factories as both_loops


def pytest_asyncio_loop_factories(
    config: Any, item: Any
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    factories = both_loops(config, item)
    if item.path.name == "test_h2spec.py":
        return {"asyncio": factories["asyncio"]}
    return factories
