"""The server's configuration: one frozen dataclass, validated on creation.

``Config`` is built by ``cli.py`` from argv and ``SLUICEWAY_*`` (or
uvicorn's ``UVICORN_*``) environment variables (``sluiceway.option_sources``
reads them), by ``sluiceway.run(app, **options)`` (``config_from_options``), or
by the user as uvicorn's is, ``Config(app, host=..., port=...)``, with field
names or uvicorn's keyword names (mapped by ``sluiceway.options.OPTIONS``,
imported only when a keyword is given). Names carry their units. Every
field has an immutable default, so ``Config()`` is a working server on
127.0.0.1:8000. Validation raises ``ConfigError`` with a
one-line message; the CLI prints it and exits with code 2.

A bad value of one field raises ``InvalidField``, which names the field as
``run()`` takes it (``limit_concurrency must be positive, got 0``) and keeps
the problem apart, so ``sluiceway.option_sources`` can say it again with the flag or
variable the user typed (``--limit-concurrency must be positive, got 0``).

Imports only the standard library and ``sluiceway.errors`` at module level;
``sluiceway.option_sources`` (which imports this module) inside ``Config()``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from sluiceway.errors import ConfigError

LifespanMode = Literal["auto", "on", "off"]
# uvicorn's engine names are taken and mean sluiceway's own engine (said once
# at start, sluiceway.option_sources.engine_notes); loop "none" is uvicorn's "the
# asyncio default", which is what sluiceway's asyncio choice is.
WSMode = Literal["auto", "none", "websockets", "websockets-sansio", "wsproto"]
WS_MODES: tuple[str, ...] = ("auto", "none", "websockets", "websockets-sansio", "wsproto")
LoopName = Literal["auto", "asyncio", "uvloop", "none"]
LOOP_NAMES: tuple[str, ...] = ("auto", "asyncio", "uvloop", "none")
HTTPImpl = Literal["auto", "httptools", "h11", "zttp"]
HTTP_IMPLS: tuple[str, ...] = ("auto", "httptools", "h11", "zttp")
# --ssl-version: auto negotiates TLS 1.2 or 1.3; the others pin one version.
SSLVersion = Literal["auto", "TLSv1.2", "TLSv1.3"]
SSL_VERSIONS: tuple[str, ...] = ("auto", "TLSv1.2", "TLSv1.3")
Interface = Literal["auto", "asgi3", "asgi2", "wsgi"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
ReloadBackend = Literal["auto", "watchfiles", "poll"]
RELOAD_BACKENDS: tuple[str, ...] = ("auto", "watchfiles", "poll")

# A logging config file (.json, .yaml/.yml, else fileConfig's .ini format) or,
# from Python (run(log_config=...)), a dictConfig dict; logconfig.py applies it.
LogConfigSource: TypeAlias = str | os.PathLike[str] | Mapping[str, Any]

LOG_LEVELS: tuple[str, ...] = ("critical", "error", "warning", "info", "debug", "trace")

# RFC 9110 §5.1 (field-name is a token) and §5.5 (no CR, LF or NUL in a value).
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE_CHARS = re.compile(r"[\x00\r\n]")


class InvalidField(ConfigError):
    """A bad value of one ``Config`` field.

    ``str()`` names the field (``limit_concurrency must be positive, got 0``),
    which is what a ``run()`` caller typed; ``sluiceway.option_sources`` rebuilds the
    message from ``problem`` with the flag or variable a CLI user typed.
    """

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name} {problem}")
        self.field_name = field_name
        self.problem = problem

    def __reduce__(self) -> tuple[type[InvalidField], tuple[str, str]]:
        return (InvalidField, (self.field_name, self.problem))


@dataclass(frozen=True, slots=True, init=False)
class Config:
    """The server's settings: ``Config(app, host=..., port=..., **options)``, as uvicorn's.

    Options take the field names below or uvicorn's keyword names
    (``timeout_keep_alive=5`` is ``keep_alive_timeout_s=5.0``): the
    ``sluiceway.options.OPTIONS`` rows say which name is which, and convert
    uvicorn's Python values (a list, a path, ``None`` for "the default").

    Args:
        app: the ASGI app or a ``"module:attribute"`` string, for
            ``Server(config)``; the CLI and ``run()`` pass it apart and leave
            this None.
        options: field names or uvicorn's keyword names.

    Raises:
        ConfigError: an unknown name (with the nearest known one) or a bad value.
    """

    # The app, as uvicorn's Config takes it; not part of equality.
    app: Any = field(default=None, compare=False, repr=False)

    # Where to listen: TCP host/port, a Unix socket path, or an inherited fd.
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    backlog: int = 2048

    # The application.
    root_path: str = ""
    lifespan: LifespanMode = "auto"
    factory: bool = False
    app_dir: str = "."
    env_file: str | None = None
    # How to call the app: auto detects ASGI 3 or 2; wsgi wraps a WSGI app
    # in sluiceway.wsgi.WsgiToAsgi (as uvicorn's --interface does).
    interface: Interface = "auto"
    # Run each request and WebSocket session in a new, empty contextvars
    # context (uvicorn's --reset-contextvars): nothing the program set before
    # the server started (instrumentation) is seen by a request.
    reset_contextvars: bool = False

    # Event loop: uvloop when it imports, else asyncio's (said once at start).
    loop: LoopName = "auto"
    # HTTP/1.1 parser: httptools (llhttp) is the only one; the option exists so
    # that uvicorn's "--http httptools" keeps working.
    http: HTTPImpl = "auto"

    # Timeouts, seconds.
    keep_alive_timeout_s: float = 5.0
    graceful_shutdown_timeout_s: float = 30.0
    request_headers_timeout_s: float = 10.0
    # A request body must make progress (1 KiB more of it) within this long,
    # or it ends with 408; 0 turns it off. Half nginx's client_body_timeout
    # (60 s); the decisions are in docs/http.md (Limits and timeouts).
    request_body_timeout_s: float = 30.0
    # A lifespan step that hangs must not hang the process (uvicorn waits
    # forever on startup); a minute covers slow migrations and pool warm-up.
    lifespan_startup_timeout_s: float = 60.0
    lifespan_shutdown_timeout_s: float = 30.0

    # Limits: bounds on a peer's memory that real clients never reach. The
    # request target may be as long as the whole header block (64 KiB, as an
    # AWS ALB passes; nginx stops at 8 KiB, Node at 16 KiB), because OAuth,
    # SAML and analytics URLs pass 8 KiB; docs/usage.md "Limits" compares peers.
    max_request_body_bytes: int | None = None
    max_request_headers_bytes: int = 64 * 1024
    max_request_line_bytes: int = 64 * 1024
    limit_concurrency: int | None = None
    # A worker (or the single server process) stops gracefully after serving
    # this many requests, plus a random 0..jitter so workers do not all stop
    # together; the supervisor starts a fresh one. None: no limit.
    limit_max_requests: int | None = None
    limit_max_requests_jitter: int = 0

    # TLS.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: int = int(ssl.CERT_NONE)
    # An OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are not set by it);
    # None keeps OpenSSL's default list.
    ssl_ciphers: str | None = None
    # Pin the TLS version (uvicorn's --ssl-version); auto: 1.2 or 1.3.
    ssl_version: SSLVersion = "auto"

    # Response headers.
    server_header: bool = True
    date_header: bool = True
    headers: tuple[tuple[str, str], ...] = ()

    # Logging. log_level None is "info", except that with a log_config the
    # file's own levels stand (an explicit level still applies on top).
    log_level: LogLevel | None = None
    access_log: bool = True
    log_config: LogConfigSource | None = None
    # Colour the level names of the server log; None: when stderr is a terminal.
    use_colors: bool | None = None

    # WebSocket (issue 5).
    ws: WSMode = "auto"
    ws_max_size_bytes: int = 16 * 1024 * 1024
    ws_max_queue: int = 32
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    ws_per_message_deflate: bool = True

    # HTTP/2 (issue 17): on by default, through ALPN "h2" on TLS and the
    # prior-knowledge preface or Upgrade: h2c in cleartext, on the HTTP/1.1
    # port. Names follow hypercorn's h2_* settings where they exist. Defaults
    # are for the open internet: 100 streams (RFC 9113 §6.5.2's floor for
    # what a server should allow, and what nginx, Go and hypercorn offer),
    # a 128 KiB stream window (docs/http2.md "Flow control and memory": the
    # connection's 1 MiB window bounds all streams), 16 KiB frames, and a header list
    # of 128 KiB: in HTTP/2 the target is a field (:path), so this is the
    # HTTP/1.1 line limit plus its fields limit (docs/usage.md "Limits").
    http2: bool = True
    h2_max_concurrent_streams: int = 100
    h2_initial_window_size: int = 128 * 1024
    h2_max_inbound_frame_size: int = 16384
    h2_max_header_list_size: int = 128 * 1024

    # Processes (server/supervisor.py): worker processes sharing the
    # listening sockets, or one worker restarted when a watched file changes.
    workers: int = 1
    reload: bool = False
    reload_dirs: tuple[str, ...] = ()
    reload_includes: tuple[str, ...] = ()
    reload_excludes: tuple[str, ...] = ()
    # Seconds between two looks at the watched files' modification times.
    reload_delay_s: float = 1.0
    # How --reload sees changes (server/reload.py): watchfiles (inotify) when
    # it is installed, as uvicorn does, else polling; either can be forced.
    reload_backend: ReloadBackend = "auto"
    # uvicorn's --timeout-worker-healthcheck (and default): each serving
    # worker's event loop must answer the supervisor's ping within this.
    timeout_worker_healthcheck_s: float = 5.0

    # Proxies (server/proxy_headers.py): uvicorn's defaults, on and trusting
    # only a proxy on the same host.
    proxy_headers: bool = True
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)

    # Metrics (server/metrics.py): GET /metrics in Prometheus text format on a
    # listener of its own; None: no metrics, and the hot path pays nothing.
    # Loopback by default, as the numbers are for the operator's scraper.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"

    # Extra knobs a later issue may need go here, never as mutable defaults.
    extra: tuple[tuple[str, Any], ...] = field(default=())

    def __init__(self, app: Any = None, /, **options: Any) -> None:
        if "app" in options:  # uvicorn's Config(app=...), and dataclasses.replace()
            if app is not None:
                raise ConfigError("the app is given twice")
            app = options.pop("app")
        if options:
            # Imported here: sluiceway.option_sources imports this module. Its rows
            # map uvicorn's names and values; field names pass through.
            from sluiceway.option_sources import keyword_values

            options = keyword_values(options)
        object.__setattr__(self, "app", app)
        for item in _SETTINGS:
            if item.name in options:
                _check_number(item.name, item.type, options[item.name])
            object.__setattr__(self, item.name, options.get(item.name, item.default))
        try:
            self.__post_init__()
        except TypeError as exc:  # e.g. comparing a str port with an int
            raise ConfigError(f"invalid option value: {exc}") from exc

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InvalidField("port", f"must be between 0 and 65535, got {self.port}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise InvalidField(
                "metrics_port", f"must be between 0 and 65535, got {self.metrics_port}"
            )
        if self.uds is not None and self.fd is not None:
            raise ConfigError("--uds and --fd cannot be used together")
        if self.fd is not None and self.fd < 0:
            raise InvalidField("fd", f"must not be negative, got {self.fd}")
        if self.backlog <= 0:
            raise InvalidField("backlog", f"must be positive, got {self.backlog}")
        _check_choice("lifespan", self.lifespan, ("auto", "on", "off"))
        _check_choice("loop", self.loop, LOOP_NAMES)
        _check_choice("http", self.http, HTTP_IMPLS)
        _check_choice("ssl_version", self.ssl_version, SSL_VERSIONS)
        _check_choice("interface", self.interface, ("auto", "asgi3", "asgi2", "wsgi"))
        _check_choice("ws", self.ws, WS_MODES)
        _check_choice("reload_backend", self.reload_backend, RELOAD_BACKENDS)
        if self.log_level is not None:
            _check_choice("log_level", self.log_level, LOG_LEVELS)
        if self.log_config is not None and not isinstance(
            self.log_config, (str, os.PathLike, Mapping)
        ):
            raise InvalidField(
                "log_config",
                f"must be a file path or a dictConfig dict, got {type(self.log_config).__name__}",
            )
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise InvalidField(
                "root_path", f"must start with '/' and not end with one, got {self.root_path!r}"
            )
        for name in (
            "keep_alive_timeout_s",
            "graceful_shutdown_timeout_s",
            "request_headers_timeout_s",
            "request_body_timeout_s",
            "lifespan_startup_timeout_s",
            "lifespan_shutdown_timeout_s",
            "ws_ping_interval_s",
            "ws_ping_timeout_s",
        ):
            if getattr(self, name) < 0:
                raise InvalidField(name, f"must not be negative, got {getattr(self, name)}")
        for name in (
            "max_request_headers_bytes",
            "max_request_line_bytes",
            "ws_max_size_bytes",
            "ws_max_queue",
            "h2_max_concurrent_streams",
            "h2_max_header_list_size",
        ):
            if getattr(self, name) <= 0:
                raise InvalidField(name, f"must be positive, got {getattr(self, name)}")
        # RFC 9113 §6.5.2: the legal ranges of the two settings.
        if not 1 <= self.h2_initial_window_size <= 2**31 - 1:
            raise InvalidField(
                "h2_initial_window_size",
                f"must be in 1..2147483647, got {self.h2_initial_window_size}",
            )
        if not 16384 <= self.h2_max_inbound_frame_size <= 16777215:
            raise InvalidField(
                "h2_max_inbound_frame_size",
                f"must be in 16384..16777215, got {self.h2_max_inbound_frame_size}",
            )
        if self.max_request_body_bytes is not None and self.max_request_body_bytes < 0:
            raise InvalidField(
                "max_request_body_bytes", f"must not be negative, got {self.max_request_body_bytes}"
            )
        if self.limit_concurrency is not None and self.limit_concurrency <= 0:
            raise InvalidField(
                "limit_concurrency", f"must be positive, got {self.limit_concurrency}"
            )
        if self.limit_max_requests is not None and self.limit_max_requests <= 0:
            raise InvalidField(
                "limit_max_requests", f"must be positive, got {self.limit_max_requests}"
            )
        if self.limit_max_requests_jitter < 0:
            raise InvalidField(
                "limit_max_requests_jitter",
                f"must not be negative, got {self.limit_max_requests_jitter}",
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile")
        if self.ssl_cert_reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
            raise InvalidField("ssl_cert_reqs", f"must be 0, 1 or 2, got {self.ssl_cert_reqs}")
        if self.ssl_cert_reqs != ssl.CERT_NONE and self.ssl_ca_certs is None:
            # Without a CA bundle no client certificate can ever verify.
            raise ConfigError("--ssl-cert-reqs optional/required needs --ssl-ca-certs")
        if self.ssl_cert_reqs != ssl.CERT_NONE and self.ssl_certfile is None:
            raise ConfigError("--ssl-cert-reqs needs --ssl-certfile")
        for name, value in self.headers:
            check_header(name, value)
        if self.reload_delay_s <= 0:
            raise InvalidField("reload_delay_s", f"must be positive, got {self.reload_delay_s}")
        if self.timeout_worker_healthcheck_s <= 0:
            raise InvalidField(
                "timeout_worker_healthcheck_s",
                f"must be positive, got {self.timeout_worker_healthcheck_s}",
            )
        if self.workers < 1:
            raise InvalidField("workers", f"must be at least 1, got {self.workers}")
        if self.reload and self.workers > 1:
            # As uvicorn, which ignores --workers then; we say so instead.
            raise ConfigError("--reload and --workers cannot be used together")
        for entry in self.forwarded_allow_ips:
            check_trusted_address(entry)

    @property
    def is_ssl(self) -> bool:
        return self.ssl_certfile is not None

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


# Every field but the app, with its default (no field has a default factory).
_SETTINGS = tuple(item for item in dataclasses.fields(Config) if item.name != "app")


_NUMBER_TYPES = frozenset({"int", "float", "int | None", "float | None"})


def _check_number(name: str, annotation: object, value: object) -> None:
    """A number field given something else (``port="8000"`` from Python) is named as such.

    Without this, the first comparison in ``__post_init__`` fails with a
    TypeError that names neither the field nor the value.
    """
    if annotation not in _NUMBER_TYPES or (value is None and "None" in str(annotation)):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidField(name, f"must be a number, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidField(name, f"must be one of {', '.join(choices)}; got {value!r}")


def check_header(name: str, value: str) -> None:
    """Reject a default response header that would break the head on the wire."""
    if not _TOKEN.match(name):
        raise ConfigError(f"header name {name!r} is not a valid HTTP token")
    if _BAD_VALUE_CHARS.search(value):
        raise ConfigError(f"header {name!r} has a CR, LF or NUL in its value")


def check_trusted_address(entry: str) -> None:
    """``*``, an IP address or a network (``10.0.0.0/8``), as ``--forwarded-allow-ips`` takes."""
    text = entry.strip()
    if text == "*":
        return
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(
            f"forwarded-allow-ips: {entry!r} is not an IP address, a network or '*'"
        ) from None


def config_from_options(**options: Any) -> Config:
    """Build a ``Config`` from keyword arguments (``sluiceway.run``): field or uvicorn names.

    Raises:
        ConfigError: an unknown option name or an invalid value.
    """
    return Config(**options)
