"""The version is defined once (``sluiceway.__version__``) and ``--version`` says what runs.

``sluiceway --version`` prints one fact per line: sluiceway's version with the
Python implementation, version and OS; uvloop's and httptools' versions; and
whether the hot path is compiled (mypyc) or pure Python, as the server's start
line says (issue #18).
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import sluiceway
from sluiceway.server.hosting import hot_path_build

ROOT = Path(__file__).resolve().parents[2]


def version_lines(*args: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-m", "sluiceway", *args, "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.splitlines()


def test_version_names_python_uvloop_httptools_and_the_build() -> None:
    lines = version_lines()
    python = re.escape(f"{sys.implementation.name.replace('cpython', 'CPython')}")
    assert re.fullmatch(
        rf"sluiceway {re.escape(sluiceway.__version__)} \({python} [\d.]+\S* on \w+\)", lines[0]
    ), lines
    assert lines[1:] == [
        f"uvloop {version('uvloop')}",
        f"httptools {version('httptools')}",
        f"hot path: {hot_path_build()}",
    ]


def test_the_run_command_prints_the_same_version() -> None:
    assert version_lines("run") == version_lines()


def test_the_version_is_defined_only_in_the_package() -> None:
    # pyproject.toml reads it from sluiceway.__version__; no second copy to forget.
    project = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^dynamic = \["version"\]$', project, re.M)
    assert re.search(r'^version = \{ attr = "sluiceway.__version__" \}$', project, re.M)
    assert not re.search(r"^version = \"", project, re.M)
    assert version("sluiceway") == sluiceway.__version__
