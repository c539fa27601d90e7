"""examples/django_chat (Channels' tutorial) under ``manage.py runserver`` on sluiceway.

Each test runs the project in a fresh copy (its own SQLite file) as a child
process, ``runserver 127.0.0.1:0``: the banner names the port bound. Clients
are independent: httpx for the views, the admin and Django's login view, the
websockets client for the chat. No sleeps: waits poll the child's output or
the server with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.layers.conftest import RedisServer, _running_redis

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "django_chat"
BANNER = re.compile(r"Starting ASGI/sluiceway development server at http://127\.0\.0\.1:(\d+)/")
DEADLINE_S = 30.0


class Project:
    """A copy of the example, migrated, with a user; ``runserver`` as a child process."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-u", "manage.py", "runserver", "127.0.0.1:0"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for_banner(self, count: int = 1) -> int:
        """The port named by the ``count``-th banner (a reload prints another)."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            ports = [m.group(1) for line in list(self.lines) if (m := BANNER.search(line))]
            if len(ports) >= count:
                return int(ports[count - 1])
            assert self.process is not None and self.process.poll() is None, "".join(self.lines)
            time.sleep(0.05)  # polling the child's output, bounded by the deadline
        raise AssertionError("no banner in time:\n" + "".join(self.lines))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def example_env(database: Path) -> dict[str, str]:
    env = {**os.environ, "CHAT_DATABASE": str(database), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Migrated once for the module, with the superuser alice; each test copies it."""
    database = tmp_path_factory.mktemp("chat_db") / "db.sqlite3"
    env = {
        **example_env(database),
        "DJANGO_SUPERUSER_USERNAME": "alice",
        "DJANGO_SUPERUSER_PASSWORD": "pw",
        "DJANGO_SUPERUSER_EMAIL": "alice@example.com",
    }
    template = Project(EXAMPLE, env)
    template.manage("migrate", "-v0")
    template.manage("createsuperuser", "--noinput")
    return database


@pytest.fixture
def project(tmp_path: Path, migrated_database: Path) -> Iterator[Project]:
    root = tmp_path / "django_chat"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns("db.sqlite3", "__pycache__"))
    database = tmp_path / "db.sqlite3"
    shutil.copyfile(migrated_database, database)
    proj = Project(root, example_env(database))
    yield proj
    proj.stop()


def log_in(client: httpx.Client) -> str:
    """Log in as alice through Django's login view; return the session cookie."""
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert page.status_code == 200 and token is not None
    done = client.post(
        "/accounts/login/",
        data={"username": "alice", "password": "pw", "csrfmiddlewaretoken": token.group(1)},
    )
    assert done.status_code == 302 and done.headers["location"] == "/chat/"
    return f"sessionid={client.cookies['sessionid']}"


def chat_socket(port: int, path: str, cookie: str | None = None) -> ClientConnection:
    headers = {"Cookie": cookie} if cookie else {}
    return connect(
        f"ws://127.0.0.1:{port}{path}",
        origin=f"http://127.0.0.1:{port}",
        additional_headers=headers,
        open_timeout=DEADLINE_S,
    )


def chat(port: int, path: str, cookie: str) -> None:
    """Two sockets in one room, one logged in: both get alice's message, with her name."""
    with chat_socket(port, path, cookie) as alice, chat_socket(port, path) as guest:
        alice.send(json.dumps({"message": "hello"}))
        expected = {"message": "hello", "user": "alice"}
        assert json.loads(alice.recv(timeout=DEADLINE_S)) == expected
        assert json.loads(guest.recv(timeout=DEADLINE_S)) == expected
        guest.send(json.dumps({"message": "hi"}))
        expected = {"message": "hi", "user": "anonymous"}
        assert json.loads(alice.recv(timeout=DEADLINE_S)) == expected


def test_runserver_serves_views_admin_static_and_the_chat(project: Project) -> None:
    project.start()
    port = project.wait_for_banner()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE_S) as client:
        rooms = client.get("/chat/")
        assert rooms.status_code == 200 and "Chat Rooms" in rooms.text
        assert client.get("/chat/api/hello.json").json() == {"hello": "world", "user": None}
        static = client.get("/static/admin/css/base.css")  # staticfiles under DEBUG
        assert static.status_code == 200 and static.headers["content-type"].startswith("text/css")
        cookie = log_in(client)
        assert client.get("/chat/api/hello.json").json() == {"hello": "world", "user": "alice"}
        admin = client.get("/admin/")
        assert admin.status_code == 200 and "Site administration" in admin.text
    chat(port, "/ws/chat/lobby/", cookie)  # the tutorial's sync consumer
    chat(port, "/ws/achat/lobby/", cookie)  # and its async one
    with pytest.raises(Exception, match="403"):
        connect(f"ws://127.0.0.1:{port}/ws/chat/lobby/", origin="http://evil.example")


def test_runserver_reloads_on_a_code_change(project: Project) -> None:
    project.start()
    port = project.wait_for_banner()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE_S) as client:
        assert "Chat Rooms" in client.get("/chat/").text
        views = project.root / "chat" / "views.py"
        views.write_text(views.read_text().replace('"Chat Rooms"', '"Rooms, reloaded"'))
        new_port = project.wait_for_banner(2)  # the reloader restarted the server
    with httpx.Client(base_url=f"http://127.0.0.1:{new_port}", timeout=DEADLINE_S) as client:
        assert "Rooms, reloaded" in client.get("/chat/").text


def test_the_chat_on_the_redis_layer(project: Project) -> None:
    server: RedisServer
    for server in _running_redis():
        project.env["CHAT_REDIS_URL"] = server.url
        project.start()
        port = project.wait_for_banner()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=DEADLINE_S) as client:
            cookie = log_in(client)
        chat(port, "/ws/chat/redis/", cookie)
        chat(port, "/ws/achat/redis/", cookie)
        project.stop()
