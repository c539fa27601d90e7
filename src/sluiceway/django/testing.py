"""Testing a Django project on sluiceway: communicators and a live-server test case.

The communicators are the toolkit's (``sluiceway.testing``). Inside Django's
``TestCase`` they see the test database and its transaction: thread-sensitive
calls from the app (``database_sync_to_async``, the auth middleware) go to
the test's thread (see ``sluiceway.sync``).

``SluicewayLiveServerTestCase`` is Channels' ``ChannelsLiveServerTestCase``:
a ``TransactionTestCase`` that serves the project's ASGI application (HTTP and
WebSocket, static files by default) on sluiceway on a free port for the
class's tests; ``live_server_url`` and ``live_server_ws_url`` say where. The
server runs in a thread of the test process rather than in a child process,
so it shares the test database, an in-memory SQLite one included (Channels
refuses those). Data must be committed to be seen by the server's threads,
hence ``TransactionTestCase``, as with Django's ``LiveServerTestCase``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.test import TransactionTestCase
from django.test.utils import modify_settings
from django.utils.functional import classproperty

from sluiceway.django.serving import ServerThread, project_application
from sluiceway.testing import ApplicationCommunicator, HttpCommunicator, WebsocketCommunicator

__all__ = [
    "ApplicationCommunicator",
    "HttpCommunicator",
    "SluicewayLiveServerTestCase",
    "WebsocketCommunicator",
]


class SluicewayLiveServerTestCase(TransactionTestCase):  # type: ignore[misc]  # no Django stubs
    """Serve the project on sluiceway on a free port for this class's tests.

    Attributes:
        host: the address to bind and put in the URLs (added to
            ``ALLOWED_HOSTS`` while the class runs, as Django's live server
            case does).
        serve_static: serve static files as ``runserver`` does under DEBUG.
        application: serve this ASGI app instead of the project's.
    """

    host: ClassVar[str] = "localhost"
    serve_static: ClassVar[bool] = True
    application: ClassVar[Any] = None
    _server: ClassVar[ServerThread | None] = None

    @classproperty  # type: ignore[untyped-decorator]  # Django ships no type stubs
    def live_server_url(cls) -> str:
        return f"http://{cls.host}:{cls._port()}"

    @classproperty  # type: ignore[untyped-decorator]  # Django ships no type stubs
    def live_server_ws_url(cls) -> str:
        return f"ws://{cls.host}:{cls._port()}"

    @classmethod
    def _port(cls) -> int:
        if cls._server is None or cls._server.port is None:
            raise RuntimeError("the live server is not running (setUpClass has not run)")
        return cls._server.port

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._hosts = modify_settings(ALLOWED_HOSTS={"append": cls.host})
        cls._hosts.enable()
        cls.addClassCleanup(cls._hosts.disable)
        application = cls.application
        if application is None:
            application = project_application(serve_static=cls.serve_static)
        server = ServerThread(application, host=cls.host, port=0, access_log=False)
        server.start()
        cls.addClassCleanup(server.stop)
        server.wait_started()
        cls._server = server

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        cls._server = None
