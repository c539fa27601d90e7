"""Reading one option's value: text from argv or the environment, and uvicorn's Python forms.

The parsers (``parse_*``, ``choice``) turn the text a user typed into a
field's value or raise ``ValueError`` with the reason, which the caller
(``sluiceway.option_sources``) names with the flag or variable it came from.
The ``*_value`` converters take the Python values uvicorn's ``Config()`` and
``run()`` keywords accept where they differ from the field's (a logging level
number, ``None`` for "off", a comma-separated string). ``sluiceway.options``
names one of each per row.

Imports only the standard library, ``sluiceway.config`` and ``sluiceway.errors``.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Callable
from typing import Any

from sluiceway.config import (
    LOG_LEVELS,
    LOOP_NAMES,
    SSL_VERSIONS,
    check_header,
    check_trusted_address,
)
from sluiceway.errors import ConfigError


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text!r} is not a finite number")
    return value


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not true or false")


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
    """Bytes, with an optional binary suffix: ``65536``, ``64k``, ``10MiB``, ``1g``."""
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size in bytes (e.g. 65536, 64k, 10m)")
    unit = match.group(2)
    return int(match.group(1)) * (_SIZE_UNITS[unit[0].lower()] if unit else 1)


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def parse_cert_reqs(text: str) -> int:
    """uvicorn's integers (0, 1, 2) or the names none/optional/required."""
    lowered = text.strip().lower()
    if lowered in _CERT_REQS:
        return int(_CERT_REQS[lowered])
    if lowered in ("0", "1", "2"):
        return int(lowered)
    raise ValueError(f"{text!r} is not one of none, optional, required (or 0, 1, 2)")


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not NAME:VALUE")
    name, value = name.strip(), value.strip()
    try:
        check_header(name, value)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return name, value


def parse_address_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of addresses, networks or ``*`` (``--forwarded-allow-ips``)."""
    entries = tuple(entry.strip() for entry in text.split(",") if entry.strip())
    for entry in entries:
        try:
            check_trusted_address(entry)
        except ConfigError as exc:
            raise ValueError(str(exc).partition(": ")[2]) from None
    return entries


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return lowered

    return parse


def as_text(text: str) -> str:
    return text


def parse_loop(text: str) -> str:
    """``--loop``: uvicorn's ``zuvloop`` (a uvloop fork) gets its own reason."""
    if text.strip().lower() == "zuvloop":
        raise ValueError("'zuvloop' is not supported: sluiceway runs on asyncio or uvloop (auto)")
    return choice(*LOOP_NAMES)(text)


# ssl.PROTOCOL_* numbers (uvicorn's --ssl-version takes them) and names.
_SSL_VERSIONS = {
    str(int(ssl.PROTOCOL_TLS_SERVER)): "auto",
    str(int(ssl.PROTOCOL_TLS)): "auto",
    "auto": "auto",
    "tls": "auto",
    "5": "TLSv1.2",  # ssl.PROTOCOL_TLSv1_2 (deprecated in Python, so spelled out)
    "tlsv1.2": "TLSv1.2",
    "tlsv1_2": "TLSv1.2",
    "tlsv1.3": "TLSv1.3",
    "tlsv1_3": "TLSv1.3",
}
# RFC 8996 deprecates TLS 1.0 and 1.1: refused, with that reason.
_OLD_TLS = frozenset({"3", "4", "tlsv1", "tlsv1.0", "tlsv1_0", "tlsv1.1", "tlsv1_1"})


def parse_ssl_version(text: str) -> str:
    """``--ssl-version``: uvicorn's ``ssl.PROTOCOL_*`` numbers, or auto/TLSv1.2/TLSv1.3."""
    lowered = text.strip().lower()
    if lowered in _OLD_TLS:
        raise ValueError(f"{text!r}: TLS 1.0 and 1.1 are deprecated (RFC 8996); 1.2 is the floor")
    if lowered not in _SSL_VERSIONS:
        raise ValueError(
            f"{text!r} is not one of {', '.join(SSL_VERSIONS)} (or uvicorn's 2, 5, 17)"
        )
    return _SSL_VERSIONS[lowered]


# --- Python values (Config() and run() keywords) -----------------------------------------

# logging's numbers, which uvicorn's log_level= takes too.
_LEVEL_NAMES = {logging.getLevelName(name.upper()): name for name in LOG_LEVELS if name != "trace"}
_LEVEL_NAMES[5] = "trace"


def log_level_value(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in _LEVEL_NAMES:
            raise ValueError(f"{value} is not a logging level ({', '.join(LOG_LEVELS)})")
        return _LEVEL_NAMES[value]
    return choice(*LOG_LEVELS)(value) if isinstance(value, str) else value


def ping_value(value: Any) -> Any:
    """uvicorn's ``None`` turns pings (or the wait for a pong) off: sluiceway's 0."""
    return 0.0 if value is None else value


def addresses_value(value: Any) -> Any:
    """uvicorn takes one comma-separated string or a list."""
    if isinstance(value, str):
        return parse_address_list(value)
    return tuple(str(entry).strip() for entry in value)


def as_given(value: Any) -> Any:
    return value


def ssl_version_value(value: Any) -> Any:
    return parse_ssl_version(str(int(value)) if isinstance(value, int) else str(value))
