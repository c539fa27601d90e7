"""Find changed files for ``--reload``: watchfiles (inotify) when installed, else polling.

Two watchers with one interface, ``changes()``: the paths added, removed or
modified since the last call, sorted (the first call only starts watching and
returns []). The supervisor calls it every ``--reload-delay`` seconds and
restarts the worker once for whatever the call returned, so a burst of saves
between two calls is one restart, whichever watcher runs.
``make_watcher(..., backend)`` picks one: ``auto`` (watchfiles if it imports,
as uvicorn does), ``watchfiles`` or ``poll``.

* ``FileWatcher`` walks the watched directories and compares modification
  times and sizes: no dependency, no platform API, but its cost grows with
  the tree (bench/reload_poll.py measures it; docs/usage.md has the number).
* ``WatchfilesWatcher`` lets watchfiles' Rust notifier (inotify on Linux,
  FSEvents on macOS) report events in a daemon thread, which adds the
  matching paths to a set that ``changes()`` takes; its cost does not depend
  on the tree's size. Directories that do not exist when it starts are not
  watched. If the notifier fails (the inotify watch limit, say) it logs a
  WARNING and polls from then on.

Which files count follows uvicorn: ``*.py`` is watched; names starting with a
dot, compiled files and editor swap files (``.*``, ``*.py[cod]``, ``.sw.*``,
``~*``) are not. ``--reload-include`` adds patterns to the first list and
``--reload-exclude`` to the second; a pattern the user names moves it out of
the other default list (``--reload-include .env`` watches dotenv files). A
pattern is matched with ``fnmatch`` against a file's name and its path
relative to the watched directory; directories matching an exclude (``.git``,
``.venv``) and ``__pycache__`` are not entered (for watchfiles: events under
them are dropped). Both watchers apply the same ``accepts`` rules.

Imports the standard library, ``sluiceway.config`` (a type), ``sluiceway.errors`` and,
on demand, watchfiles.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from sluiceway.config import ReloadBackend
from sluiceway.errors import ConfigError

logger = logging.getLogger("sluiceway.error")

DEFAULT_INCLUDES: tuple[str, ...] = ("*.py",)
DEFAULT_EXCLUDES: tuple[str, ...] = (".*", "*.py[cod]", ".sw.*", "~*")
_SKIPPED_DIRS = frozenset({"__pycache__"})
# How long the watchfiles thread waits for events before it yields (to say it
# is watching, the first time); and how long changes() waits for that.
_WATCHFILES_TICK_MS = 200
_WATCHFILES_START_S = 30.0

Stamp = tuple[int, int]  # (st_mtime_ns, st_size): a same-size save in the same tick still shows


def resolve_patterns(
    includes: Iterable[str], excludes: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The effective (includes, excludes) after merging the user's with the defaults."""
    extra_in, extra_out = tuple(includes), tuple(excludes)
    merged_in = [p for p in DEFAULT_INCLUDES if p not in extra_out] + list(extra_in)
    merged_out = [p for p in DEFAULT_EXCLUDES if p not in extra_in] + list(extra_out)
    return tuple(dict.fromkeys(merged_in)), tuple(dict.fromkeys(merged_out))


def _matches(name: str, relative: str, patterns: tuple[str, ...]) -> bool:
    return any(
        fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(relative, pattern) for pattern in patterns
    )


class Watcher(Protocol):
    dirs: tuple[str, ...]
    backend: str

    def changes(self) -> list[str]: ...

    def close(self) -> None: ...


def make_watcher(
    dirs: Iterable[str],
    includes: Iterable[str] = (),
    excludes: Iterable[str] = (),
    backend: ReloadBackend = "auto",
) -> Watcher:
    """The watcher ``backend`` names; ``auto`` is watchfiles when it imports, else polling.

    Raises:
        ConfigError: ``backend`` is ``watchfiles`` and watchfiles does not import.
    """
    if backend == "poll":
        return FileWatcher(dirs, includes, excludes)
    try:
        import watchfiles  # noqa: F401  # only whether it imports
    except ImportError:
        if backend == "watchfiles":
            raise ConfigError("--reload-backend watchfiles: watchfiles is not installed") from None
        return FileWatcher(dirs, includes, excludes)
    return WatchfilesWatcher(dirs, includes, excludes)


