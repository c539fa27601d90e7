"""The chat example end to end: two ``sluiceway run`` processes sharing one Redis.

A ``websockets`` client on each server, then two headless Chromium tabs (one
per server) driven through the DevTools protocol: a message typed in one
arrives in the other, through the Redis layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets

from tests.browser import chromium, start_process, wait_for
from tests.layers.conftest import RedisServer

ROOT = Path(__file__).parents[2]
T = 15.0


class ServerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, address: str) -> None:
        self.proc = proc
        self.address = address  # http://127.0.0.1:PORT
        self.ws = address.replace("http://", "ws://", 1)
        self.lines: list[str] = []
        self._drain = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.lines.append(line.decode(errors="replace"))


@contextlib.asynccontextmanager
async def chat_servers(redis: RedisServer, count: int = 2) -> AsyncIterator[list[ServerProcess]]:
    env = dict(os.environ, SLUICEWAY_CHANNEL_LAYER=redis.url)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "sluiceway", "run", "examples.chat.app:application"]
    servers: list[ServerProcess] = []
    try:
        for _ in range(count):
            proc, match = await start_process(
                env, [*argv, "--port", "0"], r"Listening on (\S+)", cwd=ROOT
            )
            servers.append(ServerProcess(proc, match.group(1)))
        yield servers
    finally:
        for server in servers:
            if server.proc.returncode is None:
                server.proc.terminate()
        for server in servers:
            try:
                await asyncio.wait_for(server.proc.wait(), T)
            except asyncio.TimeoutError:
                server.proc.kill()
                await server.proc.wait()
            server._drain.cancel()


class _LayerURL:
    """What ``chat_servers`` needs of a server: the ``SLUICEWAY_CHANNEL_LAYER`` URL."""

    def __init__(self, url: str) -> None:
        self.url = url


@pytest.fixture(params=["redis", "sentinel", "pubsub", "cluster", "pubsub-cluster"])
def chat_layer(request: pytest.FixtureRequest) -> _LayerURL:
    """The layer both chat servers use: the queue layer direct, over Sentinel or on a
    Redis Cluster, or pub/sub (on one server, or sharded on the cluster)."""
    if request.param in ("cluster", "pubsub-cluster"):
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        url = cluster.url
        if request.param == "pubsub-cluster":
            url = url.replace("redis+cluster://", "redis+pubsub+cluster://", 1)
        return _LayerURL(url)
    if request.param == "sentinel":
        sentinels = request.getfixturevalue("sentinel_set")
        sentinels.flushall()
        return _LayerURL(sentinels.url)
    server: RedisServer = request.getfixturevalue("redis_server")
    server.flushall()
    if request.param == "pubsub":
        return _LayerURL(server.url.replace("redis://", "redis+pubsub://", 1))
    return _LayerURL(server.url)


async def test_two_servers_share_a_room_through_redis(chat_layer: _LayerURL) -> None:
    async with chat_servers(chat_layer) as (one, two):  # type: ignore[arg-type]
        async with (
            websockets.connect(one.ws + "/ws/chat/lobby/") as alice,
            websockets.connect(two.ws + "/ws/chat/lobby/") as bob,
            websockets.connect(two.ws + "/ws/chat/elsewhere/") as carol,
        ):
            await alice.send(json.dumps({"name": "alice", "text": "hello from server one"}))
            got = json.loads(await asyncio.wait_for(bob.recv(), T))
            assert got == {"name": "alice", "text": "hello from server one"}
            assert json.loads(await asyncio.wait_for(alice.recv(), T))["name"] == "alice"
            await bob.send(json.dumps({"name": "bob", "text": "and back"}))
            assert json.loads(await asyncio.wait_for(alice.recv(), T))["text"] == "and back"
            # Rooms are groups: the other room heard nothing.
            await carol.send(json.dumps({"name": "carol", "text": "anyone?"}))
            assert json.loads(await asyncio.wait_for(carol.recv(), T))["text"] == "anyone?"
        # A room name the consumer refuses (too long for a group name) is closed, not crashed.
        with pytest.raises(websockets.exceptions.InvalidStatus):
            async with websockets.connect(one.ws + "/ws/chat/" + "x" * 60 + "/"):
                pass
        assert all("Traceback" not in line for s in (one, two) for line in s.lines)


# -- Chromium (tests/browser.py) ----------------------------------------------------------


async def test_a_message_typed_in_one_browser_tab_appears_in_another(
    redis_server: RedisServer,
) -> None:
    redis_server.flushall()
    async with chat_servers(redis_server) as (one, two), chromium() as devtools:
        tab1 = await devtools.open_tab(one.address + "/?room=garden")
        tab2 = await devtools.open_tab(two.address + "/?room=garden")
        for tab in (tab1, tab2):
            await devtools.evaluate(tab, wait_for("document.body.dataset.state === 'open'"))
        # Type into tab 1 as a user would: focus, insert text, press Send.
        await devtools.evaluate(tab1, "document.getElementById('name').value = 'tab-one'")
        await devtools.evaluate(tab1, "document.getElementById('text').focus()")
        await devtools.call("Input.insertText", tab1, text="hello across processes")
        await devtools.evaluate(tab1, "document.getElementById('send').click()")
        seen = await devtools.evaluate(
            tab2,
            wait_for(
                "[...document.querySelectorAll('#log li')].map(li => li.textContent)"
                ".find(t => t.includes('hello across processes'))"
            ),
        )
        assert seen == "tab-one: hello across processes"
