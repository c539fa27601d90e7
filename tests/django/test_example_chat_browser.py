"""examples/django_chat in a real browser: two headless-Chromium tabs chat through it.

The tutorial's room page (its own JavaScript, unchanged) under ``manage.py
runserver`` on sluiceway, on the in-memory layer and on Redis. Tab one logs in
through Django's login form, typed as a user would; tab two is another browser
context (its own cookies), so it stays anonymous. Each tab's message reaches
the other's chat log with the sender's name that the consumer took from
``scope["user"]``: the group send went through the channel layer and the
session cookie set by Django's login view reached the WebSocket's scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.browser import DevTools, chromium, wait_for
from tests.django.test_example_chat import Project, migrated_database, project  # noqa: F401
from tests.layers.conftest import _running_redis

CHAT_LOG = "document.querySelector('#chat-log').value"


def log_once(text: str) -> str:
    """The chat log, once it contains ``text``."""
    return wait_for(f"{CHAT_LOG}.includes('{text}') && {CHAT_LOG}")


@pytest.fixture(params=["memory", "redis"])
def layer_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    if request.param == "memory":
        yield {}
        return
    for server in _running_redis():
        yield {"CHAT_REDIS_URL": server.url}


async def log_in(devtools: DevTools, tab: str) -> None:
    """Fill in and submit Django's login form as a user would."""
    await devtools.evaluate(tab, wait_for("document.querySelector('#id_username')"))
    for field, text in (("#id_username", "alice"), ("#id_password", "pw")):
        await devtools.evaluate(tab, f"document.querySelector('{field}').focus()")
        await devtools.call("Input.insertText", tab, text=text)
    await devtools.evaluate(tab, "document.querySelector('form').submit()")
    # The login view redirects to the rooms page.
    await devtools.evaluate(tab, wait_for("location.pathname === '/chat/'"))


async def say(devtools: DevTools, tab: str, text: str) -> None:
    """Type into the room page's input and press Enter, which its script sends."""
    await devtools.evaluate(tab, "document.querySelector('#chat-message-input').focus()")
    await devtools.call("Input.insertText", tab, text=text)
    for kind in ("keyDown", "keyUp"):
        await devtools.call(
            "Input.dispatchKeyEvent",
            tab,
            type=kind,
            key="Enter",
            code="Enter",
            windowsVirtualKeyCode=13,
            text="\r" if kind == "keyDown" else "",
        )


async def test_two_browser_tabs_chat_through_the_tutorial_room(
    project: Project,  # noqa: F811
    layer_env: dict[str, str],
) -> None:
    project.env.update(layer_env)
    project.start()
    port = await asyncio.to_thread(project.wait_for_banner)
    base = f"http://127.0.0.1:{port}"
    async with chromium() as devtools:
        alice = await devtools.open_tab(f"{base}/accounts/login/?next=/chat/")
        await log_in(devtools, alice)
        await devtools.evaluate(alice, f"location.href = '{base}/chat/garden/'")
        guest = await devtools.open_tab(f"{base}/chat/garden/", own_context=True)
        # Both sockets open before anyone speaks. The consumer joins the group
        # before it accepts, so an open socket is a member of the room.
        for tab in (alice, guest):
            await devtools.evaluate(
                tab, wait_for("typeof chatSocket !== 'undefined' && chatSocket.readyState === 1")
            )
        await say(devtools, alice, "hello from alice")
        for tab in (alice, guest):
            log = await devtools.evaluate(tab, log_once("hello from"))
            assert log == "alice: hello from alice\n"
        await say(devtools, guest, "hi, I am anonymous")
        log = await devtools.evaluate(alice, log_once("hi, I am"))
        assert log == "alice: hello from alice\nanonymous: hi, I am anonymous\n"
    assert not any("Traceback" in line for line in project.lines), "".join(project.lines)
