"""Logging set-up for the CLI and ``sluiceway.run``: levels, loggers, safe formatting.

Loggers: ``sluiceway.error`` (server events, app tracebacks; also the parent
``sluiceway`` that module loggers propagate to) writes to stderr, and
``sluiceway.access`` (one line per response) to stdout. Both are ordinary
``logging`` loggers: an embedding program configures them as it likes and
simply does not call ``configure_logging``.

``TRACE`` (5) sits below DEBUG for wire dumps, registered with
``logging.addLevelName`` so it prints as ``TRACE``.

``SafeFormatter`` escapes every control character (C0, DEL, C1: newlines and
ANSI escapes included, and U+2028/U+2029) in the formatted message, so
nothing that reaches a log line from a client can start a new line or colour
a terminal. Tracebacks keep their newlines but lose every other control
character, and every line of a traceback is indented (``continuation_lines``):
an exception message is often request data, and one holding a newline would
otherwise start a line of the client's choosing, one that can pass for a
record. The invariant: in a record, only its first line starts at column 0.
With ``use_colors`` the level name (ours, never a client's) is coloured, as
uvicorn's is; the default colours it only when stderr is a terminal.

A formatter from ``--log-config`` is not ours, so ``configure_logging`` also
installs a log-record factory (``SafeRecords``): a record from a
``sluiceway`` logger carries its traceback already rendered that way in
``exc_text``, which ``logging.Formatter`` and its subclasses print instead of
rendering their own. A formatter that renders ``exc_info`` itself (a JSON
one) is on its own; JSON escapes newlines anyway.

``--log-config FILE`` (``log_config=`` for ``run()``) is applied after the
defaults, so the user's file wins where it speaks and sluiceway's handlers
stay where it is silent: ``.json`` and ``.yaml``/``.yml`` go to
``dictConfig`` (YAML through PyYAML, when installed), anything else to
``fileConfig``. Neither disables the loggers that already exist unless the
file says so. An explicit ``log_level`` is applied on top, as uvicorn does,
and ``access_log=False`` keeps the access log off whatever the file says.
A file that is missing, unreadable or rejected by ``logging`` is a
one-line ``ConfigError``.

A file written for uvicorn works as written (``sluiceway.logconfig_uvicorn``):
each of uvicorn's loggers it configures configures the sluiceway logger that
plays its part the same way, and uvicorn's formatter classes are replaced by
ours (uvicorn need not be installed). ``configure_logging`` says once which
names it mapped.

Imports only the standard library and ``sluiceway.errors``; ``sluiceway.logconfig_uvicorn``
when a config file is applied.
"""

from __future__ import annotations

import configparser
import importlib
import json
import logging
import logging.config
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Mapping
from copy import copy
from typing import Any

from sluiceway.errors import ConfigError

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

# The access logger's level when --no-access-log: above every level, so the
# protocol's once-per-connection isEnabledFor() check is False.
_OFF = logging.CRITICAL + 1

# U+2028/U+2029 end a line for str.splitlines() and many log viewers.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")

# What starts every line of a record after its first.
CONTINUATION = "  "


