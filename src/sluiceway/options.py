"""Command-line and environment options (``--env-file`` itself: ``sluiceway.envfile``).

``OPTIONS`` is the single table of options: each row names its flag, its
``SLUICEWAY_*`` variable, the ``Config`` field it sets and how its text is
parsed, so the CLI, the environment and docs/usage.md cannot drift apart.
Precedence: defaults < environment < argv. A value that does not parse, or
that ``Config`` rejects, gives a ``ConfigError`` naming the flag or the
variable it came from, never the dataclass field.

Imports only the standard library, ``sluiceway.config`` and ``sluiceway.errors``.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sluiceway.config import (
    LOG_LEVELS,
    Config,
    InvalidField,
    check_header,
    check_trusted_address,
    config_from_options,
)
from sluiceway.errors import ConfigError

ENV_PREFIX = "SLUICEWAY_"

# --- Parsing option text (argv and environment) --------------------------------------------


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


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        lowered = text.strip().lower()
        if lowered not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return lowered

    return parse


def _text(text: str) -> str:
    return text


OptionKind = Literal["value", "flag", "switch", "append"]


@dataclass(frozen=True, slots=True)
class Option:
    """One command-line option and the ``SLUICEWAY_*`` variable that mirrors it.

    ``kind``: ``value`` takes an argument; ``flag`` is a bare ``--x`` that sets
    True; ``switch`` is a ``--x/--no-x`` pair; ``append`` repeats (its variable
    holds one entry per line).
    """

    flag: str
    field: str
    parse: Callable[[str], Any]
    help: str
    kind: OptionKind = "value"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    # uvicorn's unprefixed variable (WEB_CONCURRENCY, FORWARDED_ALLOW_IPS),
    # read when ours is not set, so a uvicorn deployment keeps working.
    fallback_env: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag.removeprefix("--").upper().replace("-", "_")


_SIZE_HELP = " (bytes; k/m/g suffixes allowed)"

OPTIONS: tuple[Option, ...] = (
    Option("--host", "host", _text, "Bind to this address.", metavar="ADDRESS"),
    Option("--port", "port", parse_int, "TCP port (0: any free port).", metavar="PORT"),
    Option("--uds", "uds", _text, "Bind to this Unix domain socket path.", metavar="PATH"),
    Option("--fd", "fd", parse_int, "Serve on this inherited listening socket.", metavar="FD"),
    Option("--backlog", "backlog", parse_int, "Listen backlog (pending connections).", metavar="N"),
    Option(
        "--root-path",
        "root_path",
        _text,
        "ASGI root_path when mounted below a prefix.",
        metavar="PATH",
    ),
    Option(
        "--lifespan",
        "lifespan",
        _choice("auto", "on", "off"),
        "Lifespan protocol: auto tolerates apps without it.",
        choices=("auto", "on", "off"),
    ),
    Option("--factory", "factory", parse_bool, "APP is a factory: call it for the app.", "flag"),
    Option(
        "--app-dir",
        "app_dir",
        _text,
        "Look for the app module in this directory first.",
        metavar="DIR",
    ),
    Option(
        "--env-file",
        "env_file",
        _text,
        "Load KEY=VALUE lines into the environment first.",
        metavar="PATH",
    ),
    Option(
        "--loop",
        "loop",
        _choice("auto", "asyncio", "uvloop"),
        "Event loop: auto uses uvloop when installed.",
        choices=("auto", "asyncio", "uvloop"),
    ),
    Option(
        "--http",
        "http",
        _choice("auto", "httptools"),
        "HTTP/1.1 parser: httptools (llhttp), the only one; auto is the same.",
        choices=("auto", "httptools"),
    ),
    Option(
        "--interface",
        "interface",
        _choice("auto", "asgi3", "asgi2", "wsgi"),
        "How to call APP: auto detects ASGI 3 or 2; wsgi serves a WSGI app.",
        choices=("auto", "asgi3", "asgi2", "wsgi"),
    ),
    Option(
        "--timeout-keep-alive",
        "keep_alive_timeout_s",
        parse_float,
        "Close idle keep-alive connections after this many seconds.",
        metavar="SECONDS",
    ),
    Option(
        "--timeout-graceful-shutdown",
        "graceful_shutdown_timeout_s",
        parse_float,
        "On shutdown, cancel requests still running after this many seconds.",
        metavar="SECONDS",
    ),
    Option(
        "--timeout-request-headers",
        "request_headers_timeout_s",
        parse_float,
        "Close a connection whose request head takes longer than this.",
        metavar="SECONDS",
    ),
    Option(
        "--timeout-request-body",
        "request_body_timeout_s",
        parse_float,
        "Answer 408 to a request body that makes no progress for this long (0: off).",
        metavar="SECONDS",
    ),
    Option(
        "--timeout-lifespan-startup",
        "lifespan_startup_timeout_s",
        parse_float,
        "Fail if lifespan startup takes longer than this.",
        metavar="SECONDS",
    ),
    Option(
        "--timeout-lifespan-shutdown",
        "lifespan_shutdown_timeout_s",
        parse_float,
        "Stop waiting for lifespan shutdown after this.",
        metavar="SECONDS",
    ),
    Option(
        "--limit-request-body",
        "max_request_body_bytes",
        parse_size,
        "Answer 413 to request bodies larger than this" + _SIZE_HELP + ".",
        metavar="BYTES",
    ),
    Option(
        "--limit-request-headers",
        "max_request_headers_bytes",
        parse_size,
        "Answer 431 to request heads larger than this" + _SIZE_HELP + ".",
        metavar="BYTES",
    ),
    Option(
        "--limit-request-line",
        "max_request_line_bytes",
        parse_size,
        "Answer 414 to request lines longer than this" + _SIZE_HELP + ".",
        metavar="BYTES",
    ),
    Option(
        "--limit-concurrency",
        "limit_concurrency",
        parse_int,
        "Answer 503 while this many requests are in flight.",
        metavar="N",
    ),
    Option(
        "--limit-max-requests",
        "limit_max_requests",
        parse_int,
        "Stop gracefully after serving this many requests (workers are replaced).",
        metavar="N",
    ),
    Option(
        "--limit-max-requests-jitter",
        "limit_max_requests_jitter",
        parse_int,
        "Add a random 0..N to --limit-max-requests, so workers do not stop together.",
        metavar="N",
    ),
    Option("--ssl-certfile", "ssl_certfile", _text, "TLS certificate (PEM).", metavar="PATH"),
    Option("--ssl-keyfile", "ssl_keyfile", _text, "TLS private key (PEM).", metavar="PATH"),
    Option(
        "--ssl-keyfile-password",
        "ssl_keyfile_password",
        _text,
        "Password of the TLS private key.",
        metavar="PASSWORD",
    ),
    Option(
        "--ssl-ca-certs",
        "ssl_ca_certs",
        _text,
        "CA bundle that client certificates are verified against.",
        metavar="PATH",
    ),
    Option(
        "--ssl-cert-reqs",
        "ssl_cert_reqs",
        parse_cert_reqs,
        "Client certificates: none, optional or required (or 0, 1, 2).",
        metavar="REQS",
    ),
    Option(
        "--ssl-ciphers",
        "ssl_ciphers",
        _text,
        "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's).",
        metavar="CIPHERS",
    ),
    Option(
        "--log-level",
        "log_level",
        _choice(*LOG_LEVELS),
        "Log level of the sluiceway loggers (default info; with --log-config, the "
        "file's levels unless this is given).",
        choices=LOG_LEVELS,
    ),
    Option(
        "--log-config",
        "log_config",
        _text,
        "Logging config applied over the defaults: .json or .yaml/.yml (dictConfig; "
        "YAML needs PyYAML), else .ini (fileConfig).",
        metavar="FILE",
    ),
    Option("--access-log", "access_log", parse_bool, "Log one line per response.", "switch"),
    Option(
        "--use-colors",
        "use_colors",
        parse_bool,
        "Colour the server log's level names (default: when stderr is a terminal).",
        "switch",
    ),
    Option("--server-header", "server_header", parse_bool, "Send a Server header.", "switch"),
    Option("--date-header", "date_header", parse_bool, "Send a Date header.", "switch"),
    Option(
        "--header",
        "headers",
        parse_header,
        "Add this header to every response (repeatable).",
        "append",
        metavar="NAME:VALUE",
    ),
    Option(
        "--workers",
        "workers",
        parse_int,
        "Run this many worker processes on the same sockets.",
        metavar="N",
        fallback_env="WEB_CONCURRENCY",
    ),
    Option(
        "--reload", "reload", parse_bool, "Restart the server when a watched file changes.", "flag"
    ),
    Option(
        "--reload-dir",
        "reload_dirs",
        _text,
        "Watch this directory with --reload (repeatable; default: the current one).",
        "append",
        metavar="DIR",
    ),
    Option(
        "--reload-include",
        "reload_includes",
        _text,
        "Also watch files matching this glob with --reload (repeatable).",
        "append",
        metavar="GLOB",
    ),
    Option(
        "--reload-exclude",
        "reload_excludes",
        _text,
        "Ignore files matching this glob with --reload (repeatable).",
        "append",
        metavar="GLOB",
    ),
    Option(
        "--reload-delay",
        "reload_delay_s",
        parse_float,
        "Seconds between two checks of the watched files with --reload.",
        metavar="SECONDS",
    ),
    Option(
        "--proxy-headers",
        "proxy_headers",
        parse_bool,
        "Take client address and scheme from X-Forwarded-For/-Proto of trusted proxies.",
        "switch",
    ),
    Option(
        "--forwarded-allow-ips",
        "forwarded_allow_ips",
        parse_address_list,
        "Comma-separated proxy addresses or networks to trust ('*': all).",
        metavar="LIST",
        fallback_env="FORWARDED_ALLOW_IPS",
    ),
    Option(
        "--ws",
        "ws",
        _choice("auto", "none"),
        "WebSocket support: auto, or none to refuse upgrades.",
        choices=("auto", "none"),
    ),
    Option(
        "--ws-max-size",
        "ws_max_size_bytes",
        parse_size,
        "Largest WebSocket message accepted" + _SIZE_HELP + ".",
        metavar="BYTES",
    ),
    Option(
        "--ws-max-queue",
        "ws_max_queue",
        parse_int,
        "WebSocket messages buffered for the app before reading pauses.",
        metavar="N",
    ),
    Option(
        "--ws-ping-interval",
        "ws_ping_interval_s",
        parse_float,
        "Send a WebSocket ping every this many seconds, traffic or not (0: never).",
        metavar="SECONDS",
    ),
    Option(
        "--ws-ping-timeout",
        "ws_ping_timeout_s",
        parse_float,
        "Close a WebSocket whose pong takes longer than this (0: do not wait).",
        metavar="SECONDS",
    ),
    Option(
        "--ws-per-message-deflate",
        "ws_per_message_deflate",
        parse_bool,
        "Offer permessage-deflate compression (true or false).",
        metavar="BOOL",
    ),
    Option(
        "--http2",
        "http2",
        parse_bool,
        "Serve HTTP/2 (ALPN h2 on TLS; prior knowledge and Upgrade: h2c in cleartext).",
        "switch",
    ),
    Option(
        "--h2-max-concurrent-streams",
        "h2_max_concurrent_streams",
        parse_int,
        "HTTP/2 streams one connection may have open at once.",
        metavar="N",
    ),
    Option(
        "--h2-initial-window-size",
        "h2_initial_window_size",
        parse_size,
        "HTTP/2 receive window per stream: request body a client may send unread"
        + _SIZE_HELP
        + ".",
        metavar="SIZE",
    ),
    Option(
        "--h2-max-inbound-frame-size",
        "h2_max_inbound_frame_size",
        parse_size,
        "Largest HTTP/2 frame payload accepted (16384..16777215)" + _SIZE_HELP + ".",
        metavar="SIZE",
    ),
    Option(
        "--h2-max-header-list-size",
        "h2_max_header_list_size",
        parse_size,
        "Largest decoded HTTP/2 request header list; past it, 431" + _SIZE_HELP + ".",
        metavar="SIZE",
    ),
)


BY_FIELD: dict[str, Option] = {option.field: option for option in OPTIONS}


def options_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Field values from ``SLUICEWAY_*`` variables (empty ones are ignored).

    Raises:
        ConfigError: naming the variable whose value does not parse.
    """
    return _from_env(environ)[0]


def _from_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Field values, and for each field the variable it was read from."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for option in OPTIONS:
        raw = environ.get(option.env)
        name = option.env
        if (raw is None or not raw.strip()) and option.fallback_env is not None:
            raw, name = environ.get(option.fallback_env), option.fallback_env
        if raw is None or not raw.strip():
            continue
        try:
            if option.kind == "append":
                lines = [line for line in raw.splitlines() if line.strip()]
                values[option.field] = tuple(option.parse(line) for line in lines)
            else:
                values[option.field] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"invalid value for {name}: {exc}") from None
        names[option.field] = name
    return values, names


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


def config_from_sources(args: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Defaults, overridden by the environment, overridden by argv.

    Raises:
        ConfigError: a value that does not parse or that ``Config`` rejects,
            named as the user gave it: the flag, or the variable.
    """
    values, names = _from_env(environ)
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
