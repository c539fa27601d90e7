"""uvicorn's documented examples, run on sluiceway with only the import or command changed.

The examples follow uvicorn's docs (index.md "Running programmatically", deployment
"Running from the command line", settings.md's UVICORN_* variables, and the run-in-a-thread
pattern of uvicorn's and FastAPI's test advice), written anew here. Each runs in a process
of its own, as a user would run it: a Python example with ``import uvicorn`` replaced by
``import sluiceway as uvicorn``, a command with ``uvicorn`` replaced by ``sluiceway run``.

Two other changes, because several test suites share this machine: every port is 0 (a free
one, read from the "Listening on" line; the docs say 5000 or 8000), and a socket path is in
the test's temporary directory (the docs say /tmp/uvicorn.sock).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import signal
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server

# The app of uvicorn's quick start: it asserts an HTTP scope, so lifespan "auto" finds it
# unsupported and serves without it, as uvicorn does.
EXAMPLE_APP = """
import json


async def app(scope, receive, send):
    assert scope["type"] == "http"
    client = scope["client"][0] if scope["client"] else None  # None on a Unix socket
    body = json.dumps({"client": client, "path": scope["path"]}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app():
    return app
"""

# The app the docs' programmatic examples define beside their uvicorn calls ("...").
MAIN_APP = """
async def app(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"run"})
"""

# index.md, "uvicorn.run": an import string, in the app's own module.
RUN_IMPORT_STRING = """
import uvicorn
{app}
if __name__ == "__main__":
    uvicorn.run("main:app", port=0, log_level="info")
"""

# deployment, "Running programmatically": the app object itself.
RUN_APP_OBJECT = """
import uvicorn

class App:
    async def __call__(self, scope, receive, send):
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"run"})

app = App()

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=0, log_level="info")
"""

# index.md, "Config and Server instances".
CONFIG_SERVER_RUN = """
import uvicorn
{app}
if __name__ == "__main__":
    config = uvicorn.Config("main:app", port=0, log_level="info")
    server = uvicorn.Server(config)
    server.run()
"""

# index.md, from an already running event loop: Server.serve().
ASYNC_SERVE = """
import asyncio
import uvicorn
{app}
async def main():
    config = uvicorn.Config("main:app", port=0, log_level="info")
    server = uvicorn.Server(config)
    await server.serve()

if __name__ == "__main__":
    asyncio.run(main())
"""

# The run-in-a-thread pattern for tests: no signal handlers, poll ``started``, then
# ``should_exit``. The port a test asked 0 for is read from the asyncio server, as with uvicorn.
THREAD_PATTERN = """
import contextlib
import threading
import time
import urllib.request

import uvicorn


class Server(uvicorn.Server):
    def install_signal_handlers(self):
        pass

    @contextlib.contextmanager
    def run_in_thread(self):
        thread = threading.Thread(target=self.run)
        thread.start()
        try:
            while not self.started:
                time.sleep(1e-3)
            yield
        finally:
            self.should_exit = True
            thread.join()


config = uvicorn.Config("example:app", host="127.0.0.1", port=0, log_level="info")
server = Server(config=config)

with server.run_in_thread():
    port = server.servers[0].sockets[0].getsockname()[1]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/thread") as response:
        print(response.read().decode())
