"""Headless Chromium for the end-to-end tests, driven over the DevTools protocol.

``chromium()`` starts the browser on a throwaway profile and yields a
``DevTools`` client; tabs are opened with ``open_tab`` (optionally in their own
browser context, so two tabs can be two users with separate cookies) and
driven with ``evaluate`` and ``Input.insertText``, as a user types. Waiting in
the page is ``wait_for(js)``: a promise that polls a condition in the page,
bounded by a deadline, never a sleep in the test.

.ci/run installs Debian's chromium: in CI (``CI`` set) a missing browser is a
failure; elsewhere the test is skipped with the install line.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets

T = 10.0  # seconds one DevTools call may take


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

    async def open_tab(self, url: str, *, own_context: bool = False) -> str:
        """Open ``url`` in a new tab; ``own_context``: with its own cookies (another user)."""
        params: dict[str, Any] = {"url": url}
        if own_context:
            context = await self.call("Target.createBrowserContext")
            params["browserContextId"] = context["browserContextId"]
        target = await self.call("Target.createTarget", **params)
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
                # The tab may still be swapping about:blank (or the last page)
                # for the next, or navigate while a wait_for polls: ask the new page.
                retry = "context" in str(exc) or "navigated" in str(exc)
                if not retry or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        if "exceptionDetails" in result:
            raise AssertionError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)


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
    """A page expression that resolves to ``js``'s value once it is truthy."""
    return WAIT_FOR % (timeout_ms, js, js.replace('"', "'"))


def chromium_path() -> str:
    """The browser binary, or the test's skip (failure in CI) when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


async def start_process(
    env: dict[str, str], argv: Sequence[str], ready: str, cwd: str | os.PathLike[str] | None = None
) -> tuple[asyncio.subprocess.Process, re.Match[str]]:
    """Start ``argv`` and wait (bounded) for a stderr line matching ``ready``."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    pattern = re.compile(ready)

    async def wait() -> re.Match[str]:
        assert proc.stderr is not None
        while line := (await proc.stderr.readline()).decode(errors="replace"):
            seen.append(line)
            if match := pattern.search(line):
                return match
        raise AssertionError(f"{argv[0]} exited before {ready!r}:\n{''.join(seen)}")

    try:
        return proc, await asyncio.wait_for(wait(), 30)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


async def discard(stream: asyncio.StreamReader | None) -> None:
    """Read a child's pipe to its end, so the child never blocks on a full pipe."""
    if stream is not None:
        while await stream.readline():
            pass


@asynccontextmanager
async def chromium(extra_args: Sequence[str] = ()) -> AsyncIterator[DevTools]:
    """A headless Chromium on a fresh profile; yields its DevTools client."""
    binary = chromium_path()
    profile = tempfile.mkdtemp(prefix="sluiceway-chromium-")
    browser = None
    try:
        browser, match = await start_process(
            dict(os.environ),
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                *extra_args,
                "about:blank",
            ],
            r"DevTools listening on (ws://\S+)",
        )
        drain = asyncio.ensure_future(discard(browser.stderr))
        async with websockets.connect(match.group(1), max_size=None) as ws:
            devtools = DevTools(ws)
            try:
                yield devtools
            finally:
                await devtools.close()
        drain.cancel()
    finally:
        if browser is not None and browser.returncode is None:
            browser.kill()
            await browser.wait()
        shutil.rmtree(profile, ignore_errors=True)
