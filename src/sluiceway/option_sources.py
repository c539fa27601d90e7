"""Where option values come from: argv, the environment, and Python keywords.

Precedence: defaults < environment < argv (``config_from_sources``, the
CLI's); ``Config()`` and ``run()`` keywords (``keyword_values``). Each source
is read through the rows of ``sluiceway.options.OPTIONS``, so an error names
what the user typed: the flag, the ``SLUICEWAY_*`` or ``UVICORN_*``
variable, or the keyword, with the nearest known name when it is unknown.
``UVICORN_*`` variables apply where the ``SLUICEWAY_*`` one is not set; the
lines saying so are returned as ``notes`` for the caller to log once logging
is set up.

Imports only the standard library, ``sluiceway.config``,
``sluiceway.errors``, ``sluiceway.options`` and ``sluiceway.option_values``.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from typing import Any

from sluiceway.config import Config, InvalidField, config_from_options
from sluiceway.errors import ConfigError
from sluiceway.options import (
    BY_FIELD,
    BY_KEYWORD,
    OPTIONS,
    UVICORN_ENV_PREFIX,
    UVICORN_ONLY,
    Option,
)

# A message for the log, said once logging is set up: (level, text).
Note = tuple[int, str]

_logger = logging.getLogger("sluiceway.error")


def nearest(name: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or nothing."""
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def keyword_values(options: Mapping[str, Any]) -> dict[str, Any]:
    """Field values from ``Config()``/``run()`` keywords: field names or uvicorn's.

    Raises:
        ConfigError: one line: an unknown name with the nearest known one
            (``unknown option 'timeout_keepalive' (did you mean
            'timeout_keep_alive'?)``), two names for one field, a refused
            uvicorn keyword with its reason, or a value that does not convert.
    """
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for name, value in options.items():
        option = BY_KEYWORD.get(name)
        if option is None:
            if name in _FIELDS:  # a field with no row (extra)
                values[name] = value
                continue
            if name in UVICORN_ONLY:
                refused, why = UVICORN_ONLY[name]
                if refused:
                    raise ConfigError(f"option {name!r} is not supported: {why}")
                _logger.warning("Option %r is ignored: %s.", name, why)
                continue
            known = sorted({*BY_KEYWORD, *_FIELDS})
            raise ConfigError(f"unknown option {name!r}{nearest(name, known)}")
        if option.field in given:
            raise ConfigError(
                f"options {given[option.field]!r} and {name!r} are the same setting; give one"
            )
        given[option.field] = name
        try:
            converted = python_value(option, value)
        except ValueError as exc:
            if name == option.field:  # named as Config names its own refusals
                raise InvalidField(name, str(exc)) from None
            raise ConfigError(f"invalid value for {name}: {exc}") from None
        if converted is not _DEFAULT:
            values[option.field] = converted
    return values


_FIELDS = frozenset(item.name for item in Config.__dataclass_fields__.values()) - {"app"}
_DEFAULT = object()  # python_value(): "leave the field at its default"


def python_value(option: Option, value: Any) -> Any:
    """A keyword's value as the field takes it.

    uvicorn's Python forms: ``None`` for "the default" (``workers=None``,
    ``timeout_graceful_shutdown=None``: sluiceway's bound stays), a path
    object, a list for a repeatable option or a single string; choices
    case-insensitive. Anything else is passed on for ``Config`` to check.
    """
    if option.from_python is not None:
        return option.from_python(value)
    if value is None:
        return None if Config.__dataclass_fields__[option.field].default is None else _DEFAULT
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if option.kind == "append":
        items = [value] if isinstance(value, str) else list(value)
        return tuple(_append_item(option, item) for item in items)
    if option.choices is not None and isinstance(value, str):
        return option.parse(value)
    if option.choices is not None:
        raise ValueError(f"expected one of {', '.join(option.choices)}, got {value!r}")
    return value


def _append_item(option: Option, item: Any) -> Any:
    if isinstance(item, os.PathLike):
        return os.fspath(item)
    if isinstance(item, str):
        return option.parse(item)
    return tuple(item) if isinstance(item, list) else item


