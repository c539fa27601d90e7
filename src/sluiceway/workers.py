"""A gunicorn worker class: ``gunicorn -k sluiceway.workers.SluicewayWorker app:app``.

Not to be confused with ``sluiceway/worker.py`` (singular), the channel-layer
``sluiceway worker`` command that runs background consumers: this module
(plural, as uvicorn's ``uvicorn.workers``) lets gunicorn's arbiter run
sluiceway's protocol stack (HTTP/1.1, WebSocket, HTTP/2) in its workers.

gunicorn's arbiter binds the sockets, forks the workers, watches their
heartbeats and restarts them; each worker imports the app (gunicorn's
loader) and serves the arbiter's already-bound sockets with a sluiceway
``Server``. ``config_from_gunicorn`` maps gunicorn's settings to ``Config``:

==========================  ====================================================
gunicorn                    sluiceway
==========================  ====================================================
``bind`` (``-b``)           the arbiter's sockets, served as given (``sockets=``)
``backlog``                 ``backlog``
``timeout``                 a heartbeat: ``notify()`` from the event loop every
                            ``timeout / 2`` s, so a blocked loop gets killed
``graceful_timeout``        ``graceful_shutdown_timeout_s``
``max_requests`` (+jitter)  ``limit_max_requests`` (gunicorn draws the jitter)
``keepalive``               ``keep_alive_timeout_s``
``limit_request_line``      ``max_request_line_bytes`` (0: 1 MiB, gunicorn's own cap)
``limit_request_fields`` x  ``max_request_headers_bytes``: one bound on the whole
``limit_request_field_size``  head, the buffer gunicorn's own parser allows
``certfile``, ``keyfile``,  ``ssl_certfile``, ``ssl_keyfile``, ``ssl_ca_certs``,
``ca_certs``, ``cert_reqs``,  ``ssl_cert_reqs``, ``ssl_ciphers``
``ciphers``
``forwarded_allow_ips``     ``forwarded_allow_ips`` (``proxy_headers`` stays on)
``http_protocols``,         ``http2``: on when h2 is listed or h2c is asked for
``http2_cleartext``         (sluiceway has one switch for ALPN and both h2c ways)
``http2_*`` sizes           ``h2_max_concurrent_streams``, ``h2_initial_window_size``,
                            ``h2_max_inbound_frame_size``, ``h2_max_header_list_size``
``proxy_protocol``          refused (sluiceway does not read PROXY headers)
``accesslog``, ``errorlog``,  the ``sluiceway.access`` / ``sluiceway`` loggers write
``loglevel``                through gunicorn's handlers, at its level
==========================  ====================================================

Anything else (``ws_*``, ``limit_concurrency``, ``request_body_timeout_s``...) keeps
sluiceway's default; a subclass sets it in ``CONFIG_KWARGS``, which wins
over the mapping. docs/deploy.md has what has no exact equivalent.

Signals, as gunicorn documents them for workers: TERM drains gracefully
(the ``Server``'s own handler: in-flight requests finish within
``graceful_timeout``, then lifespan shutdown); QUIT and INT stop quickly
(``request_exit(force=True)``: no drain, lifespan shutdown cancelled);
USR1 reopens the log files (``log.reopen_files``, run on the loop, never
inside a logging call). HUP is the arbiter's: it starts new workers and
TERMs the old ones. These are loop handlers: they act between callbacks,
never inside app code. ABRT is the arbiter's timeout kill of a worker
whose loop is blocked, so it stays a plain signal handler: the
``worker_abort`` hook, then exit at once. gunicorn's ``--reload`` (a thread
in the worker) clears ``alive`` and writes to the worker's wake-up pipe,
which the loop watches: the worker drains and exits, and the arbiter starts
one with the new code.

A worker whose app fails to start (a ``ConfigError``: a bad TLS file; or a
failed lifespan startup) exits with gunicorn's ``WORKER_BOOT_ERROR``, which
halts the arbiter rather than restart it forever.

Imports gunicorn (untyped), ``sluiceway.config``, ``sluiceway.server.runner``,
``sluiceway.server.stopping`` and ``sluiceway.logconfig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Mapping
from types import FrameType
from typing import Any, ClassVar

# gunicorn ships no type information.
from gunicorn.arbiter import Arbiter  # type: ignore[import-untyped]
from gunicorn.workers.base import Worker  # type: ignore[import-untyped]

from sluiceway.config import Config, config_from_options
from sluiceway.errors import ConfigError, LifespanFailed
from sluiceway.logconfig import SafeRecords
from sluiceway.server.hosting import new_event_loop, run_in_loop
from sluiceway.server.runner import Server
from sluiceway.server.stopping import bound_interpreter_exit, hard_exit

__all__ = ["SluicewayWorker", "config_from_gunicorn"]

logger = logging.getLogger("sluiceway.error")

# gunicorn/http/message.py: MAX_HEADERS, DEFAULT_MAX_HEADERFIELD_SIZE, and
# the line it reads when limit_request_line is 0 ("unlimited").
GUNICORN_MAX_FIELDS = 32768
GUNICORN_FIELD_BYTES = 8190
GUNICORN_MAX_LINE_BYTES = 8190
GUNICORN_UNLIMITED_LINE_BYTES = 1024 * 1024
# The heartbeat period when gunicorn's --timeout is 0 (the arbiter then never
# kills a worker): the loop still checks that the arbiter is alive.
IDLE_NOTIFY_S = 1.0
# sluiceway.logconfig's "off" level: above CRITICAL, so the protocol's
# once-per-connection isEnabledFor() check skips all formatting.
_OFF = logging.CRITICAL + 1


def config_from_gunicorn(
    cfg: Any, max_requests: int | None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """The ``Config`` a worker serves with, from gunicorn's ``cfg`` (see the module docstring).

    Args:
        cfg: gunicorn's ``Config`` (``worker.cfg``).
        max_requests: the worker's request limit with its jitter drawn, None for none.
        overrides: ``Config`` fields that win over the mapping (``CONFIG_KWARGS``).

    Raises:
        ConfigError: a value sluiceway rejects (say, a ``forwarded_allow_ips`` entry).
    """
    line = cfg.limit_request_line
    if line < 0:
        line = GUNICORN_MAX_LINE_BYTES
    fields = cfg.limit_request_fields
    if not 0 < fields <= GUNICORN_MAX_FIELDS:
        fields = GUNICORN_MAX_FIELDS
    field_bytes = cfg.limit_request_field_size or GUNICORN_FIELD_BYTES
    options: dict[str, Any] = {
        "backlog": cfg.backlog,
        "keep_alive_timeout_s": float(cfg.keepalive),
        "graceful_shutdown_timeout_s": float(cfg.graceful_timeout),
        "limit_max_requests": max_requests,
        "max_request_line_bytes": line or GUNICORN_UNLIMITED_LINE_BYTES,
        "max_request_headers_bytes": fields * field_bytes,
        "proxy_headers": True,
        "forwarded_allow_ips": tuple(cfg.forwarded_allow_ips),
        "access_log": bool(cfg.accesslog),
    }
    options.update(_http2_options(cfg))
    if getattr(cfg, "proxy_protocol", False) not in (False, None, "off"):
        # A PROXY header would reach the HTTP parser as a malformed request line.
        raise ConfigError("--proxy-protocol: sluiceway does not read the PROXY protocol")
    if cfg.is_ssl:
        options.update(
            ssl_certfile=cfg.certfile,
            ssl_keyfile=cfg.keyfile,
            ssl_ca_certs=cfg.ca_certs,
            ssl_cert_reqs=int(cfg.cert_reqs),
            ssl_ciphers=cfg.ciphers,
        )
    options.update(overrides or {})
    return config_from_options(**options)


def _http2_options(cfg: Any) -> dict[str, Any]:
    """HTTP/2 as gunicorn (25+) says: on when ``--http-protocols`` has h2 or h2c is asked for.

    sluiceway has one switch for ALPN h2 and both cleartext ways in (prior
    knowledge, Upgrade: h2c), so any of gunicorn's turns all on. An older
    gunicorn has no such settings: sluiceway's defaults stand (on).
    """
    protocols = getattr(cfg, "http_protocols", None)
    if protocols is None:
        return {}
    names = protocols if isinstance(protocols, (list, tuple)) else str(protocols).split(",")
    options: dict[str, Any] = {
        "http2": "h2" in {name.strip() for name in names}
        or getattr(cfg, "http2_cleartext", "off") not in ("off", False, None),
        "h2_max_concurrent_streams": cfg.http2_max_concurrent_streams,
        "h2_initial_window_size": cfg.http2_initial_window_size,
        "h2_max_inbound_frame_size": cfg.http2_max_frame_size,
    }
    if cfg.http2_max_header_list_size > 0:  # 0 is gunicorn's "unlimited": ours stays bounded
        options["h2_max_header_list_size"] = cfg.http2_max_header_list_size
    return options


class SluicewayWorker(Worker):  # type: ignore[misc]  # gunicorn's Worker is untyped (Any)
    """gunicorn's worker protocol around a sluiceway ``Server``; see the module docstring."""

    # Config fields a subclass sets over the mapping, e.g. {"ws_max_size_bytes": 2**20}.
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {}

    config: Config

    def init_process(self) -> None:
        # In the worker (the arbiter builds a Worker before each fork): a
        # setting sluiceway rejects is one line and WORKER_BOOT_ERROR, which
        # halts the arbiter instead of a restart loop of tracebacks.
        limit = self.max_requests if self.cfg.max_requests > 0 else None
        try:
            self.config = config_from_gunicorn(self.cfg, limit, self.CONFIG_KWARGS)
        except ConfigError as exc:
            self.log.error("sluiceway: %s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        self._route_logs()
        super().init_process()  # gunicorn's set-up, its signals, the app import, then run()

    def _route_logs(self) -> None:
        """Send sluiceway's loggers through gunicorn's handlers (its files, level, USR1).

        A ``sluiceway`` logger that gunicorn's ``--log-config`` already set up is left alone.
        """
        SafeRecords.install()
        server_log = logging.getLogger("sluiceway")
        if server_log.handlers:
            return
        server_log.handlers = list(self.log.error_log.handlers)
        server_log.setLevel(self.log.error_log.level)
        server_log.propagate = False
        access_log = logging.getLogger("sluiceway.access")
        access_log.handlers = list(self.log.access_log.handlers)
        access_log.setLevel(logging.INFO if self.config.access_log else _OFF)
        access_log.propagate = False

    def run(self) -> None:
        if not self.alive:
            return  # TERM while the app was importing: gunicorn's handler noted it
        config = self.config
        loop = new_event_loop(config.loop)
        # The arbiter's sockets are gunicorn wrappers; the loop wants the socket itself.
        sockets = [getattr(sock, "sock", sock) for sock in self.sockets]
        server = Server(config, self.wsgi, sockets=sockets, on_started=self._started)
        try:
            wait_s, abandoned = run_in_loop(loop, server, self._serve(server))
        except (ConfigError, LifespanFailed) as exc:
            # Nothing served: the same failure would meet every restart.
            if isinstance(exc, LifespanFailed):
                logger.error("application startup failed: %s", exc.message)
            else:
                logger.error("%s", exc)
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
        if abandoned:
            logger.warning("Exiting without the task(s) abandoned above.")
            hard_exit(0)
        bound_interpreter_exit(wait_s, 0)

    async def _serve(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        # serve() puts its own SIGINT (and SIGTERM) handler in; _started puts
        # ours back. Until then a SIGINT stops the startup, which is quick too.
        for sig in (signal.SIGQUIT, signal.SIGINT):
            loop.add_signal_handler(sig, self._quit, server, sig)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        # gunicorn's --reload thread says "stop" by clearing alive and writing here.
        loop.add_reader(self.PIPE[0], self._woken, server)
        heartbeat = asyncio.ensure_future(self._heartbeat(server))
        try:
            await server.serve()
        finally:
            heartbeat.cancel()
            loop.remove_reader(self.PIPE[0])
            for sig in (signal.SIGQUIT, signal.SIGUSR1):
                loop.remove_signal_handler(sig)

    def _woken(self, server: Server) -> None:
        with contextlib.suppress(OSError):
            os.read(self.PIPE[0], 512)
        if not self.alive:
            server.request_exit()  # graceful: the arbiter starts a worker with the new code

    def handle_abort(self, sig: int, frame: FrameType | None) -> None:
        """ABRT: the arbiter's timeout kill of a blocked loop; ``worker_abort``, then exit now.

        gunicorn's own handler raises ``SystemExit`` wherever the loop is
        stuck, which is app code: the app or the server would catch it and
        carry on. Nothing can be drained from a blocked loop anyway.
        """
        self.alive = False
        self.cfg.worker_abort(self)
        hard_exit(1)

    def _started(self, server: Server) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._quit, server, signal.SIGINT)

    def _quit(self, server: Server, sig: signal.Signals) -> None:
        """QUIT/INT: gunicorn's quick shutdown (its ``worker_int`` hook, then no drain)."""
        logger.info("Received %s: stopping now, without draining.", sig.name)
        self.alive = False
        self.cfg.worker_int(self)
        server.request_exit(force=True)

    async def _heartbeat(self, server: Server) -> None:
        """Tell the arbiter this loop runs; stop if the arbiter is gone.

        gunicorn passes ``timeout / 2`` as ``self.timeout``: notifying that
        often leaves the arbiter a margin before it kills the worker.
        """
        interval = self.timeout if self.timeout > 0 else IDLE_NOTIFY_S
        while True:
            self.notify()
            if os.getppid() != self.ppid:
                logger.warning("The gunicorn arbiter is gone: shutting down.")
                server.request_exit()
                return
            await asyncio.sleep(interval)
