"""Find changed files for ``--reload`` by polling modification times.

``FileWatcher(dirs, includes, excludes).changes()`` walks the watched
directories and returns the paths added, removed or modified since the last
call (the first call only takes the snapshot). The supervisor calls it about
once a second; a stat per file is cheap next to a developer's typing, and it
needs no dependency and no platform API (watchfiles would, for large trees).

Which files count follows uvicorn: ``*.py`` is watched; names starting with a
dot, compiled files and editor swap files (``.*``, ``*.py[cod]``, ``.sw.*``,
``~*``) are not. ``--reload-include`` adds patterns to the first list and
``--reload-exclude`` to the second; a pattern the user names moves it out of
the other default list (``--reload-include .env`` watches dotenv files). A
pattern is matched with ``fnmatch`` against a file's name and its path
relative to the watched directory; directories matching an exclude (``.git``,
``.venv``) and ``__pycache__`` are not entered.

Imports only the standard library.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Iterator

DEFAULT_INCLUDES: tuple[str, ...] = ("*.py",)
DEFAULT_EXCLUDES: tuple[str, ...] = (".*", "*.py[cod]", ".sw.*", "~*")
_SKIPPED_DIRS = frozenset({"__pycache__"})

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


class FileWatcher:
    """Polls the files under ``dirs``; see the module docstring."""

    def __init__(
        self, dirs: Iterable[str], includes: Iterable[str] = (), excludes: Iterable[str] = ()
    ) -> None:
        self.dirs = tuple(dict.fromkeys(os.path.abspath(d) for d in dirs)) or (os.getcwd(),)
        self.includes, self.excludes = resolve_patterns(includes, excludes)
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
