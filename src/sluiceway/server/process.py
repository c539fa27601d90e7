"""The process entry: ``sluiceway.run(app, **options)`` and the CLI's ``serve_config``.

``run()`` builds the ``Config`` (field names or uvicorn's keywords), sets up
logging and serves until a signal; with ``workers`` > 1 or ``reload`` the
process becomes the supervisor (``server/supervisor.py``). It owns the
process's end: the loop's other tasks get a bounded wait too, a signal after
``serve()`` returned exits at once (130), and if anything was abandoned (a
task, or at exit a thread) the process ends by ``os._exit`` instead of
waiting on it forever. systemd's notify socket is told READY/STOPPING here,
for the process systemd started.

Start-up failures raise ``ConfigError`` (bad app path, unreadable TLS file,
port in use: the CLI exits 2) or ``LifespanFailed`` (exit 1).

Imports ``sluiceway.config``, ``sluiceway.errors`` and ``sluiceway.server.*``.
"""

from __future__ import annotations

import gc
import logging
import socket
from collections.abc import Callable
from typing import Any

from sluiceway.config import Config, config_from_options
from sluiceway.errors import ConfigError
from sluiceway.server import systemd
from sluiceway.server.hosting import (
    configure_logging_from,
    new_event_loop,
    run_in_loop,
    say_engine_notes,
)
from sluiceway.server.runner import Server
from sluiceway.server.stopping import (
    EXIT_FORCED,
    bound_interpreter_exit,
    exit_now_on_signal,
    hard_exit,
)

__all__ = ["run", "serve_config"]

logger = logging.getLogger("sluiceway.error")


def run(app: Any, **options: Any) -> None:
    """Serve ``app`` (an ASGI app or a ``"module:attribute"`` string) until a signal.

    ``options`` are ``Config`` field names (``host``, ``port``, ``uds``,
    ``lifespan``, ``keep_alive_timeout_s``, ...) or uvicorn's keyword names
    (``timeout_keep_alive``, ``ws_max_size``, ...); an unknown one is a
    ``ConfigError`` naming the nearest known one.

    It ends the process, as the CLI does, rather than return, when the app
    left a task that would not end (after logging it); once the server has
    stopped, SIGINT/SIGTERM end the process at once with code 130.

    Raises:
        ConfigError: a bad option, app path, TLS file or address.
        LifespanFailed: the app's lifespan startup failed.
        KeyboardInterrupt: a second signal forced the exit.
    """
    config = config_from_options(**options)
    configure_logging_from(config)
    serve_config(config, app)


def serve_config(
    config: Config,
    app: Any,
    *,
    sockets: list[socket.socket] | None = None,
    on_started: Callable[[Server], None] | None = None,
) -> None:
    """``run()`` for an already built ``Config`` (the CLI's entry point).

    With ``workers`` > 1 or ``reload``, this process becomes the supervisor
    (``server/supervisor.py``) and the app must be a ``"module:attribute"``
    string, which each worker process imports. ``sockets`` and ``on_started``
    are the worker's side of that: serve these already bound sockets, and
    call ``on_started(server)`` once accepting.

    Raises:
        ConfigError: as ``run()``, or workers/reload asked for an app object.
        LifespanFailed: the app's lifespan startup failed.
    """
    if sockets is None and (config.workers > 1 or config.reload):
        if not isinstance(app, str):
            raise ConfigError(
                "--workers and --reload need the app as an import string ('module:attribute')"
            )
        from sluiceway.server.supervisor import supervise

        say_engine_notes(config)
        supervise(config, app)
        return
    if sockets is None:  # else the supervisor said it once for all workers
        say_engine_notes(config)
    loop = new_event_loop(config.loop)
    # systemd's sd_notify, read (and unset) by the process it started; a
    # worker's supervisor did that already.
    notifier = None if sockets is not None else systemd.Notifier.from_environ()

    def started(server: Server) -> None:
        _freeze_startup_heap()
        if notifier is not None:
            systemd.ServerNotifier(notifier).started(server)
        if on_started is not None:
            on_started(server)

    server = Server(config, app, sockets=sockets, on_started=started)
    # exit_now_on_signal: serve() took its handlers with it.
    wait_s, abandoned = run_in_loop(loop, server, server.serve(), exit_now_on_signal)
    code = EXIT_FORCED if server.forced else 0
    if abandoned:
        # Returning would leave them to the interpreter's exit, which waits
        # for the threads they started and runs their code again as it
        # finalizes them.
        logger.warning("Exiting without the task(s) abandoned above.")
        hard_exit(code)
    bound_interpreter_exit(wait_s, code)
    if server.forced:
        raise KeyboardInterrupt


def _freeze_startup_heap() -> None:
    """Move everything alive once serving starts out of the cyclic GC's reach.

    The modules, the app and its startup state live for the whole process, yet
    every full collection scanned them all: under load that was a ~5 ms pause
    several times a second, doubling p99 (bench/results/http.md). Frozen
    objects are still freed by reference counting; only cycles among them
    would stay, and those are long-lived anyway. Done for the process entry
    points only, never for a ``Server`` embedded in someone else's process.
    """
    gc.collect()
    gc.freeze()
