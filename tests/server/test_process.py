"""``sluiceway run`` as a real process: listening line, env, lifespan, signals, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import httpx
import pytest

from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server

HERE = Path(__file__).parent
APP_DIR = ["--app-dir", str(HERE)]


async def get(url: str, transport: httpx.AsyncBaseTransport | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=TIMEOUT_S, transport=transport) as client:
        return await client.get(url)


async def open_request(
    proc: CLIProcess, path: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", proc.port), TIMEOUT_S
    )
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return reader, writer


async def test_serves_and_logs_the_bound_address_and_copies_state() -> None:
    async with cli_server("cli_apps:app", "--port", "0", *APP_DIR) as proc:
        assert proc.address.startswith("http://127.0.0.1:")
        assert proc.port > 0
        assert (await get(proc.address + "/")).text == "pool-ready"
        assert (await get(proc.address + "/state")).text == "fresh"
        assert (await get(proc.address + "/state")).text == "fresh"  # a copy per request
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert "lifespan shutdown ran" in proc.text
    # The start line says whether the hot path is the compiled one (setup.py's mypyc step).
    import sluiceway.http1.protocol as protocol

    compiled = protocol.__file__.endswith(tuple(EXTENSION_SUFFIXES))
    assert ("compiled)" if compiled else "pure Python)") in proc.text


async def test_the_heap_at_startup_is_frozen_out_of_gc() -> None:
    # Full collections scanned every object the app and the server imported,
    # pausing all requests for ms each (p99 doubled); frozen, they skip them.
    async with cli_server("cli_apps:app", "--port", "0", *APP_DIR) as proc:
        assert int((await get(proc.address + "/gc-frozen")).text) > 1000
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_env_file_and_sluiceway_env(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text("GREETING_FROM_ENV_FILE='hello from file'\nSLUICEWAY_SERVER_HEADER=false\n")
    env = {"SLUICEWAY_PORT": "0", "SLUICEWAY_HEADER": "X-Deploy: blue", "FROM_SHELL": "shell"}
    async with cli_server("cli_apps:app", "--env-file", str(env_file), *APP_DIR, env=env) as proc:
        response = await get(proc.address + "/env")
        assert response.text == "hello from file|shell"
        assert response.headers["x-deploy"] == "blue"
        assert "server" not in response.headers
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_port_in_use_exits_2_with_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        async with cli_server(
            "cli_apps:app", "--port", str(port), *APP_DIR, wait_listening=False
        ) as proc:
            assert await proc.wait_exit() == 2
    assert proc.stderr == [
        f"sluiceway: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


async def test_lifespan_startup_failed_exits_1_with_the_apps_message() -> None:
    async with cli_server(
        "cli_apps:failing_startup", "--port", "0", *APP_DIR, wait_listening=False
    ) as proc:
        assert await proc.wait_exit() == 1
    assert proc.stderr[-1] == "sluiceway: error: application startup failed: database is down"
    assert not any("Listening on" in line for line in proc.stderr)
    assert "Traceback" not in proc.text


async def test_lifespan_auto_serves_an_app_that_raises_on_lifespan() -> None:
    async with cli_server("cli_apps:no_lifespan", "--port", "0", *APP_DIR) as proc:
        assert (await get(proc.address)).text == "served anyway"
        proc.signal(signal.SIGINT)
        assert await proc.wait_exit() == 0
    notes = [line for line in proc.stderr if "lifespan" in line.lower()]
    assert len(notes) == 1
    assert "does not support the ASGI lifespan protocol" in notes[0]
    assert "Traceback" not in proc.text


async def test_lifespan_on_refuses_an_app_that_raises_on_lifespan() -> None:
    async with cli_server(
        "cli_apps:no_lifespan", "--port", "0", "--lifespan", "on", *APP_DIR, wait_listening=False
    ) as proc:
        assert await proc.wait_exit() == 1
    assert (
        "application startup failed: exception in lifespan startup: ValueError('only HTTP here')"
        in (proc.stderr[-1])
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_during_lifespan_startup_stops_cleanly(sig: signal.Signals) -> None:
    # Without handlers installed before startup, Python's default kills the
    # process (exit -15, or a KeyboardInterrupt traceback) and the app's
    # startup code never runs its cleanup.
    async with cli_server(
        "cli_apps:slow_startup", "--port", "0", *APP_DIR, wait_listening=False
    ) as proc:
        await proc.wait_for_line("startup began")
        proc.signal(sig)
        assert await proc.wait_exit() == 0
    assert "startup was cancelled" in proc.text
    assert f"Received {sig.name} during application startup: stopping." in proc.text
    assert "Stopped during application startup." in proc.text
    assert not any("Listening on" in line for line in proc.stderr)
    assert "Traceback" not in proc.text


async def test_sigterm_lets_in_flight_finish_and_closes_idle_keep_alive() -> None:
    async with cli_server("cli_apps:app", "--port", "0", *APP_DIR) as proc:
        # An idle keep-alive connection: one request answered, connection left open.
        idle_reader, idle_writer = await open_request(proc, "/")
        assert b"pool-ready" in await asyncio.wait_for(
            idle_reader.readuntil(b"pool-ready"), TIMEOUT_S
        )
        # A request in flight: the first part of its body is out.
        reader, writer = await open_request(proc, "/slow")
        await asyncio.wait_for(reader.readuntil(b"part1,"), TIMEOUT_S)
        proc.signal(signal.SIGTERM)
        assert await asyncio.wait_for(idle_reader.read(), TIMEOUT_S) == b""  # closed at once
        rest = await asyncio.wait_for(reader.read(), TIMEOUT_S)  # read until the server closes
        assert b"part2" in rest
        assert rest.endswith(b"0\r\n\r\n")  # the chunked body was completed
        assert await proc.wait_exit() == 0
        for w in (writer, idle_writer):
            w.close()
    lines = proc.stderr
    assert lines.index("lifespan shutdown ran") > next(
        i for i, line in enumerate(lines) if "Received SIGTERM" in line
    )


async def test_app_that_never_finishes_is_cancelled_after_the_graceful_timeout() -> None:
    async with cli_server(
        "cli_apps:app", "--port", "0", "--timeout-graceful-shutdown", "0.5", *APP_DIR
    ) as proc:
        reader, writer = await open_request(proc, "/forever")
        await asyncio.wait_for(reader.readuntil(b"started"), TIMEOUT_S)
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
        writer.close()
    assert "forever was cancelled" in proc.text
    assert "Graceful shutdown timed out after 0.5 s" in proc.text
    assert "lifespan shutdown ran" in proc.text


async def test_second_sigint_forces_exit() -> None:
    async with cli_server("cli_apps:app", "--port", "0", *APP_DIR) as proc:
        reader, writer = await open_request(proc, "/forever")
        await asyncio.wait_for(reader.readuntil(b"started"), TIMEOUT_S)
        proc.signal(signal.SIGINT)
        await proc.wait_for_line("Received SIGINT: shutting down")
        proc.signal(signal.SIGINT)
        assert await proc.wait_exit(timeout=5) == 130  # well before the 30 s graceful timeout
        writer.close()
    assert "forcing exit" in proc.text
    assert "lifespan shutdown ran" not in proc.text


async def test_asgi2_app_is_served() -> None:
    async with cli_server("cli_apps:ASGI2App", "--port", "0", *APP_DIR) as proc:
        assert (await get(proc.address + "/two")).text == "asgi2 /two"
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_factory() -> None:
    async with cli_server("cli_apps:make_app", "--factory", "--port", "0", *APP_DIR) as proc:
        assert (await get(proc.address)).text == "from factory"
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    async with cli_server("cli_apps:app", "--uds", path, *APP_DIR) as proc:
        assert proc.address == f"unix:{path}"
        transport = httpx.AsyncHTTPTransport(uds=path)
        assert (await get("http://localhost/", transport=transport)).text == "pool-ready"
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert not Path(path).exists()


async def test_inherited_fd() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        fd = listener.fileno()
        async with cli_server("cli_apps:app", "--fd", str(fd), *APP_DIR, pass_fds=[fd]) as proc:
            assert proc.address == f"http://127.0.0.1:{port}"
            assert f"(fd {fd})" in proc.text
            assert (await get(f"http://127.0.0.1:{port}/")).text == "pool-ready"
            proc.signal(signal.SIGTERM)
            assert await proc.wait_exit() == 0


@pytest.mark.parametrize("flag", ["--no-date-header", "--no-server-header"])
async def test_header_switches(flag: str) -> None:
    async with cli_server("cli_apps:app", "--port", "0", flag, *APP_DIR) as proc:
        response = await get(proc.address)
        name = "date" if "date" in flag else "server"
        assert name not in response.headers
        assert ("server" if name == "date" else "date") in response.headers
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0


async def test_run_from_python(tmp_path: Path) -> None:
    script = tmp_path / "serve.py"
    script.write_text(
        "import sluiceway\n"
        "from cli_apps import app\n"
        "sluiceway.run(app, host='127.0.0.1', port=0, keep_alive_timeout_s=2.0)\n"
        "print('run returned', flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    proc = CLIProcess(process)
    try:
        address = (await proc.wait_for_line(r"Listening on (\S+)")).group(1)
        assert (await get(address + "/")).text == "pool-ready"
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
        assert process.stdout is not None
        assert (await process.stdout.read()).endswith(b"run returned\n")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
