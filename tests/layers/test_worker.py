"""``sluiceway worker``: a real subprocess consuming named channels from a real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sluiceway.layers.memory import InMemoryChannelLayer
from sluiceway.layers.redis import RedisChannelLayer
from sluiceway.worker import Worker
from tests.layers.conftest import RedisServer

T = 15.0

APP = textwrap.dedent(
    """
    import asyncio

    from sluiceway.consumers import AsyncConsumer
    from sluiceway.routing import ChannelNameRouter, ProtocolTypeRouter


    class Jobs(AsyncConsumer):
        async def job_run(self, message):
            if message.get("slow"):
                await asyncio.sleep(message["slow"])
            if message.get("crash"):
                raise RuntimeError("job crashed on purpose")
            done = {"type": "job.done", "n": message["n"], "by": self.scope["channel"]}
            await self.channel_layer.send(message["reply_to"], done)


    async def raw(scope, receive, send):
        layer_mod = __import__("sluiceway.layers", fromlist=["get_channel_layer"])
        layer = layer_mod.get_channel_layer()
        while True:
            message = await receive()
            await layer.send(message["reply_to"], {"type": "raw.done", "n": message["n"]})


    routes = {"jobs.a": Jobs.as_asgi(), "jobs.b": Jobs.as_asgi(), "raw": raw}
    app = ProtocolTypeRouter({"channel": ChannelNameRouter(routes)})
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "workerapp.py").write_text(APP)
    return tmp_path


def _env(layer_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SLUICEWAY_CHANNEL_LAYER"] = layer_url
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH", "")]
    )
    return env