def options_from_env(environ: Mapping[str, str], notes: list[Note] | None = None) -> dict[str, Any]:
    """Field values from ``SLUICEWAY_*`` variables, else ``UVICORN_*`` ones (empty: ignored).

    Raises:
        ConfigError: naming the variable whose value does not parse.
    """
    return _from_env(environ, notes)[0]


def _is_set(raw: str | None) -> bool:
    return raw is not None and bool(raw.strip())


def _from_env(
    environ: Mapping[str, str], notes: list[Note] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Field values, and for each field the variable it was read from.

    Per row: ``SLUICEWAY_*``, else uvicorn's ``UVICORN_*`` (said in ``notes``,
    by name only: a value may be a password), else its ``fallback_env``.
    """
    notes = [] if notes is None else notes
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for option in OPTIONS:
        name = option.env
        uvicorn = [env for env in option.uvicorn_envs if _is_set(environ.get(env))]
        if _is_set(environ.get(name)):
            notes.extend((logging.INFO, f"{env} is ignored: {name} is set") for env in uvicorn)
        elif uvicorn:
            name = uvicorn[0]
            notes.append((logging.INFO, f"{name} applied, as {option.env} ({option.flag})"))
        elif option.fallback_env is not None:
            name = option.fallback_env
        raw = environ.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            if option.kind == "append":
                # Ours: one entry per line; uvicorn's (click): split on whitespace.
                split = raw.split() if name in option.uvicorn_envs else raw.splitlines()
                lines = [line for line in split if line.strip()]
                values[option.field] = tuple(option.parse(line) for line in lines)
            else:
                values[option.field] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value for {name}: {exc}") from None
        names[option.field] = name
    known = {env for option in OPTIONS for env in option.uvicorn_envs}
    for env in sorted(environ):
        if env.startswith(UVICORN_ENV_PREFIX) and env not in known:
            notes.append((logging.WARNING, f"{env} is ignored: {_unknown_env_reason(env)}"))
    return values, names


def _unknown_env_reason(env: str) -> str:
    name = env.removeprefix(UVICORN_ENV_PREFIX).lower()
    if name in UVICORN_ONLY:
        return UVICORN_ONLY[name][1]
    return "sluiceway has no such uvicorn option" + nearest(
        env, sorted({e for option in OPTIONS for e in option.uvicorn_envs})
    )


def engine_notes(config: Config) -> list[str]:
    """One line per uvicorn engine name in ``config``: sluiceway's own engine serves it."""
    lines = []
    if config.http != "auto":
        lines.append(
            f"--http {config.http}: uvicorn's engine choice; sluiceway serves HTTP/1.1 with "
            "its own engine (httptools' llhttp parser)"
        )
    if config.ws not in ("auto", "none"):
        lines.append(
            f"--ws {config.ws}: uvicorn's engine choice; sluiceway serves WebSockets with "
            "its own RFC 6455 engine"
        )
    return lines


def options_from_args(given: Mapping[str, Any]) -> dict[str, Any]:
    """Field values from parsed argv: ``given`` maps a field to its raw text(s).

    Switches and flags arrive as booleans already; text goes through the
    option's parser, and an error names the flag.
    """
    values: dict[str, Any] = {}
    for name, raw in given.items():
        option = BY_FIELD[name]
        try:
            if option.kind == "append":
                values[name] = tuple(option.parse(item) for item in raw)
            elif isinstance(raw, bool):
                values[name] = raw
            else:
                values[name] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value for {option.flag}: {exc}") from None
    return values


def config_from_sources(
    args: Mapping[str, Any], environ: Mapping[str, str], notes: list[Note] | None = None
) -> Config:
    """Defaults, overridden by the environment, overridden by argv.

    ``notes`` gets the log lines about ``UVICORN_*`` variables, for the
    caller to log once logging is set up.

    Raises:
        ConfigError: a value that does not parse or that ``Config`` rejects,
            named as the user gave it: the flag, or the variable.
    """
    values, names = _from_env(environ, notes)
    from_args = options_from_args(args)
    values.update(from_args)
    try:
        return config_from_options(**values)
    except InvalidField as exc:
        option = BY_FIELD.get(exc.field_name)
        if option is None:  # a field with no option (none today): keep its name
            raise
        source = option.flag if exc.field_name in from_args else names.get(exc.field_name)
        raise ConfigError(f"{source or option.flag} {exc.problem}") from None
