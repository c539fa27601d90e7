"""What a thread or a process needs to host a ``Server``: its loop, run to the end, and logging.

``new_event_loop`` is uvloop unless asked otherwise or unavailable (said
once); ``run_in_loop`` runs ``server.serve()`` to its end and then gives the
loop's other tasks a bounded wait (``server/stopping.py``) before closing the
loop; ``configure_logging_from`` and ``say_engine_notes`` set up and begin the
log as a server started from the CLI, ``run()`` or uvicorn's ``Server`` API
would. ``hot_path_build`` says whether the HTTP hot path was compiled.

Used by ``server/process.py`` (the process entry), ``Server.run()``, the
gunicorn worker and sluiceway.django's server thread.

Imports ``sluiceway.config``, ``sluiceway.errors``, ``sluiceway.option_sources``
and ``sluiceway.server.stopping``; the Server only for typing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from importlib.machinery import EXTENSION_SUFFIXES
from typing import TYPE_CHECKING, Any

from sluiceway.config import Config
from sluiceway.errors import ConfigError
from sluiceway.option_sources import engine_notes
from sluiceway.server.stopping import FORCED_WAIT_S, cancel_wait_s, finish_loop

if TYPE_CHECKING:
    from collections.abc import Callable

    from sluiceway.server.runner import Server

logger = logging.getLogger("sluiceway.error")


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    """uvloop for ``auto``/``uvloop`` when it imports; asyncio's loop otherwise."""
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise ConfigError("--loop uvloop: uvloop is not installed") from None
            logger.warning("uvloop is not installed: using the asyncio event loop.")
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def run_in_loop(
    loop: asyncio.AbstractEventLoop,
    server: Server,
    serving: Coroutine[Any, Any, None],
    after_serve: Callable[[], None] | None = None,
) -> tuple[float, bool]:
    """Run ``serving`` (``server.serve()``) to its end in ``loop``, then close the loop.

    ``after_serve`` runs once it returned normally. The loop's other tasks
    get a bounded wait (``finish_loop``). Returns that wait and whether
    anything was abandoned.
    """
    served = False
    wait_s = cancel_wait_s(server.config.graceful_shutdown_timeout_s)
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(serving)
        served = True
    finally:
        if served and after_serve is not None:
            after_serve()
        if server.forced:
            wait_s = FORCED_WAIT_S
        try:
            abandoned = finish_loop(loop, wait_s, server.abandoned)
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    return wait_s, abandoned


def configure_logging_from(config: Config) -> None:
    """``sluiceway.logconfig.configure_logging`` with ``config``'s logging options."""
    from sluiceway.logconfig import configure_logging

    configure_logging(config.log_level, config.access_log, config.log_config, config.use_colors)


def say_engine_notes(config: Config) -> None:
    """Log, once per server, that uvicorn's engine names mean sluiceway's engines."""
    for line in engine_notes(config):
        logger.info("%s.", line)


def hot_path_build() -> str:
    """``compiled`` if setup.py's mypyc step built the HTTP hot path, else ``pure Python``.

    Said once at start, as the loop is: an install without a C compiler or
    mypyc silently runs about a fifth slower per request.
    """
    from sluiceway.http1 import protocol

    return "compiled" if protocol.__file__.endswith(tuple(EXTENSION_SUFFIXES)) else "pure Python"