@pytest.fixture
def worker_proc(app_dir: Path, redis_server: RedisServer) -> Iterator[subprocess.Popen[bytes]]:
    redis_server.flushall()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sluiceway",
            "worker",
            "workerapp:app",
            "jobs.a",
            "jobs.b",
            "raw",
            "--graceful-timeout",
            "3",
        ],
        cwd=app_dir,
        env=_env(redis_server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


@pytest.fixture
async def client_layer(redis_server: RedisServer) -> AsyncIterator[RedisChannelLayer]:
    layer = RedisChannelLayer([redis_server.url])
    yield layer
    await layer.close()


async def test_worker_consumes_named_channels(
    worker_proc: subprocess.Popen[bytes], client_layer: RedisChannelLayer
) -> None:
    reply = await client_layer.new_channel()
    await client_layer.send("jobs.a", {"type": "job.run", "n": 1, "reply_to": reply})
    await client_layer.send("jobs.b", {"type": "job.run", "n": 2, "reply_to": reply})
    await client_layer.send("raw", {"type": "anything", "n": 3, "reply_to": reply})
    got = [await asyncio.wait_for(client_layer.receive(reply), T) for _ in range(3)]
    assert sorted(m["n"] for m in got) == [1, 2, 3]
    by = {m["n"]: m.get("by") for m in got}
    assert by[1] == "jobs.a" and by[2] == "jobs.b"


async def test_worker_survives_a_crashing_consumer(
    worker_proc: subprocess.Popen[bytes], client_layer: RedisChannelLayer
) -> None:
    reply = await client_layer.new_channel()
    await client_layer.send("jobs.a", {"type": "job.run", "n": 1, "crash": True, "reply_to": reply})
    await client_layer.send("jobs.a", {"type": "job.run", "n": 2, "reply_to": reply})
    assert (await asyncio.wait_for(client_layer.receive(reply), T))["n"] == 2
    assert worker_proc.poll() is None


async def test_sigterm_finishes_the_message_in_hand(
    worker_proc: subprocess.Popen[bytes], client_layer: RedisChannelLayer
) -> None:
    reply = await client_layer.new_channel()
    await client_layer.send("jobs.a", {"type": "job.run", "n": 0, "reply_to": reply})
    assert (await asyncio.wait_for(client_layer.receive(reply), T))["n"] == 0  # worker is up
    await client_layer.send("jobs.a", {"type": "job.run", "n": 1, "slow": 1.5, "reply_to": reply})
    # Wait until the worker has taken the slow job off Redis, then stop it.
    for _ in range(200):
        if not await client_layer._state().shards[0].client.exists("sluiceway:c:jobs.a"):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    worker_proc.send_signal(signal.SIGTERM)
    assert (await asyncio.wait_for(client_layer.receive(reply), T))["n"] == 1
    code = await asyncio.wait_for(asyncio.to_thread(worker_proc.wait, 10), T)
    assert code == 0
    # Messages sent after the stop stay in Redis for the next worker.
    await client_layer.send("jobs.b", {"type": "job.run", "n": 9, "reply_to": reply})
    assert await client_layer._state().shards[0].client.llen("sluiceway:c:jobs.b") == 1


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["workerapp:app"], "arguments are required"),
        (["nosuchmodule:app", "x"], "nosuchmodule"),
        (["workerapp:nothere", "x"], "nothere"),
        (["workerapp:app", "bad name"], "invalid"),
        (["workerapp:app", "specific.x!y"], "named channels"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    app_dir: Path, redis_server: RedisServer, argv: list[str], needle: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sluiceway", "worker", *argv],
        cwd=app_dir,
        env=_env(redis_server.url),
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_no_layer_is_a_usage_error(app_dir: Path, redis_server: RedisServer) -> None:
    env = _env(redis_server.url)
    env["SLUICEWAY_CHANNEL_LAYER"] = "none"
    proc = subprocess.run(
        [sys.executable, "-m", "sluiceway", "worker", "workerapp:app", "jobs.a"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert b"no channel layer" in proc.stderr


async def test_an_instance_that_dies_with_a_message_queued_is_restarted() -> None:
    """The instance crashes while the next message waits in its queue and the listener,
    holding a third, waits for room: both must still be handled, with no new message."""
    layer = InMemoryChannelLayer()
    gate = asyncio.Event()
    handled: list[int] = []
    all_handled = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["n"] == 0:
                await gate.wait()
                raise RuntimeError("crash on purpose")
            handled.append(message["n"])
            if len(handled) == 2:
                all_handled.set()

    worker = Worker(app, ["jobs"], layer, graceful_timeout_s=0.1)
    running = asyncio.ensure_future(worker.run())
    for n in range(3):
        await layer.send("jobs", {"type": "job", "n": n})
    # Wait until message 1 sits in the instance's queue and 2 is held by the listener.
    for _ in range(500):
        if layer._store.depth("jobs") == 0 and worker._instances["jobs"].queue.full():
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the worker never took the messages")
    gate.set()
    try:
        await asyncio.wait_for(all_handled.wait(), 5)
        assert handled == [1, 2]
    finally:
        worker.stop()
        await asyncio.wait_for(running, 5)


async def test_messages_never_handed_over_go_back_to_the_layer_on_stop() -> None:
    """The instance is stuck on message 0 past the graceful time: 1 (queued) and
    2 (held by the listener) were taken from the layer and must go back, in order."""
    layer = InMemoryChannelLayer()
    started = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        started.set()
        await asyncio.Event().wait()  # a handler that never finishes

    worker = Worker(app, ["jobs"], layer, graceful_timeout_s=0.1)
    running = asyncio.ensure_future(worker.run())
    for n in range(3):
        await layer.send("jobs", {"type": "job", "n": n})
    await asyncio.wait_for(started.wait(), 5)
    for _ in range(500):
        if layer._store.depth("jobs") == 0 and worker._instances["jobs"].queue.full():
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the worker never took the messages")
    worker.stop()
    await asyncio.wait_for(running, 5)
    back = [(await asyncio.wait_for(layer.receive("jobs"), 5))["n"] for _ in range(2)]
    assert back == [1, 2]


async def start_worker(app_dir: Path, layer_url: str) -> asyncio.subprocess.Process:
    """``sluiceway worker workerapp:app jobs.a`` on ``layer_url``, its output discarded."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sluiceway",
        "worker",
        "workerapp:app",
        "jobs.a",
        "--graceful-timeout",
        "1",
        cwd=app_dir,
        env=_env(layer_url),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


@pytest.mark.parametrize("backend", ["sentinel", "cluster"])
async def test_worker_on_sentinel_and_cluster(
    backend: str, app_dir: Path, request: pytest.FixtureRequest
) -> None:
    """``sluiceway worker`` on a ``redis+sentinel://`` or ``redis+cluster://`` layer, unchanged."""
    from sluiceway.layers import layer_config_from_url

    servers = request.getfixturevalue("sentinel_set" if backend == "sentinel" else "redis_cluster")
    url: str = servers.url
    proc = await start_worker(app_dir, url)
    config = layer_config_from_url(url)
    assert config is not None
    layer = RedisChannelLayer(**config["CONFIG"])
    try:
        reply = await layer.new_channel()
        # A queue layer holds the job until the worker, starting, takes it.
        await layer.send("jobs.a", {"type": "job.run", "n": 1, "reply_to": reply})
        got = await asyncio.wait_for(layer.receive(reply), T)
        assert got["n"] == 1 and got["by"] == "jobs.a"
    finally:
        await layer.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), T)