print("stopped")
"""


def as_sluiceway(source: str) -> str:
    """The one change to a Python example: its import."""
    assert source.count("import uvicorn\n") == 1
    return source.replace("import uvicorn\n", "import sluiceway as uvicorn\n")


async def spawn_script(directory: Path, name: str) -> CLIProcess:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        name,
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return CLIProcess(process)


@pytest.mark.parametrize(
    "example",
    [RUN_IMPORT_STRING, RUN_APP_OBJECT, CONFIG_SERVER_RUN, ASYNC_SERVE],
    ids=["run-import-string", "run-app-object", "config-server-run", "async-serve"],
)
async def test_python_example(tmp_path: Path, example: str) -> None:
    (tmp_path / "main.py").write_text(as_sluiceway(example.replace("{app}", MAIN_APP)))
    proc = await spawn_script(tmp_path, "main.py")
    try:
        address = (await proc.wait_for_line(r"Listening on (\S+)")).group(1)
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            assert (await client.get(address + "/")).text == "run"
        proc.signal(signal.SIGINT)  # Ctrl+C
        assert await proc.wait_exit() == 0, proc.text
    finally:
        if proc.process.returncode is None:
            proc.process.kill()
            await proc.process.wait()
    # Logging was set up as uvicorn's Config does: the server's INFO lines are there.
    assert "[INFO] Listening on" in proc.text
    assert "Server stopped." in proc.text


async def test_run_in_a_thread_example(tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(EXAMPLE_APP)
    (tmp_path / "test_script.py").write_text(as_sluiceway(THREAD_PATTERN))
    proc = await spawn_script(tmp_path, "test_script.py")
    assert proc.process.stdout is not None
    out = await asyncio.wait_for(proc.process.stdout.read(), TIMEOUT_S)
    assert await proc.wait_exit() == 0, proc.text
    lines = out.decode().splitlines()
    # stdout has the access log too (it goes there, as uvicorn's does).
    assert json.dumps({"client": "127.0.0.1", "path": "/thread"}) in lines
    assert any('"GET /thread HTTP/1.1" 200' in line for line in lines)
    assert lines[-1] == "stopped"


@pytest.mark.parametrize(
    "command",
    [
        "uvicorn example:app --port 0",
        "uvicorn example:app --reload --port 0",
        "uvicorn --factory example:create_app --port 0",
        "uvicorn example:app --host 127.0.0.1 --port 0 --workers 2",
        "uvicorn example:app --port 0 --proxy-headers --forwarded-allow-ips='*'",
        "uvicorn example:app --uds {tmp}/uvicorn.sock",
        "UVICORN_PORT=0 UVICORN_LOG_LEVEL=debug uvicorn example:app",
        "uvicorn example:app --port 0 --http h11 --ws wsproto --loop asyncio --lifespan off",
    ],
)
async def test_command_line_example(tmp_path: Path, command: str) -> None:
    (tmp_path / "example.py").write_text(EXAMPLE_APP)
    words = shlex.split(command.format(tmp=tmp_path))
    env = dict(word.split("=", 1) for word in words[: words.index("uvicorn")])
    args = words[words.index("uvicorn") + 1 :]  # the one change: uvicorn -> sluiceway run
    async with cli_server(*args, cwd=tmp_path, env=env) as proc:
        if proc.address.startswith("unix:"):
            transport = httpx.AsyncHTTPTransport(uds=proc.address.removeprefix("unix:"))
            base = "http://localhost"
        else:
            transport, base = httpx.AsyncHTTPTransport(), proc.address
        # The proxy example's client is the one its proxy names.
        proxied = "--forwarded-allow-ips" in command
        headers = {"x-forwarded-for": "203.0.113.7"} if proxied else {}
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S) as http:
            facts = (await http.get(base + "/path", headers=headers)).json()
        assert facts["path"] == "/path"
        if "--uds" not in command:
            assert facts["client"] == ("203.0.113.7" if proxied else "127.0.0.1")
        proc.signal(signal.SIGINT)
        assert await proc.wait_exit() == 0, proc.text
    assert not [line for line in proc.stderr if "[ERROR]" in line or "[WARNING]" in line]


def test_examples_change_only_the_import() -> None:
    # Guard on the guard: every Python example above uses uvicorn's own names.
    for example in (RUN_IMPORT_STRING, RUN_APP_OBJECT, CONFIG_SERVER_RUN, ASYNC_SERVE):
        assert "sluiceway" not in example and "uvicorn." in example
    assert "sluiceway" not in THREAD_PATTERN
    assert textwrap.dedent(THREAD_PATTERN) == THREAD_PATTERN
