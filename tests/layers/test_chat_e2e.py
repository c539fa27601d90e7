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
import re
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

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


async def _start(env: dict[str, str], argv: list[str], ready: str) -> tuple[Any, re.Match[str]]:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    seen = []
    while True:
        raw = await asyncio.wait_for(proc.stderr.readline(), T)
        if not raw:
            raise AssertionError(f"{argv[0]} exited before it was ready:\n{''.join(seen)}")
        seen.append(raw.decode(errors="replace"))
        match = re.search(ready, seen[-1])
        if match:
            return proc, match


@contextlib.asynccontextmanager
async def chat_servers(redis: RedisServer, count: int = 2) -> AsyncIterator[list[ServerProcess]]:
    env = dict(os.environ, SLUICEWAY_CHANNEL_LAYER=redis.url)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", "sluiceway", "run", "examples.chat.app:application"]
    servers: list[ServerProcess] = []
    try:
        for _ in range(count):
            proc, match = await _start(env, [*argv, "--port", "0"], r"Listening on (\S+)")
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


# -- Chromium ------------------------------------------------------------------------------


class DevTools:
    """A minimal Chrome DevTools Protocol client over the ``websockets`` client."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            reply = json.loads(raw)
            future = self.pending.pop(reply.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(reply)

    async def call(self, method: str, session: str | None = None, **params: Any) -> Any:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, T)
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply["result"]

    async def open_tab(self, url: str) -> str:
        target = await self.call("Target.createTarget", url=url)
        attached = await self.call(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        return str(attached["sessionId"])

    async def evaluate(self, session: str, expression: str) -> Any:
        deadline = asyncio.get_running_loop().time() + T
        while True:
            try:
                result = await self.call(
                    "Runtime.evaluate",
                    session,
                    expression=expression,
                    awaitPromise=True,
                    returnByValue=True,
                )
                break
            except AssertionError as exc:
                # The tab may still be swapping about:blank for our page.
                if "context" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        if "exceptionDetails" in result:
            raise AssertionError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")


WAIT_FOR = """
new Promise((resolve, reject) => {
  const deadline = Date.now() + %d;
  (function poll() {
    let value;
    try { value = (%s); } catch (e) { value = false; }
    if (value) return resolve(value);
    if (Date.now() > deadline) return reject(new Error("timed out waiting for: %s"));
    setTimeout(poll, 25);
  })();
})
"""


def wait_for(js: str, timeout_ms: int = 10000) -> str:
    return WAIT_FOR % (timeout_ms, js, js.replace('"', "'"))


async def test_a_message_typed_in_one_browser_tab_appears_in_another(
    redis_server: RedisServer,
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        # .ci/run installs Debian's chromium: in CI a missing browser is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    redis_server.flushall()
    profile = tempfile.mkdtemp(prefix="sluiceway-chromium-")
    browser = None
    try:
        async with chat_servers(redis_server) as (one, two):
            browser, match = await _start(
                dict(os.environ),
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-dev-shm-usage",
                    f"--user-data-dir={profile}",
                    "--remote-debugging-port=0",
                    "about:blank",
                ],
                r"DevTools listening on (ws://\S+)",
            )
            drain = asyncio.ensure_future(_discard(browser.stderr))
            async with websockets.connect(match.group(1), max_size=None) as ws:
                devtools = DevTools(ws)
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
                devtools.reader.cancel()
                await asyncio.gather(devtools.reader, return_exceptions=True)
            drain.cancel()
    finally:
        if browser is not None and browser.returncode is None:
            browser.kill()
            await browser.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def _discard(stream: asyncio.StreamReader | None) -> None:
    if stream is not None:
        while await stream.readline():
            pass
