"""``--env-file``: dotenv-style parsing and loading into the environment.

The CLI loads the file before it reads any ``SLUICEWAY_*`` variable (the
file may set them); ``Server`` loads it again before importing an app given
as a string, for ``sluiceway.run("mod:app", env_file=...)``. Loading never
overrides a variable already set, so the second load changes nothing.

Imports only the standard library and ``sluiceway.errors``.
"""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping

from sluiceway.errors import ConfigError

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _unquote(raw: str, where: str) -> str:
    quote = raw[:1]
    if quote not in ("'", '"'):
        # Unquoted: an inline comment starts at " #".
        hash_at = raw.find(" #")
        return (raw[:hash_at] if hash_at >= 0 else raw).strip()
    # Find the closing quote; inside double quotes a backslash escapes the next character.
    end = 1
    while end < len(raw) and raw[end] != quote:
        end += 2 if quote == '"' and raw[end] == "\\" else 1
    if end >= len(raw):
        raise ConfigError(f"{where}: unterminated quoted value")
    tail = raw[end + 1 :].strip()
    if tail and not tail.startswith("#"):
        raise ConfigError(f"{where}: text after the closing quote")
    inner = raw[1:end]
    if quote == "'":
        return inner
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), inner)


def parse_env_file(text: str, source: str = "env file") -> dict[str, str]:
    """Parse dotenv-style text: ``KEY=VALUE`` lines, ``export``, quotes, ``#`` comments.

    Raises:
        ConfigError: with the file and line of the first malformed line.
    """
    result: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f"{source}:{number}: expected KEY=VALUE")
        result[match.group(1)] = _unquote(match.group(2), f"{source}:{number}")
    return result


def load_env_file(path: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Load ``path`` into the environment; variables already set keep their value.

    Raises:
        ConfigError: the file cannot be read or a line is malformed.
    """
    target = os.environ if environ is None else environ
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read env file {path!r}: {reason}") from None
    for key, value in parse_env_file(text, path).items():
        target.setdefault(key, value)