class _Patterns:
    """The watched dirs and the include/exclude rules both watchers apply."""

    backend = ""

    def __init__(
        self, dirs: Iterable[str], includes: Iterable[str], excludes: Iterable[str]
    ) -> None:
        self.dirs = tuple(dict.fromkeys(os.path.abspath(d) for d in dirs)) or (os.getcwd(),)
        self.includes, self.excludes = resolve_patterns(includes, excludes)

    def accepts(self, path: str) -> bool:
        """Whether a change to ``path`` counts: the walk's rules, for one path."""
        for root in self.dirs:
            if path.startswith(os.path.join(root, "")):
                break
        else:
            return False
        parts = os.path.relpath(path, root).split(os.sep)
        for depth, name in enumerate(parts[:-1], 1):
            if name in _SKIPPED_DIRS or _matches(name, "/".join(parts[:depth]), self.excludes):
                return False
        name, relative = parts[-1], "/".join(parts)
        return _matches(name, relative, self.includes) and not _matches(
            name, relative, self.excludes
        )

    def close(self) -> None:
        """Stop watching (a no-op for polling)."""


class FileWatcher(_Patterns):
    """Polls the files under ``dirs``; see the module docstring."""

    backend = "polling"

    def __init__(
        self, dirs: Iterable[str], includes: Iterable[str] = (), excludes: Iterable[str] = ()
    ) -> None:
        super().__init__(dirs, includes, excludes)
        self._stamps: dict[str, Stamp] | None = None

    def files(self) -> Iterator[tuple[str, Stamp]]:
        """Every watched file with its stamp (files that vanish mid-walk are skipped)."""
        for root in self.dirs:
            yield from self._walk(root, root)

    def _walk(self, root: str, directory: str) -> Iterator[tuple[str, Stamp]]:
        try:
            entries = list(os.scandir(directory))
        except OSError:  # removed, or not readable: nothing to watch there
            return
        for entry in entries:
            relative = os.path.relpath(entry.path, root).replace(os.sep, "/")
            try:
                if entry.is_dir(follow_symlinks=False):
                    if entry.name in _SKIPPED_DIRS or _matches(entry.name, relative, self.excludes):
                        continue
                    yield from self._walk(root, entry.path)
                elif _matches(entry.name, relative, self.includes) and not _matches(
                    entry.name, relative, self.excludes
                ):
                    info = entry.stat()
                    yield entry.path, (info.st_mtime_ns, info.st_size)
            except OSError:
                continue

    def changes(self) -> list[str]:
        """Paths added, removed or modified since the last call, sorted; [] on the first."""
        current = dict(self.files())
        previous, self._stamps = self._stamps, current
        if previous is None:
            return []
        changed = {path for path, stamp in current.items() if previous.get(path) != stamp}
        changed.update(path for path in previous if path not in current)
        return sorted(changed)


class WatchfilesWatcher(_Patterns):
    """Reports what watchfiles' notifier sees under ``dirs``; see the module docstring."""

    backend = "watchfiles"

    def __init__(
        self, dirs: Iterable[str], includes: Iterable[str] = (), excludes: Iterable[str] = ()
    ) -> None:
        super().__init__(dirs, includes, excludes)
        self._patterns = (tuple(includes), tuple(excludes))  # for a fallback poller
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        self._stop = threading.Event()
        self._watching = threading.Event()
        self._thread: threading.Thread | None = None
        self._fallback: FileWatcher | None = None

    def changes(self) -> list[str]:
        """Paths changed since the last call, sorted; [] on the first, which starts watching."""
        if self._thread is None:
            self._start()
            return []
        with self._lock:
            changed, self._changed = self._changed, set()
            fallback = self._fallback
        if fallback is not None:
            changed.update(fallback.changes())
        return sorted(changed)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(_WATCHFILES_START_S)

    def _start(self) -> None:
        existing = [d for d in self.dirs if os.path.isdir(d)]
        self._thread = threading.Thread(
            target=self._run, args=(existing,), name="sluiceway-reload", daemon=True
        )
        if not existing:
            return  # nothing to watch; the poller would see nothing either
        self._thread.start()
        # Watching starts when the notifier is set up (its first yield): an
        # edit made after this first call must be seen.
        self._watching.wait(_WATCHFILES_START_S)

    def _run(self, dirs: list[str]) -> None:
        from watchfiles import watch

        try:
            for batch in watch(
                *dirs,
                watch_filter=self._accepts_change,
                stop_event=self._stop,
                rust_timeout=_WATCHFILES_TICK_MS,
                yield_on_timeout=True,
                raise_interrupt=False,
            ):
                self._watching.set()
                if batch:
                    with self._lock:
                        self._changed.update(path for _, path in batch)
        except Exception as exc:  # the notifier's own errors: its OSError, RuntimeError
            fallback = FileWatcher(self.dirs, *self._patterns)
            fallback.changes()  # its baseline: what changed until now is lost
            with self._lock:
                self._fallback = fallback
            logger.warning("watchfiles stopped (%s): polling for changes instead.", exc)
        finally:
            self._watching.set()

    def _accepts_change(self, change: Any, path: str) -> bool:
        return self.accepts(path)
