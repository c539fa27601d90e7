"""Logging configs written for uvicorn, on sluiceway: its logger names and formatter classes.

A ``--log-config`` file made for uvicorn configures the loggers ``uvicorn``,
``uvicorn.error`` and ``uvicorn.access`` and names uvicorn's formatter
classes. ``uvicorn_compatible`` (a ``dictConfig`` mapping) and
``uvicorn_ini`` (a ``fileConfig`` file) apply each such logger's settings to
the sluiceway logger that plays its part (``UVICORN_LOGGERS``) and put
``UvicornFormatter``/``UvicornAccessFormatter`` in place of uvicorn's
classes, so the file works whether or not uvicorn is installed (uvicorn's
own AccessFormatter could not format our records anyway: it unpacks
uvicorn's record args). ``sluiceway.logconfig.apply_log_config`` calls them.

Imports only the standard library and ``sluiceway.logconfig``.
"""

from __future__ import annotations

import configparser
import logging
import sys
from collections.abc import Mapping
from copy import copy
from http import HTTPStatus
from typing import Any, Final

from sluiceway.logconfig import LEVEL_COLOURS, RESET, SafeFormatter


class UvicornFormatter(SafeFormatter):
    """``uvicorn.logging.DefaultFormatter``'s equivalent, escaping as ``SafeFormatter``.

    Adds ``%(levelprefix)s`` (``INFO:`` padded to 9 columns, the level name
    coloured with ``use_colors``); ``use_colors=None`` colours when stdout is
    a terminal, as uvicorn's does. A ``--log-config`` file written for
    uvicorn gets this class wherever it names uvicorn's (see
    ``uvicorn_compatible``), whether or not uvicorn is installed.
    """

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        validate: bool = True,
        *,
        use_colors: bool | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        if use_colors is None:
            use_colors = sys.stdout.isatty()
        super().__init__(fmt, datefmt, style, validate, use_colors=use_colors, defaults=defaults)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record = copy(record)  # other handlers format the same record
        name = record.levelname
        colour = LEVEL_COLOURS.get(record.levelno) if self.use_colors else None
        shown = name if colour is None else colour + name + RESET
        record.__dict__["levelprefix"] = shown + ":" + " " * (8 - len(name))
        return super().formatMessage(record)


_STATUS_COLOURS = {1: "\x1b[97m", 2: "\x1b[32m", 3: "\x1b[33m", 4: "\x1b[31m", 5: "\x1b[91m"}


class UvicornAccessFormatter(UvicornFormatter):
    """``uvicorn.logging.AccessFormatter``'s equivalent, for ``sluiceway.access`` records.

    uvicorn's reads its fields from the record's ``args``; ours come as
    attributes (``accesslog``'s ``extra``): ``client_addr``,
    ``request_line`` (``GET /a?b=1 HTTP/1.1``, or ``WebSocket /chat``) and
    ``status_code``, which an int turns into ``200 OK`` here as uvicorn's
    does (a WebSocket's ``[accepted]``/``[closed 1000]`` stays as is). A
    record without them (another logger routed to this handler) shows
    ``-`` rather than failing.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record = copy(record)
        fields = record.__dict__
        fields.setdefault("client_addr", "-")
        fields.setdefault("request_line", "-")
        status = fields.setdefault("status_code", "-")
        if isinstance(status, int):
            try:
                text = f"{status} {HTTPStatus(status).phrase}"
            except ValueError:
                text = f"{status} "
            colour = _STATUS_COLOURS.get(status // 100) if self.use_colors else None
            fields["status_code"] = text if colour is None else colour + text + RESET
        if self.use_colors:
            fields["request_line"] = "\x1b[1m" + str(fields["request_line"]) + RESET
        return super().formatMessage(record)


# uvicorn's loggers, and the sluiceway logger that plays each one's part.
UVICORN_LOGGERS: Final = {
    "uvicorn": "sluiceway",
    "uvicorn.error": "sluiceway.error",
    "uvicorn.access": "sluiceway.access",
}
# uvicorn's formatter classes, and ours that stand in for them: uvicorn's
# AccessFormatter unpacks uvicorn's own access-record args, so it could not
# format ours even where uvicorn is installed.
UVICORN_FORMATTERS: Final = {
    "uvicorn.logging.ColourizedFormatter": "sluiceway.logconfig_uvicorn.UvicornFormatter",
    "uvicorn.logging.DefaultFormatter": "sluiceway.logconfig_uvicorn.UvicornFormatter",
    "uvicorn.logging.AccessFormatter": "sluiceway.logconfig_uvicorn.UvicornAccessFormatter",
}


def uvicorn_compatible(data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A ``dictConfig`` mapping written for uvicorn, made to configure sluiceway as well.

    Each logger of ``UVICORN_LOGGERS`` the mapping configures is configured
    the same way under its sluiceway name (the same handler objects, level
    and ``propagate``), unless the mapping names that sluiceway logger
    itself; the uvicorn loggers keep their settings too, for apps that log
    to ``uvicorn.error``. uvicorn's formatter classes become ours.

    Returns:
        The new mapping (``data`` is not changed) and the uvicorn names mapped.
    """
    config = dict(data)
    formatters = config.get("formatters")
    if isinstance(formatters, Mapping):
        config["formatters"] = {
            name: _substitute_formatter(spec) for name, spec in formatters.items()
        }
    loggers = config.get("loggers")
    mapped: list[str] = []
    if isinstance(loggers, Mapping):
        loggers = config["loggers"] = dict(loggers)
        for theirs, ours in UVICORN_LOGGERS.items():
            if theirs in loggers and ours not in loggers:
                spec = loggers[theirs]
                # A copy: dictConfig converts what it reads in place.
                loggers[ours] = dict(spec) if isinstance(spec, Mapping) else spec
                mapped.append(theirs)
    return config, mapped


def _substitute_formatter(spec: Any) -> Any:
    if not isinstance(spec, Mapping):
        return spec
    spec = dict(spec)
    for key in ("()", "class"):
        value = spec.get(key)
        if isinstance(value, str) and value in UVICORN_FORMATTERS:
            spec[key] = UVICORN_FORMATTERS[value]
    return spec


def uvicorn_ini(parser: configparser.ConfigParser) -> list[str]:
    """``uvicorn_compatible`` for a ``fileConfig`` file, in place; the names mapped."""
    for section in parser.sections():
        if section.startswith("formatter_"):
            value = parser.get(section, "class", raw=True, fallback="").strip()
            if value in UVICORN_FORMATTERS:
                parser.set(section, "class", UVICORN_FORMATTERS[value])
    if not parser.has_option("loggers", "keys"):
        return []
    keys = [key.strip() for key in parser.get("loggers", "keys", raw=True).split(",")]
    keys = [key for key in keys if key]
    names = {
        parser.get(f"logger_{key}", "qualname", raw=True, fallback="").strip(): key
        for key in keys
        if parser.has_section(f"logger_{key}")
    }
    mapped = []
    for theirs, ours in UVICORN_LOGGERS.items():
        if theirs in names and ours not in names:
            key = "sluiceway_as_" + names[theirs]
            section = f"logger_{key}"
            parser.add_section(section)
            for option, value in parser.items(f"logger_{names[theirs]}", raw=True):
                parser.set(section, option, value)
            parser.set(section, "qualname", ours)
            keys.append(key)
            mapped.append(theirs)
    parser.set("loggers", "keys", ",".join(keys))
    return mapped
