"""Serve a Django project's ASGI application on sluiceway: ``runserver`` and live tests.

``project_application()`` is what Daphne's ``runserver`` serves:
``settings.ASGI_APPLICATION`` (or, when unset, Django's own handler from
``sluiceway.django.asgi.get_asgi_application()``), wrapped in staticfiles' ASGI handler when static
files are to be served. ``ServerThread`` runs a sluiceway ``Server`` on its
own event loop in a daemon thread: the server ``runserver`` runs in Django's
autoreloader thread, and the one a live-server test case starts on a free
port.

Invariants: the thread installs no signal handlers (only the main thread may;
``Server`` skips them elsewhere), and ``stop()`` drains and joins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from django.apps import apps
from django.conf import settings

from sluiceway.config import config_from_options
from sluiceway.server.hosting import new_event_loop
from sluiceway.server.runner import Server

__all__ = ["ServerThread", "project_application"]


def project_application(*, serve_static: bool) -> Any:
    """The project's ASGI application, with static files when ``serve_static``.

    Static files are served only with ``django.contrib.staticfiles`` installed,
    as Django's and Daphne's ``runserver`` do.
    """
    from sluiceway.django.routing import get_default_application

    if getattr(settings, "ASGI_APPLICATION", None):
        application = get_default_application()
    else:
        from sluiceway.django.asgi import get_asgi_application

        application = get_asgi_application()
    if serve_static and apps.is_installed("django.contrib.staticfiles"):
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        application = ASGIStaticFilesHandler(application)
    return application


class ServerThread(threading.Thread):
    """A sluiceway server for ``application`` in a daemon thread with its own loop.

    ``options`` are ``sluiceway.Config`` fields (``host``, ``port``, ...).
    After ``start()``, ``wait_started()`` returns the bound port or raises
    what stopped the server from starting.
    """

    def __init__(self, application: Any, **options: Any) -> None:
        super().__init__(name="sluiceway-django-server", daemon=True)
        self.config = config_from_options(**options)
        self.application = application
        self.port: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None

    def run(self) -> None:
        loop = self._loop = new_event_loop(self.config.loop)
        asyncio.set_event_loop(loop)
        server = self._server = Server(
            self.config, self.application, on_started=self._report_started
        )
        try:
            loop.run_until_complete(server.serve())
        except BaseException as exc:
            self.error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _report_started(self, server: Server) -> None:
        self.port = server.port
        self._ready.set()

    def wait_started(self, timeout_s: float = 30.0) -> int:
        """Block until the server accepts connections; return its port.

        Raises:
            TimeoutError: it did not start in time.
            BaseException: whatever stopped it from starting (binding failed...).
        """
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the sluiceway server did not start within {timeout_s} s")
        if self.error is not None:
            raise self.error
        if self.port is None:
            raise RuntimeError("the sluiceway server stopped before it started")
        return self.port

    def stop(self, timeout_s: float = 30.0) -> None:
        """Drain the server (as on SIGTERM) and wait for the thread to end."""
        loop, server = self._loop, self._server
        if loop is not None and server is not None and not loop.is_closed():
            # A RuntimeError: the loop closed meanwhile, nothing left to stop.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(server.request_exit)
        self.join(timeout_s)
