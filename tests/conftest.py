"""Refuse to test stale compiled modules.

``pip install -e .`` compiles the hot-path modules with mypyc (setup.py) and
puts each extension beside its source; Python then imports the extension,
not the ``.py``. Edit a hot-path module without rebuilding and the tests
would run the old code, so the session stops and says what to do instead.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

import sluiceway

_PACKAGE = Path(sluiceway.__file__).resolve().parent


def _stale_extensions() -> list[str]:
    stale = []
    # Only this interpreter's extensions (".cpython-311-x86_64-linux-gnu.so"):
    # another Python's never load here.
    for extension in _PACKAGE.rglob("*" + EXTENSION_SUFFIXES[0]):
        source = extension.with_name(extension.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            stale.append(str(source.relative_to(_PACKAGE.parent)))
    return stale


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = _stale_extensions()
    if stale:
        pytest.exit(
            f"compiled module older than its source: {', '.join(sorted(stale))}; rebuild with"
            " `pip install -e .` (or `python setup.py build_ext --inplace`), or delete the .so"
            " files to test the pure-Python modules",
            returncode=2,
        )
