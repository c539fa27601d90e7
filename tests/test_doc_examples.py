"""Every Python block in README.md and docs/*.md runs as written (issue #18).

A fenced ```python block runs, unless the line before its fence (blank lines
aside) is one of these comments, which GitHub does not render:

* ``<!-- fragment: REASON -->``: not run, because it needs names, a project
  or a service from elsewhere, and the reason says which. It must still
  compile, so a typo in it fails here too.
* ``<!-- given: PYTHON -->``: this code runs first, in the block's namespace:
  for a name the prose says comes from elsewhere (``app``, ``SECRET_KEY``).

Running a block: its text is executed as a module body in a fresh namespace
(top-level ``await`` allowed, as in ``python -m asyncio``), in a temporary
working directory. Then every ``test_*`` function it defines is called, and
an ASGI app it defines (``application`` or ``app``) is served by a real
sluiceway ``Server`` on an ephemeral port and asked for ``/`` by httpx: an
app that routes HTTP must not answer 5xx. Chat examples also get two
WebSocket clients in one room. A failure points at the doc's own line.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

import sluiceway
from sluiceway.consumers import AsyncWebsocketConsumer, ConsumerApp, WebsocketConsumer
from sluiceway.layers import channel_layers
from sluiceway.routing import ProtocolTypeRouter

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_S = 5.0

FENCE = re.compile(r"^```python\s*$")
END = re.compile(r"^```\s*$")
MARKER = re.compile(r"^<!--\s*(fragment|given):\s*(.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the first line of code
    code: str
    marker: str | None  # "fragment", "given" or None
    argument: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> Iterator[Block]:
    lines = path.read_text().split("\n")
    index = 0
    while index < len(lines):
        if not FENCE.match(lines[index]):
            index += 1
            continue
        before = index - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        found = MARKER.match(lines[before].strip()) if before >= 0 else None
        end = index + 1
        while not END.match(lines[end]):
            end += 1
        yield Block(
            path,
            index + 2,
            "\n".join(lines[index + 1 : end]),
            found.group(1) if found else None,
            found.group(2) if found else "",
        )
        index = end + 1


BLOCKS = [block for path in DOCS for block in blocks_of(path)]


def compiled(block: Block) -> Any:
    # Blank lines in front keep the doc's line numbers in tracebacks.
    source = "\n" * (block.line - 1) + block.code
    return compile(source, str(block.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


async def run_block(block: Block) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``block``; return its namespace and what its ``given`` code defined."""
    namespace: dict[str, Any] = {"__name__": "doc_example"}
    if block.marker == "given":
        exec(block.argument, namespace)
    given = dict(namespace)
    result = eval(compiled(block), namespace)
    if inspect.iscoroutine(result):
        await result
    return namespace, given


@pytest.fixture(autouse=True)
def _clean_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each block starts in an empty directory with unconfigured channel layers."""
    monkeypatch.chdir(tmp_path)
    channel_layers.reset()
    yield
    channel_layers.reset()


@pytest.fixture
async def served() -> AsyncIterator[Any]:
    servers: list[sluiceway.Server] = []

    async def start(app: Any) -> sluiceway.Server:
        server = sluiceway.Server(sluiceway.Config(host="127.0.0.1", port=0), app)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.shutdown()


def routes_http(app: Any) -> bool:
    """Whether ``app`` claims to answer HTTP (a WebSocket consumer or router does not)."""
    if isinstance(app, ProtocolTypeRouter):
        return "http" in app.application_mapping
    if isinstance(app, ConsumerApp):
        return not issubclass(app.consumer_class, (AsyncWebsocketConsumer, WebsocketConsumer))
    return True


def test_the_docs_have_examples() -> None:
    # A moved file or a changed fence style would otherwise pass vacuously.
    assert sum(block.marker != "fragment" for block in BLOCKS) >= 6
    assert any(block.path.name == "README.md" for block in BLOCKS)
    # Python under another fence name would never run: one name for all.
    other = re.compile(r"^[ \t]*```[ \t]*(py|python3|pycon|Python)[ \t]*$", re.M)
    assert [path.name for path in DOCS if other.search(path.read_text())] == []
    # An indented fence (inside a list) is not read either.
    indented = re.compile(r"^[ \t]+```python", re.M)
    assert [path.name for path in DOCS if indented.search(path.read_text())] == []


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.marker == "fragment"], ids=lambda block: block.name
)
def test_a_fragment_says_why_and_compiles(block: Block) -> None:
    assert len(block.argument) > 10, f"{block.name}: a fragment marker needs a reason"
    compiled(block)


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.marker != "fragment"], ids=lambda block: block.name
)
async def test_a_block_runs_as_written(block: Block, served: Any) -> None:
    namespace, given = await run_block(block)
    for name, function in list(namespace.items()):
        if name.startswith("test_") and inspect.isfunction(function):
            outcome = function()
            if inspect.iscoroutine(outcome):
                await outcome
    name = "application" if "application" in namespace else "app"
    app = namespace.get(name)
    if app is None or app is given.get(name):
        return  # no app, or the given one (served by its own tests)
    server = await served(app)
    if routes_http(app):
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/")
        assert response.status_code < 500, f"{block.name}: GET / gave {response.status_code}"


CHATS = [b for b in BLOCKS if b.marker is None and "class Chat(" in b.code]


@pytest.mark.parametrize("block", CHATS, ids=lambda block: block.name)
async def test_a_chat_example_relays_a_message_to_everyone_in_the_room(
    block: Block, served: Any
) -> None:
    namespace, _ = await run_block(block)
    server = await served(namespace["application"])
    route = re.search(r'path\("([^"]*)", Chat\.as_asgi\(\)\)', block.code)
    url = f"ws://127.0.0.1:{server.port}/{route.group(1) if route else ''}"
    origin = {"origin": "http://localhost"}
    async with (
        connect(url, additional_headers=origin, open_timeout=TIMEOUT_S) as ada,
        connect(url, additional_headers=origin, open_timeout=TIMEOUT_S) as grace,
    ):
        await ada.send(json.dumps({"text": "hello, room"}))
        for client in (ada, grace):
            received = await asyncio.wait_for(client.recv(), TIMEOUT_S)
            assert json.loads(received) == {"text": "hello, room"}
