"""Logging set-up for the CLI and ``sluiceway.run``: levels, loggers, safe formatting.

Loggers: ``sluiceway.error`` (server events, app tracebacks; also the parent
``sluiceway`` that module loggers propagate to) writes to stderr, and
``sluiceway.access`` (one line per response) to stdout. Both are ordinary
``logging`` loggers: an embedding program configures them as it likes and
simply does not call ``configure_logging``.

``TRACE`` (5) sits below DEBUG for wire dumps, registered with
``logging.addLevelName`` so it prints as ``TRACE``.

``SafeFormatter`` escapes every control character (C0, DEL, C1: newlines and
ANSI escapes included) in the formatted message, so nothing that reaches a log
line from a client can start a new line or colour a terminal. Tracebacks keep
their newlines but lose every other control character.

Imports only the standard library.
"""

from __future__ import annotations

import logging
import logging.config
import re
from typing import Any

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

LEVELS: dict[str, int] = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _hex(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def escape_control(text: str) -> str:
    """Replace each control character with its ``\\xNN`` escape."""
    return _CONTROL.sub(_hex, text)


class SafeFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose output no logged value can forge or colour."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return _CONTROL_BUT_NEWLINE.sub(_hex, super().formatException(ei))


def logging_dict(log_level: str = "info", access_log: bool = True) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` dict ``configure_logging`` applies."""
    level = LEVELS[log_level]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "()": SafeFormatter,
                "fmt": "%(asctime)s [%(levelname)s] %(message)s",
            },
            "access": {"()": SafeFormatter, "fmt": "%(asctime)s %(message)s"},
        },
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "sluiceway": {"handlers": ["default"], "level": level, "propagate": False},
            "sluiceway.error": {"level": level, "propagate": True},
            "sluiceway.access": {
                "handlers": ["access"] if access_log else [],
                # Off means off, whatever the level: the protocol checks this
                # logger's level once per connection, not per response.
                "level": level if access_log else logging.CRITICAL + 1,
                "propagate": False,
            },
        },
    }


def configure_logging(log_level: str = "info", access_log: bool = True) -> None:
    """Install sluiceway's handlers and levels (the CLI and ``run()`` call this)."""
    logging.config.dictConfig(logging_dict(log_level, access_log))