def _hex(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """Replace each control character with its ``\\xNN`` escape (``\\u2028`` for those two)."""
    return _CONTROL.sub(_hex, text)


def continuation_lines(text: str) -> str:
    """``text`` (a traceback) made safe to follow a record's first line.

    Control characters other than newline are escaped, and every line is
    indented by ``CONTINUATION`` (empty lines stay empty), so no line of it,
    not even an exception message's own second line, starts where a record
    does. Indentation, not a marker: it is how log shippers' multiline rules
    (and people) already tell a continuation from a new record.
    """
    text = _CONTROL_BUT_NEWLINE.sub(_hex, text)
    return "\n".join(CONTINUATION + line if line else line for line in text.split("\n"))


LEVEL_COLOURS = {
    TRACE: "\x1b[34m",  # blue
    logging.DEBUG: "\x1b[36m",  # cyan
    logging.INFO: "\x1b[32m",  # green
    logging.WARNING: "\x1b[33m",  # yellow
    logging.ERROR: "\x1b[31m",  # red
    logging.CRITICAL: "\x1b[1;31m",  # bold red
}
RESET = "\x1b[0m"


class SafeFormatter(logging.Formatter):
    """A ``logging.Formatter`` whose output no logged value can forge or colour.

    ``use_colors`` colours the level name, which the server chose; the
    message is escaped either way.
    """

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Any = "%",
        validate: bool = True,
        *,
        use_colors: bool = False,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(fmt, datefmt, style, validate, defaults=defaults)
        self.use_colors = use_colors

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info:
            # Render the traceback ourselves: exc_text may be another
            # handler's formatter's cached, unescaped rendering.
            record = copy(record)
            record.exc_text = None
        return super().format(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_control(record.message)
        colour = LEVEL_COLOURS.get(record.levelno) if self.use_colors else None
        if colour is not None:
            record = copy(record)  # other handlers format the same record
            record.levelname = colour + record.levelname + RESET
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return continuation_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return continuation_lines(super().formatStack(stack_info))


_PLAIN = logging.Formatter()


class SafeRecords:
    """A log-record factory: records from ``sluiceway`` loggers carry a safe traceback.

    Wraps the factory in place; ``exc_text`` is set when the record is made
    (``continuation_lines``), so whatever ``logging.Formatter`` a
    ``--log-config`` file names prints it instead of Python's raw rendering.
    Records from other loggers are untouched.
    """

    def __init__(self, make: Callable[..., logging.LogRecord]) -> None:
        self.make = make

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.make(*args, **kwargs)
        name = record.name
        if record.exc_info and (name == "sluiceway" or name.startswith("sluiceway.")):
            record.exc_text = continuation_lines(_PLAIN.formatException(record.exc_info))
        return record

    @classmethod
    def install(cls) -> None:
        """Wrap the current log-record factory, once."""
        current = logging.getLogRecordFactory()
        if not isinstance(current, cls):
            logging.setLogRecordFactory(cls(current))


def logging_dict(
    log_level: str = "info", access_log: bool = True, use_colors: bool | None = None
) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` dict ``configure_logging`` applies."""
    level = LEVELS[log_level]
    if use_colors is None:
        use_colors = sys.stderr.isatty()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "default": {
                "()": SafeFormatter,
                "fmt": "%(asctime)s [%(levelname)s] %(message)s",
                "use_colors": use_colors,
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
                "level": level if access_log else _OFF,
                "propagate": False,
            },
        },
    }


def configure_logging(
    log_level: str | None = None,
    access_log: bool = True,
    log_config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    use_colors: bool | None = None,
) -> None:
    """Install sluiceway's handlers and levels, then ``log_config`` over them.

    The CLI, ``run()`` and each worker process call this. It also installs
    ``SafeRecords`` (see the module docstring), whatever the config.

    Args:
        log_level: one of ``LEVELS``; None is ``info`` without a
            ``log_config``, and leaves the file's levels alone with one.
        access_log: False keeps ``sluiceway.access`` silent whatever the
            file says.
        log_config: a file path (``.json``, ``.yaml``/``.yml``, else
            ``fileConfig``'s format) or a ``dictConfig`` dict.
        use_colors: colour the server log's level names; None: when
            stderr is a terminal.

    Raises:
        ConfigError: one line: the file is missing, unreadable or not
            valid, YAML without PyYAML, or ``logging`` rejected the config.
    """
    SafeRecords.install()
    logging.config.dictConfig(logging_dict(log_level or "info", access_log, use_colors))
    if log_config is None:
        return
    mapped = apply_log_config(log_config)
    if log_level is not None:
        level = LEVELS[log_level]
        logging.getLogger("sluiceway").setLevel(level)
        logging.getLogger("sluiceway.error").setLevel(level)
        if access_log:
            logging.getLogger("sluiceway.access").setLevel(level)
    if not access_log:
        logging.getLogger("sluiceway.access").setLevel(_OFF)
    if mapped and multiprocessing.parent_process() is None:
        from sluiceway.logconfig_uvicorn import UVICORN_LOGGERS

        # Once per server, not once per worker: the supervisor (the CLI
        # process) has said it before any worker starts.
        logging.getLogger("sluiceway.error").info(
            "--log-config: applied the settings of uvicorn's loggers to sluiceway's: %s",
            ", ".join(f"{name} -> {UVICORN_LOGGERS[name]}" for name in mapped),
        )


def apply_log_config(source: str | os.PathLike[str] | Mapping[str, Any]) -> list[str]:
    """Apply a logging config file or ``dictConfig`` dict (see the module docstring).

    Returns:
        The uvicorn logger names the file configured, each applied to its
        sluiceway logger too (``UVICORN_LOGGERS``); empty for a file
        written for sluiceway.

    Raises:
        ConfigError: as ``configure_logging``.
    """
    from sluiceway.logconfig_uvicorn import uvicorn_ini

    if isinstance(source, Mapping):
        return _dict_config(source, "the log_config dict")
    path = os.fspath(source)
    where = f"--log-config {path!r}"
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read it: {_reason(exc)}") from None
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: not valid JSON: {_one_line(str(exc))}") from None
        return _dict_config(data, where)
    if suffix in (".yaml", ".yml"):
        return _dict_config(_load_yaml(text, where), where)
    try:
        parser = configparser.ConfigParser()
        parser.read_string(text, path)
        mapped = uvicorn_ini(parser)
        logging.config.fileConfig(parser, disable_existing_loggers=False)
    except Exception as exc:  # configparser, KeyError, ImportError...: all the file's fault
        raise ConfigError(f"{where}: rejected by logging: {_reason(exc)}") from None
    return mapped


def _load_yaml(text: str, where: str) -> Any:
    try:
        # Not a dependency: only a YAML config needs it (as uvicorn).
        yaml: Any = importlib.import_module("yaml")
    except ImportError:
        raise ConfigError(f"{where}: a YAML config needs PyYAML (pip install pyyaml)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {_one_line(str(exc))}") from None


def _dict_config(data: object, where: str) -> list[str]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must hold a dictConfig mapping, not {type(data).__name__}")
    from sluiceway.logconfig_uvicorn import uvicorn_compatible

    config, mapped = uvicorn_compatible(data)
    # The defaults made the sluiceway loggers already: a file that does not
    # name them must not silence them (dictConfig's own default would).
    config.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(config)
    except Exception as exc:  # dictConfig wraps most in ValueError; a "()" may raise anything
        raise ConfigError(f"{where}: rejected by logging: {_reason(exc)}") from None
    return mapped


def _reason(exc: BaseException) -> str:
    """``exc`` and what caused it, on one line (dictConfig hides the cause in ``__cause__``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in str(exc):
        text += f" ({type(cause).__name__}: {cause})"
    return _one_line(text)


def _one_line(text: str) -> str:
    return " ".join(text.split())
