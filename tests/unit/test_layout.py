"""The protocol side's layering, read from its import statements (TYPE_CHECKING, lazy ones too).

docs/design.md: what several protocols share sits below them in ``connection/``,
which imports no protocol and nothing of ``server/``; the protocols import
nothing of ``server/`` above them; HTTP/2 does not depend on HTTP/1.1 (HTTP/1.1
imports HTTP/2 only to hand a connection over). The WebSocket side's own rule
is tested in tests/websocket/test_carrier.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import sluiceway
from tests.support import imported_modules

SRC = Path(sluiceway.__file__).parent


def imports_into(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """``file: statement`` for every import in ``package`` of a module under ``forbidden``."""
    root = SRC / package
    found = []
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text())
        for module, node in imported_modules(tree, f"sluiceway.{package}"):
            parts = module.split(".")
            if parts[0] == "sluiceway" and len(parts) > 1 and parts[1] in forbidden:
                found.append(f"{package}/{path.name}: {ast.unparse(node)}")
    return sorted(set(found))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("connection", ("http1", "http2", "websocket", "server")),
        ("transport", ("http1", "http2", "websocket", "server")),
        ("http1", ("server",)),
        ("http2", ("server", "http1")),
        ("websocket", ("server",)),
    ],
)
def test_the_protocol_side_imports_only_downwards(package: str, forbidden: tuple[str, ...]) -> None:
    # The one exception, for types only: Shared.h2 holds HTTP/2's settings
    # (a value the listener builds), so shared.py names their type.
    allowed = {"connection/shared.py: from sluiceway.http2.config import H2Config"}
    assert [found for found in imports_into(package, forbidden) if found not in allowed] == []
