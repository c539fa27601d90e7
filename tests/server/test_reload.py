"""``--reload``: the file watcher on its own, then the supervisor restarting a real worker."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from sluiceway.server.reload import FileWatcher, resolve_patterns
from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server

APP = """
BODY = {body!r}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({{"type": "http.response.start", "status": 200, "headers": []}})
    await send({{"type": "http.response.body", "body": BODY}})
"""


def touch(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime forward, so even a coarse clock sees a change."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    stamp = max(before + 1_000_000_000, time.time_ns())
    os.utime(path, ns=(stamp, stamp))


def tree(root: Path) -> None:
    for name in (
        "app.py",
        "notes.txt",
        ".hidden.py",
        "~backup.py",
        "pkg/mod.py",
        "pkg/__pycache__/mod.cpython-311.pyc",
        ".git/hooks.py",
        "vendor/lib.py",
    ):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")


def test_watcher_reports_changed_added_and_removed_python_files(tmp_path: Path) -> None:
    tree(tmp_path)
    watcher = FileWatcher([str(tmp_path)])
    assert watcher.changes() == []  # the baseline
    assert watcher.changes() == []
    touch(tmp_path / "app.py", "x = 2\n")
    touch(tmp_path / "pkg" / "mod.py", "x = 2\n")
    assert watcher.changes() == [str(tmp_path / "app.py"), str(tmp_path / "pkg" / "mod.py")]
    (tmp_path / "new.py").write_text("")
    (tmp_path / "app.py").unlink()
    assert watcher.changes() == [str(tmp_path / "app.py"), str(tmp_path / "new.py")]
    # Not watched by default: other suffixes, dot files and dirs, backups, bytecode.
    for name in ("notes.txt", ".hidden.py", "~backup.py", ".git/hooks.py"):
        touch(tmp_path / name, "changed")
    touch(tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc", "changed")
    assert watcher.changes() == []


def test_includes_and_excludes(tmp_path: Path) -> None:
    tree(tmp_path)
    watcher = FileWatcher([str(tmp_path)], includes=["*.txt"], excludes=["vendor", "pkg/*"])
    watcher.changes()
    for name in ("notes.txt", "vendor/lib.py", "pkg/mod.py", "app.py"):
        touch(tmp_path / name, "changed")
    assert watcher.changes() == [str(tmp_path / "app.py"), str(tmp_path / "notes.txt")]


def test_naming_a_default_pattern_moves_it_out_of_the_other_list() -> None:
    includes, excludes = resolve_patterns([".*"], ["*.py"])
    assert includes == (".*",)
    assert excludes == ("*.py[cod]", ".sw.*", "~*", "*.py")


def test_default_dir_is_the_current_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert FileWatcher([]).dirs == (str(tmp_path.resolve()),)


def test_several_dirs_and_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.py").write_text("")
    watcher = FileWatcher([str(tmp_path / "a"), str(tmp_path / "missing")])
    watcher.changes()
    touch(tmp_path / "a" / "x.py", "y = 1")
    assert watcher.changes() == [str(tmp_path / "a" / "x.py")]


async def body(proc: CLIProcess) -> str:
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        return (await client.get(proc.address)).text


async def wait_body(proc: CLIProcess, expected: str, timeout: float = 10.0) -> None:
    """Poll until the server answers ``expected`` (a reload takes a worker start)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        last = await body(proc)
        if last == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"still {last!r}, not {expected!r}:\n{proc.text}")


async def test_changed_module_is_served_after_reload(tmp_path: Path) -> None:
    module = tmp_path / "reload_app.py"
    module.write_text(APP.format(body=b"v1"))
    args = ["reload_app:app", "--reload", "--port", "0", "--app-dir", str(tmp_path)]
    async with cli_server(*args, "--reload-dir", str(tmp_path), cwd=tmp_path) as proc:
        await proc.wait_for_line(r"Worker 0 \(pid \d+\) ready")
        assert f"Watching for changes in {tmp_path}" in proc.text
        assert await body(proc) == "v1"
        touch(module, APP.format(body=b"version-2"))
        await wait_body(proc, "version-2")
        assert "Detected changes in reload_app.py: reloading." in proc.text

        # A broken save: the worker fails and waits for the next change.
        touch(module, "def broken(:\n")
        await proc.wait_for_line("waiting for a file change to restart")
        touch(module, APP.format(body=b"fixed-3"))
        await wait_body(proc, "fixed-3")

        # The same size, saved within the same second: only the nanoseconds
        # differ, which a .pyc (whole seconds and size) cannot tell apart.
        second = module.stat().st_mtime_ns // 1_000_000_000 * 1_000_000_000
        os.utime(module, ns=(second + 100_000_000,) * 2)
        await wait_body(proc, "fixed-3")  # a reload for the stamp change, same code
        module.write_text(APP.format(body=b"fixed-4"))
        os.utime(module, ns=(second + 600_000_000,) * 2)
        await wait_body(proc, "fixed-4")

        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_missing_reload_dir_exits_2(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    args = ["reload_app:app", "--reload", "--port", "0", "--reload-dir", missing]
    async with cli_server(*args, cwd=tmp_path, wait_listening=False) as proc:
        assert await proc.wait_exit() == 2
    assert proc.stderr == [f"sluiceway: error: --reload-dir {missing!r}: not a directory"]
