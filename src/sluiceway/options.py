"""Command-line and environment options (``--env-file`` itself: ``sluiceway.envfile``).

``OPTIONS`` is the single table of options: each row names its flag, its
``SLUICEWAY_*`` variable, the ``Config`` field it sets and how its text is
parsed, so the CLI, the environment, the Python keywords and docs/usage.md
cannot drift apart. Precedence: defaults < environment < argv. A value that
does not parse, or that ``Config`` rejects, gives a ``ConfigError`` naming
the flag or the variable it came from, never the dataclass field.

uvicorn's names come from the same rows: a row's uvicorn name is its flag's
(``--timeout-keep-alive``: ``timeout_keep_alive``), or its field's for a
repeatable option (``--reload-dir``: ``reload_dirs``), as uvicorn's click
parameters are named. That name is a Python keyword of ``Config()`` and
``run()`` (``keyword_values``) and, upper-cased after ``UVICORN_``, a variable
read where the ``SLUICEWAY_*`` one is not set (click's ``auto_envvar_prefix``).
``UVICORN_ONLY`` holds uvicorn's names that have no row, each with the
reason it is ignored or refused.

Reading a row's text is ``sluiceway.option_values``; putting the sources
together (argv, ``SLUICEWAY_*`` and ``UVICORN_*`` variables, Python keywords)
is ``sluiceway.option_sources``.

Imports only the standard library, ``sluiceway.config`` and ``sluiceway.option_values``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from sluiceway.config import HTTP_IMPLS, LOG_LEVELS, LOOP_NAMES, RELOAD_BACKENDS, WS_MODES
from sluiceway.option_values import (
    addresses_value,
    as_given,
    as_text,
    choice,
    log_level_value,
    parse_address_list,
    parse_bool,
    parse_cert_reqs,
    parse_float,
    parse_header,
    parse_int,
    parse_loop,
    parse_size,
    parse_ssl_version,
    ping_value,
    ssl_version_value,
)

ENV_PREFIX = "SLUICEWAY_"
UVICORN_ENV_PREFIX = "UVICORN_"

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
    # More flags for the same field (a uvicorn flag whose meaning is this one).
    aliases: tuple[str, ...] = ()
    # A Python value (a Config() or run() keyword) -> the field's value, where
    # uvicorn's differ from ours; None: see python_value().
    from_python: Callable[[Any], Any] | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.flag.removeprefix("--").upper().replace("-", "_")

    @property
    def uvicorn_names(self) -> tuple[str, ...]:
        """uvicorn's click parameter names: its keyword arguments and ``UVICORN_*`` variables."""
        if self.kind == "append":
            return (self.field,)
        return tuple(flag[2:].replace("-", "_") for flag in (self.flag, *self.aliases))

    @property
    def uvicorn_envs(self) -> tuple[str, ...]:
        return tuple(UVICORN_ENV_PREFIX + name.upper() for name in self.uvicorn_names)


_SIZE_HELP = " (bytes; k/m/g suffixes allowed)"

