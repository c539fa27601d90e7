"""In-process WebSocket echo: the adapter, cycle and codec with a fake transport, no sockets.

    python bench/ws_inprocess.py [--size 65536] [--read 70000] [--count 30000] [--text]
    python -m cProfile -s tottime bench/ws_inprocess.py --read 16384 | head -30

Feeds one masked frame per message to the transport's ``data_received`` in reads of ``--read``
bytes (uvloop reads up to 256,000 bytes, so the echo bench mostly delivers whole frames; smaller
reads show a frame that spans reads), lets bench/apps/ws_echo.py echo it, and prints the process
CPU time per message. Kernel and event-loop I/O costs are left out on purpose: this measures what
sluiceway's Python does per message.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

# Import from the repository root (bench.apps...), not from this folder.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.apps.ws_echo import app  # noqa: E402
from sluiceway.config import Config  # noqa: E402
from sluiceway.connection.state import ServerState  # noqa: E402
from sluiceway.http1.ws_carrier import carry  # noqa: E402
from sluiceway.websocket.frames import build_frame  # noqa: E402
from sluiceway.websocket.handshake import Handshake, accept_key  # noqa: E402
from sluiceway.websocket.protocol import WebSocketAdapter  # noqa: E402


class CountingTransport(asyncio.Transport):
    """Accepts every write at once and counts the bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.written += len(data)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def abort(self) -> None:
        self.closing = True


async def run(size: int, read: int, count: int, text: bool) -> None:
    config = Config()
    state = ServerState(config)
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    scope: Any = {"type": "websocket", "path": "/", "headers": [], "subprotocols": []}
    adapter = WebSocketAdapter(app, scope, None, config, state)
    transport = CountingTransport()
    # Through the HTTP/1.1 carrier, as a server runs it: the same per-read call.
    proto = carry(transport, adapter, Handshake(key, accept_key(key)), state, b"")
    for _ in range(5):  # websocket.connect, accept
        await asyncio.sleep(0)
    payload = b"x" * size if text else os.urandom(size)
    frame = build_frame(1 if text else 2, payload, mask=os.urandom(4))
    reads = [frame[i : i + read] for i in range(0, len(frame), read)]
    before = transport.written
    cpu = time.process_time()
    for _ in range(count):
        for chunk in reads:
            proto.data_received(chunk)
        await asyncio.sleep(0)  # the app receives and sends
        await asyncio.sleep(0)
    cpu = time.process_time() - cpu
    echoed = (transport.written - before) / count
    state.stop_clock()
    kind = "text" if text else "binary"
    per_msg = cpu / count * 1e6
    print(f"{kind} {size} B in reads of {read} B: {per_msg:.2f} us CPU/msg ({echoed:.0f} B out)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=65536)
    parser.add_argument("--read", type=int, default=70000)
    parser.add_argument("--count", type=int, default=30000)
    parser.add_argument("--text", action="store_true")
    args = parser.parse_args()
    asyncio.run(run(args.size, args.read, args.count, args.text))


if __name__ == "__main__":
    main()
