"""``manage.py runserver`` on sluiceway, as Daphne's ``runserver`` does it.

With ``"sluiceway.django"`` in ``INSTALLED_APPS`` (before
``django.contrib.staticfiles``, whose ``runserver`` would otherwise win),
``runserver`` serves ``settings.ASGI_APPLICATION`` (or Django's
``get_asgi_application()`` when it is unset) on sluiceway: HTTP and
WebSocket, Django's autoreloader (``--noreload`` to turn it off), static files
under ``DEBUG`` (``--nostatic``, ``--insecure`` as staticfiles' command has
them), the system checks and the unapplied-migrations warning. ``--noasgi``
runs Django's own WSGI development server instead.

The banner names the port actually bound, so ``runserver 127.0.0.1:0`` picks
a free one and says which.
"""

from __future__ import annotations

import errno
import os
import sys
from datetime import datetime
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connections
from django.utils import autoreload

from sluiceway.django.serving import ServerThread, project_application
from sluiceway.errors import ConfigError
from sluiceway.logconfig import configure_logging

if apps.is_installed("django.contrib.staticfiles"):
    from django.contrib.staticfiles.management.commands.runserver import (
        Command as RunserverCommand,
    )
else:
    from django.core.management.commands.runserver import Command as RunserverCommand


class Command(RunserverCommand):  # type: ignore[misc]  # Django ships no type stubs
    help = "Starts a development server on sluiceway (ASGI: HTTP and WebSocket)."

    def add_arguments(self, parser: Any) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--noasgi",
            action="store_false",
            dest="use_asgi",
            help="Run Django's own WSGI development server instead of sluiceway.",
        )
        if not apps.is_installed("django.contrib.staticfiles"):
            # Accepted (and meaningless) so a command line works either way.
            parser.add_argument("--nostatic", action="store_false", dest="use_static_handler")
            parser.add_argument("--insecure", action="store_true", dest="insecure_serving")

    def inner_run(self, *args: Any, **options: Any) -> None:
        if not options.get("use_asgi", True):
            super().inner_run(*args, **options)
            return
        # An exception silenced in the reloader's parent is raised in the child here.
        autoreload.raise_last_exception()
        if not options.get("skip_checks"):
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        for conn in connections.all(initialized_only=True):
            conn.close()  # the migration check's: the server threads open their own
        serve_static = options.get("use_static_handler", True) and (
            settings.DEBUG or options.get("insecure_serving", False)
        )
        application = project_application(serve_static=serve_static)
        # sluiceway's handlers for its own loggers only (the access lines, errors);
        # Django's LOGGING is left as it is.
        configure_logging("info", access_log=True)
        server = ServerThread(application, host=self.addr, port=int(self.port))
        server.start()
        try:
            port = server.wait_started()
        except (ConfigError, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            code = getattr(cause, "errno", None)
            messages = {
                errno.EACCES: "You don't have permission to access that port.",
                errno.EADDRINUSE: "That port is already in use.",
                errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
            }
            self.stderr.write(f"Error: {messages.get(code, str(exc)) if code else exc}")
            os._exit(1)  # as Django's: sys.exit does not end the reloader from a thread
        self._banner(port)
        try:
            server.join()
        except KeyboardInterrupt:
            server.stop()
            sys.exit(0)

    def _banner(self, port: int) -> None:
        addr = f"[{self.addr}]" if self._raw_ipv6 else self.addr
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        self.stdout.write(
            f"{datetime.now().strftime('%B %d, %Y - %X')}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting ASGI/sluiceway development server at "
            f"{self.protocol}://{addr}:{port}/\n"
            f"Quit the server with {quit_command}.\n"
        )
        self.stdout.flush()
