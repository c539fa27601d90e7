"""``--reload`` with either watcher: watchfiles (inotify) and polling behave the same.

The watcher tests run each backend through ``make_watcher``; watchfiles
reports from a thread, so they collect ``changes()`` until a sentinel file
shows up (bounded), which also proves that ignored files, touched before
the sentinel, were never reported. The supervisor tests force each backend
with ``--reload-backend`` and check that a burst of saves is one restart.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from sluiceway.errors import ConfigError
from sluiceway.server.reload import FileWatcher, Watcher, WatchfilesWatcher, make_watcher
from tests.server.serving import TIMEOUT_S, cli_server
from tests.server.test_reload import APP, body, touch, tree, wait_body

BACKENDS = ("poll", "watchfiles")


def collect(watcher: Watcher, until: Path) -> set[str]:
    """Everything ``changes()`` reports until ``until`` is among it (polls, bounded)."""
    seen: set[str] = set()
    deadline = time.monotonic() + TIMEOUT_S
    while str(until) not in seen:
        assert time.monotonic() < deadline, f"{until} never reported; saw {sorted(seen)}"
        seen.update(watcher.changes())
        if str(until) not in seen:
            time.sleep(0.05)  # the next poll of a watcher that reports in the background
    return seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_changed_added_removed_and_ignored_files(tmp_path: Path, backend: str) -> None:
    tree(tmp_path)
    watcher = make_watcher([str(tmp_path)], backend=backend)  # type: ignore[arg-type]
    try:
        assert watcher.changes() == []  # the baseline (and, for watchfiles, the start)
        touch(tmp_path / "app.py", "x = 2\n")
        touch(tmp_path / "pkg" / "mod.py", "x = 2\n")
        (tmp_path / "new.py").write_text("")
        (tmp_path / "vendor" / "lib.py").unlink()
        # Not watched by default: other suffixes, dot files and dirs, backups, bytecode.
        for name in ("notes.txt", ".hidden.py", "~backup.py", ".git/hooks.py"):
            touch(tmp_path / name, "changed")
        touch(tmp_path / "pkg" / "__pycache__" / "mod.cpython-311.pyc", "changed")
        sentinel = tmp_path / "pkg" / "sentinel.py"
        sentinel.write_text("")
        expected = {"app.py", "pkg/mod.py", "new.py", "vendor/lib.py", "pkg/sentinel.py"}
        assert collect(watcher, sentinel) == {str(tmp_path / name) for name in expected}
    finally:
        watcher.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_includes_and_excludes(tmp_path: Path, backend: str) -> None:
    tree(tmp_path)
    watcher = make_watcher(
        [str(tmp_path)],
        includes=["*.txt"],
        excludes=["vendor", "pkg/*"],
        backend=backend,  # type: ignore[arg-type]
    )
    try:
        watcher.changes()
        for name in ("notes.txt", "vendor/lib.py", "pkg/mod.py", "app.py"):
            touch(tmp_path / name, "changed")
        sentinel = tmp_path / "sentinel.py"
        sentinel.write_text("")
        expected = {tmp_path / "app.py", tmp_path / "notes.txt", sentinel}
        assert collect(watcher, sentinel) == {str(path) for path in expected}
    finally:
        watcher.close()


def test_both_watchers_accept_the_same_files(tmp_path: Path) -> None:
    tree(tmp_path)
    (tmp_path / "vendor" / "deep").mkdir()
    (tmp_path / "vendor" / "deep" / "x.txt").write_text("")
    for includes, excludes in (((), ()), (("*.txt",), ("vendor", "pkg/*")), ((".*",), ("*.py",))):
        walked = {path for path, _ in FileWatcher([str(tmp_path)], includes, excludes).files()}
        events = WatchfilesWatcher([str(tmp_path)], includes, excludes)
        every = {str(p) for p in tmp_path.rglob("*") if p.is_file()}
        assert {path for path in every if events.accepts(path)} == walked, (includes, excludes)
    assert not events.accepts("/elsewhere/app.py")


def test_backend_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert isinstance(make_watcher([str(tmp_path)]), WatchfilesWatcher)  # installed: auto uses it
    assert isinstance(make_watcher([str(tmp_path)], backend="poll"), FileWatcher)
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # as if not installed
    assert isinstance(make_watcher([str(tmp_path)]), FileWatcher)
    with pytest.raises(ConfigError, match="watchfiles is not installed"):
        make_watcher([str(tmp_path)], backend="watchfiles")


def test_a_missing_dir_is_not_watched(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    watcher = WatchfilesWatcher([str(tmp_path / "a"), str(tmp_path / "missing")])
    try:
        watcher.changes()
        touch(tmp_path / "a" / "x.py", "y = 1")
        assert collect(watcher, tmp_path / "a" / "x.py") == {str(tmp_path / "a" / "x.py")}
    finally:
        watcher.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_burst_of_saves_is_one_restart(tmp_path: Path, backend: str) -> None:
    module = tmp_path / "reload_app.py"
    module.write_text(APP.format(body=b"v1"))
    helpers = [tmp_path / "helper_a.py", tmp_path / "helper_b.py"]
    for helper in helpers:
        helper.write_text("")
    args = ["reload_app:app", "--reload", "--port", "0", "--app-dir", str(tmp_path)]
    args += ["--reload-dir", str(tmp_path), "--reload-backend", backend, "--reload-delay", "0.25"]
    async with cli_server(*args, cwd=tmp_path) as proc:
        await proc.wait_for_line(r"Worker 0 \(pid \d+\) ready")
        label = "watchfiles" if backend == "watchfiles" else "polling"
        assert f"Watching for changes in {tmp_path} ({label})" in proc.text
        assert await body(proc) == "v1"
        # One save of three files (an editor's "save all", a git checkout).
        touch(module, APP.format(body=b"v2"))
        for helper in helpers:
            touch(helper, "x = 1\n")
        await wait_body(proc, "v2")
        reloads = [line for line in proc.stderr if "Detected changes in" in line]
        assert len(reloads) == 1, proc.text
        assert all(name in reloads[0] for name in ("reload_app.py", "helper_a.py", "helper_b.py"))
        touch(module, APP.format(body=b"v3"))
        await wait_body(proc, "v3")
        assert sum("Detected changes in" in line for line in proc.stderr) == 2, proc.text
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_unknown_backend_is_a_usage_error(tmp_path: Path) -> None:
    args = ["reload_app:app", "--reload", "--reload-backend", "fsevents"]
    async with cli_server(*args, cwd=tmp_path, wait_listening=False) as proc:
        assert await proc.wait_exit() == 2
    assert "fsevents" in proc.text
