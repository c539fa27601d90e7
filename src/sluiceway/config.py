"""The server's configuration: one frozen dataclass, validated on creation.

``Config`` is built by ``cli.py`` (argv and ``SLUICEWAY_*`` environment
variables) or by ``sluiceway.run(app, **options)``. Names carry their units.
Every field has an immutable default, so ``Config()`` is a working server on
127.0.0.1:8000. Validation raises ``ConfigError`` with a one-line message;
the CLI prints it and exits with code 2.

Imports only the standard library and ``sluiceway.errors``.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from sluiceway.errors import ConfigError

LifespanMode = Literal["auto", "on", "off"]
WSMode = Literal["auto", "none"]
LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]


@dataclass(frozen=True, slots=True)
class Config:
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

    # Timeouts, seconds.
    keep_alive_timeout_s: float = 5.0
    graceful_shutdown_timeout_s: float = 30.0
    request_headers_timeout_s: float = 10.0

    # Limits. Header block default after nginx/Node (large header buffers
    # of 8-16 KiB per line, 64 KiB in all is what the issue asks).
    max_request_body_bytes: int | None = None
    max_request_headers_bytes: int = 64 * 1024
    max_request_line_bytes: int = 8 * 1024
    limit_concurrency: int | None = None

    # TLS.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: int = int(ssl.CERT_NONE)

    # Response headers.
    server_header: bool = True
    date_header: bool = True
    headers: tuple[tuple[str, str], ...] = ()

    # Logging.
    log_level: LogLevel = "info"
    access_log: bool = True

    # WebSocket (issue 5).
    ws: WSMode = "auto"
    ws_max_size_bytes: int = 16 * 1024 * 1024
    ws_max_queue: int = 32
    ws_ping_interval_s: float = 20.0
    ws_ping_timeout_s: float = 20.0
    ws_per_message_deflate: bool = True

    # Extra knobs a later issue may need go here, never as mutable defaults.
    extra: tuple[tuple[str, Any], ...] = field(default=())

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")
        if self.lifespan not in ("auto", "on", "off"):
            raise ConfigError(f"lifespan must be auto, on or off, got {self.lifespan!r}")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError(
                f"root path must start with '/' and not end with one, got {self.root_path!r}"
            )
        for name in (
            "keep_alive_timeout_s",
            "graceful_shutdown_timeout_s",
            "request_headers_timeout_s",
            "ws_ping_interval_s",
            "ws_ping_timeout_s",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        for name in ("max_request_headers_bytes", "max_request_line_bytes", "ws_max_size_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.max_request_body_bytes is not None and self.max_request_body_bytes < 0:
            raise ConfigError("max_request_body_bytes must not be negative")
        if self.limit_concurrency is not None and self.limit_concurrency <= 0:
            raise ConfigError("limit_concurrency must be positive")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None) and self.ssl_keyfile:
            raise ConfigError("--ssl-keyfile needs --ssl-certfile")

    @property
    def is_ssl(self) -> bool:
        return self.ssl_certfile is not None

    def replace(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)