OPTIONS: tuple[Option, ...] = (
    Option("--host", "host", as_text, "Bind to this address.", metavar="ADDRESS"),
    Option("--port", "port", parse_int, "TCP port (0: any free port).", metavar="PORT"),
    Option("--uds", "uds", as_text, "Bind to this Unix domain socket path.", metavar="PATH"),
    Option("--fd", "fd", parse_int, "Serve on this inherited listening socket.", metavar="FD"),
    Option("--backlog", "backlog", parse_int, "Listen backlog (pending connections).", metavar="N"),
    Option(
        "--root-path",
        "root_path",
        as_text,
        "ASGI root_path when mounted below a prefix.",
        metavar="PATH",
    ),
    Option(
        "--lifespan",
        "lifespan",
        choice("auto", "on", "off"),
        "Lifespan protocol: auto tolerates apps without it.",
        choices=("auto", "on", "off"),
    ),
    Option("--factory", "factory", parse_bool, "APP is a factory: call it for the app.", "flag"),
    Option(
        "--app-dir",
        "app_dir",
        as_text,
        "Look for the app module in this directory first.",
        metavar="DIR",
    ),
    Option(
        "--env-file",
        "env_file",
        as_text,
        "Load KEY=VALUE lines into the environment first.",
        metavar="PATH",
    ),
    Option(
        "--loop",
        "loop",
        parse_loop,
        "Event loop: auto uses uvloop when installed (none: asyncio, as uvicorn's).",
        choices=LOOP_NAMES,
    ),
    Option(
        "--http",
        "http",
        choice(*HTTP_IMPLS),
        "HTTP/1.1 engine: sluiceway's own (httptools); uvicorn's names mean it too.",
        choices=HTTP_IMPLS,
    ),
    Option(
        "--interface",
        "interface",
        choice("auto", "asgi3", "asgi2", "wsgi"),
        "How to call APP: auto detects ASGI 3 or 2; wsgi serves a WSGI app.",
        choices=("auto", "asgi3", "asgi2", "wsgi"),
    ),
    Option(
        "--reset-contextvars",
        "reset_contextvars",
        parse_bool,
        "Run each request in a new, empty contextvars context.",
        "flag",
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
        # h11's bound on a head still arriving is this one.
        aliases=("--h11-max-incomplete-event-size",),
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
    Option("--ssl-certfile", "ssl_certfile", as_text, "TLS certificate (PEM).", metavar="PATH"),
    Option("--ssl-keyfile", "ssl_keyfile", as_text, "TLS private key (PEM).", metavar="PATH"),
    Option(
        "--ssl-keyfile-password",
        "ssl_keyfile_password",
        as_text,
        "Password of the TLS private key.",
        metavar="PASSWORD",
    ),
    Option(
        "--ssl-ca-certs",
        "ssl_ca_certs",
        as_text,
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
        as_text,
        "OpenSSL cipher list for TLS 1.2 (default: OpenSSL's).",
        metavar="CIPHERS",
    ),
    Option(
        "--ssl-version",
        "ssl_version",
        parse_ssl_version,
        "TLS version: auto (1.2 or 1.3), TLSv1.2 or TLSv1.3 (uvicorn's 2, 5, 17 too).",
        metavar="VERSION",
        from_python=ssl_version_value,
    ),
    Option(
        "--log-level",
        "log_level",
        choice(*LOG_LEVELS),
        "Log level of the sluiceway loggers (default info; with --log-config, the "
        "file's levels unless this is given).",
        choices=LOG_LEVELS,
        from_python=log_level_value,
    ),
    Option(
        "--log-config",
        "log_config",
        as_text,
        "Logging config applied over the defaults: .json or .yaml/.yml (dictConfig; "
        "YAML needs PyYAML), else .ini (fileConfig).",
        metavar="FILE",
        from_python=as_given,  # a path object or a dictConfig dict, as it is
    ),
    Option("--access-log", "access_log", parse_bool, "Log one line per response.", "switch"),
    Option(
        "--metrics-port",
        "metrics_port",
        parse_int,
        "Serve GET /metrics (Prometheus text format) on this port (0: any free port).",
        metavar="PORT",
    ),
    Option(
        "--metrics-host",
        "metrics_host",
        as_text,
        "Address of the --metrics-port listener.",
        metavar="ADDRESS",
    ),
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
        as_text,
        "Watch this directory with --reload (repeatable; default: the current one).",
        "append",
        metavar="DIR",
    ),
    Option(
        "--reload-include",
        "reload_includes",
        as_text,
        "Also watch files matching this glob with --reload (repeatable).",
        "append",
        metavar="GLOB",
    ),
    Option(
        "--reload-exclude",
        "reload_excludes",
        as_text,
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
        "--reload-backend",
        "reload_backend",
        choice(*RELOAD_BACKENDS),
        "How --reload sees changes: watchfiles (inotify) when installed, or polling.",
        choices=RELOAD_BACKENDS,
    ),
    Option(
        "--timeout-worker-healthcheck",
        "timeout_worker_healthcheck_s",
        parse_float,
        "Replace a worker whose event loop does not answer a health check within this.",
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
        from_python=addresses_value,
    ),
    Option(
        "--ws",
        "ws",
        choice(*WS_MODES),
        "WebSocket support: none refuses upgrades; auto and uvicorn's engine names "
        "mean sluiceway's own.",
        choices=WS_MODES,
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
        from_python=ping_value,
    ),
    Option(
        "--ws-ping-timeout",
        "ws_ping_timeout_s",
        parse_float,
        "Close a WebSocket whose pong takes longer than this (0: do not wait).",
        metavar="SECONDS",
        from_python=ping_value,
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

# Python keyword -> its row: the field's name and uvicorn's names.
BY_KEYWORD: dict[str, Option] = {
    name: option for option in OPTIONS for name in (option.field, *option.uvicorn_names)
}

# uvicorn's Config()/run() keywords with no row here: (refused, why). An
# ignored one is a WARNING; a refused one a ConfigError, since what it asks
# for (a TLS context of the user's making) would silently not happen.
UVICORN_ONLY: dict[str, tuple[bool, str]] = {
    "callback_notify": (
        False,
        "uvicorn's hook for its old gunicorn worker's heartbeat; sluiceway.workers "
        "reports to gunicorn itself",
    ),
    "timeout_notify": (False, "it only paces callback_notify, which has no use here"),
    "ssl_context_factory": (
        True,
        "sluiceway builds the TLS context from the ssl_* options (ssl_version, "
        "ssl_ciphers, ssl_cert_reqs, ...)",
    ),
}
