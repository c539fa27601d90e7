"""The command line: ``sluiceway run module:app [options]`` and ``sluiceway worker ...``.

argv -> ``Config`` (through ``sluiceway.option_sources``: defaults < ``SLUICEWAY_*``
< argv, after ``--env-file`` was loaded) -> ``serve_config``.

Exit codes: 0 after a graceful shutdown; 2 for anything the user can fix
before the server runs (a bad option or value, an app path that does not
import, an unreadable TLS file, a port in use), always as one line on stderr
and never a traceback; 1 when the app's lifespan startup fails; 130 when a
second signal forced the exit.

Imports ``sluiceway.config``, ``sluiceway.options``, ``sluiceway.option_sources``,
``sluiceway.envfile`` and
``sluiceway.errors`` at module level; the server, logging and the worker only
when a command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from sluiceway import __version__
from sluiceway.config import Config
from sluiceway.envfile import load_env_file
from sluiceway.errors import ConfigError, LifespanFailed
from sluiceway.option_sources import Note, config_from_sources, nearest
from sluiceway.options import ENV_PREFIX, OPTIONS, UVICORN_ENV_PREFIX, Option

PROG = "sluiceway"
EXIT_USAGE = 2
EXIT_RUNTIME = 1
EXIT_FORCED = 130  # 128 + SIGINT, as shells report an interrupted command


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}{_suggestion(message)} (see '{self.prog} --help')")


def _suggestion(message: str) -> str:
    """`` (did you mean '--x'?)`` for the first unknown flag in argparse's message."""
    if not message.startswith("unrecognized arguments: "):
        return ""
    known = ["--help", "--version"]
    for option in OPTIONS:
        known += [option.flag, *option.aliases]
        if option.kind == "switch":
            known.append("--no-" + option.flag[2:])
    for word in message.split()[2:]:
        if word.startswith("--"):
            return nearest(word.partition("=")[0], known)
    return ""


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def version_text() -> str:
    """What ``--version`` prints: sluiceway's, Python's and the native parts' versions.

    One fact per line, so a bug report pastes it whole: the event loop and the
    parser are the two dependencies whose versions change behaviour, and the
    last line says whether setup.py's mypyc step built the hot path (an install
    without a C compiler runs the same code about a fifth slower).
    """
    from importlib.metadata import PackageNotFoundError, version

    from sluiceway.server.hosting import hot_path_build

    python = f"{platform.python_implementation()} {platform.python_version()}"
    lines = [f"{PROG} {__version__} ({python} on {platform.system()})"]
    for name, missing in (("uvloop", "asyncio's own loop"), ("httptools", "no HTTP/1.1 parser")):
        try:
            lines.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            lines.append(f"{name} not installed ({missing})")
    lines.append(f"hot path: {hot_path_build()}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """``--version``, computed only when asked: the hot-path check imports the server."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="show versions and exit"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


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
    parser.add_argument("--version", action=_VersionAction)
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
    run.add_argument("--version", action=_VersionAction)
    for option in OPTIONS:
        help_text = f"{option.help} [{_default_text(option)}]"
        common: dict[str, Any] = {"dest": option.field, "default": argparse.SUPPRESS}
        if option.kind == "flag":
            run.add_argument(
                option.flag, *option.aliases, action="store_true", help=help_text, **common
            )
        elif option.kind == "switch":
            run.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, help=help_text, **common
            )
        else:
            metavar = option.metavar
            if option.choices is not None:
                metavar = "{" + ",".join(option.choices) + "}"
            action = "append" if option.kind == "append" else "store"
            flags = (option.flag, *option.aliases)
            run.add_argument(*flags, action=action, metavar=metavar, help=help_text, **common)

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
    from sluiceway.server.hosting import configure_logging_from
    from sluiceway.server.process import serve_config

    given = {k: v for k, v in parsed.items() if k not in ("command", "app")}
    env_file = (
        given.get("env_file")
        or os.environ.get(ENV_PREFIX + "ENV_FILE")
        or os.environ.get(UVICORN_ENV_PREFIX + "ENV_FILE")
    )
    notes: list[Note] = []  # about UVICORN_* variables, logged once logging is set up
    try:
        if env_file:
            # Before anything reads the environment: the file may hold SLUICEWAY_* too.
            load_env_file(env_file)
        config = config_from_sources(given, os.environ, notes)
    except ConfigError as exc:
        fail(str(exc))
    app = parsed.get("app") or os.environ.get(ENV_PREFIX + "APP")
    if not app:
        fail(f'missing APP: give "module:attribute" or set {ENV_PREFIX}APP')
    try:
        # Before the app is imported, so its import-time logging goes where
        # the user's --log-config says; with --workers, each worker does the same.
        configure_logging_from(config)
        for level, text in notes:
            logging.getLogger("sluiceway.error").log(level, "%s.", text)
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
