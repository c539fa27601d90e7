"""The command line: ``sluiceway run module:app [options]`` and ``sluiceway worker ...``.

argv -> ``Config`` (through ``sluiceway.options``: defaults < ``SLUICEWAY_*``
< argv, after ``--env-file`` was loaded) -> ``serve_config``.

Exit codes: 0 after a graceful shutdown; 2 for anything the user can fix
before the server runs (a bad option or value, an app path that does not
import, an unreadable TLS file, a port in use), always as one line on stderr
and never a traceback; 1 when the app's lifespan startup fails; 130 when a
second signal forced the exit.

Imports ``sluiceway.config``, ``sluiceway.options``, ``sluiceway.envfile`` and
``sluiceway.errors`` at module level; the server, logging and the worker only
when a command runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from sluiceway import __version__
from sluiceway.config import Config
from sluiceway.envfile import load_env_file
from sluiceway.errors import ConfigError, LifespanFailed
from sluiceway.options import ENV_PREFIX, OPTIONS, Option, config_from_sources

PROG = "sluiceway"
EXIT_USAGE = 2
EXIT_RUNTIME = 1
EXIT_FORCED = 130  # 128 + SIGINT, as shells report an interrupted command


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see '{self.prog} --help')")


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def version_text() -> str:
    parts = [f"{platform.python_implementation()} {platform.python_version()}"]
    for name in ("uvloop", "httptools"):
        try:
            from importlib.metadata import version

            parts.append(f"{name} {version(name)}")
        except Exception:  # not installed: say nothing about it
            continue
    return f"{PROG} {__version__} ({', '.join(parts)} on {platform.system()})"


def _default_text(option: Option) -> str:
    value = getattr(Config(), option.field)
    if option.kind == "append" or value in (None, ""):
        return f"env {option.env}"
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif option.field == "ssl_cert_reqs":
        value = ("none", "optional", "required")[value]
    elif isinstance(value, tuple):
        value = ",".join(value)
    env = option.env if option.fallback_env is None else f"{option.env} or {option.fallback_env}"
    return f"default {value}; env {env}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="sluiceway: an ASGI server (HTTP/1.1, WebSocket, lifespan).",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser(
        "run",
        help="serve an ASGI application",
        description="Serve an ASGI application. Every option can also be set with the "
        f"{ENV_PREFIX}<NAME> environment variable shown; the command line wins.",
        allow_abbrev=False,
    )
    run.add_argument(
        "app",
        nargs="?",
        metavar="APP",
        help=f'the application, as "module:attribute" (env {ENV_PREFIX}APP)',
    )
    run.add_argument("--version", action="version", version=version_text())
    for option in OPTIONS:
        help_text = f"{option.help} [{_default_text(option)}]"
        common: dict[str, Any] = {"dest": option.field, "default": argparse.SUPPRESS}
        if option.kind == "flag":
            run.add_argument(option.flag, action="store_true", help=help_text, **common)
        elif option.kind == "switch":
            run.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, help=help_text, **common
            )
        else:
            metavar = option.metavar
            if option.choices is not None:
                metavar = "{" + ",".join(option.choices) + "}"
            action = "append" if option.kind == "append" else "store"
            run.add_argument(option.flag, action=action, metavar=metavar, help=help_text, **common)

    worker = commands.add_parser(
        "worker",
        help="run a channel-layer worker: APP CHANNEL [CHANNEL ...]",
        description="Run a background worker that consumes channel-layer channels.",
        add_help=False,
    )
    worker.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``sluiceway`` console script. Returns the process exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["worker"]:
        # The worker parses its own options (argparse's REMAINDER would
        # swallow none that start with "-").
        return run_worker(arguments[1:])
    args = build_parser().parse_args(arguments)
    return run_command(vars(args))


def run_command(parsed: dict[str, Any]) -> int:
    from sluiceway.logconfig import configure_logging
    from sluiceway.server.runner import serve_config

    given = {k: v for k, v in parsed.items() if k not in ("command", "app")}
    env_file = given.get("env_file") or os.environ.get(ENV_PREFIX + "ENV_FILE")
    try:
        if env_file:
            # Before anything reads the environment: the file may hold SLUICEWAY_* too.
            load_env_file(env_file)
        config = config_from_sources(given, os.environ)
    except ConfigError as exc:
        fail(str(exc))
    app = parsed.get("app") or os.environ.get(ENV_PREFIX + "APP")
    if not app:
        fail(f'missing APP: give "module:attribute" or set {ENV_PREFIX}APP')
    try:
        # Before the app is imported, so its import-time logging goes where
        # the user's --log-config says; with --workers, each worker does the same.
        configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors)
        serve_config(config, app)
    except ConfigError as exc:
        fail(str(exc))
    except LifespanFailed as exc:
        fail(f"application startup failed: {exc.message}", EXIT_RUNTIME)
    except KeyboardInterrupt:
        return EXIT_FORCED
    return 0


def run_worker(args: list[str]) -> int:
    try:
        import sluiceway.worker as worker  # type: ignore[import-not-found,unused-ignore]
    except ModuleNotFoundError as exc:
        if exc.name != "sluiceway.worker":
            raise
        fail("the worker command is not available in this build (no sluiceway.worker)")
    code = worker.main(args)
    return int(code) if isinstance(code, int) else 0
