"""tests/django again, on the oldest Django the ``django`` extra accepts (4.2).

The suite itself runs on the newest Django pip picks for this Python. sluiceway.django
promises ``django>=4.2``, where Django's ASGI handler differs (no ``Signal.asend``, no
disconnect listener: ``get_asgi_application()`` keeps Django's own handler there,
docs/django.md note 13), so the floor is tested too: pip puts Django 4.2 in a directory
of its own, and a child pytest runs tests/django with that directory first on its path
(sluiceway and the test tools come from this environment). Its failures are printed in
the assertion.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OLDEST = "django>=4.2,<5.0"


@pytest.mark.timeout(600)
def test_tests_django_pass_on_the_oldest_supported_django(tmp_path: Path) -> None:
    if os.environ.get("SLUICEWAY_CHILD_SUITE"):
        pytest.skip("already the child suite")
    # pip --target and PYTHONPATH, not a virtual environment: a venv made from inside
    # another venv would not see the packages installed in the outer one.
    target = tmp_path / "oldest"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--target",
            str(target),
            OLDEST,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    path = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "SLUICEWAY_CHILD_SUITE": "1"}
    version = subprocess.run(
        [sys.executable, "-c", "import django; print(django.get_version())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert version.startswith("4.2."), version
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/django"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    summary = suite.stdout.strip().splitlines()[-1] if suite.stdout.strip() else ""
    assert suite.returncode == 0, f"Django {version}: {summary}\n{suite.stdout[-6000:]}"
    assert " passed" in summary and "failed" not in summary, summary
