"""Framing engine micro-benchmark: sluiceway's codec vs websockets' and wsproto's.

    python bench/ws_codec.py [--rounds 5] [--seconds 0.5]

Each engine is a sans-I/O server-side connection after a real handshake. Two
workloads, each one masked client frame per ``receive_data`` call (what an echo
server sees): 100-byte text frames and 64 KiB binary frames. "parse" feeds the
frame and drains the events; "echo" also sends the message back and drains the
output bytes. Reports frames/s, best of ``--rounds``; also the masking
functions alone. Needs ``wsproto`` (bench-only: ``pip install wsproto``).

Runs on one core and never opens a socket; numbers go to docs/websocket.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder heads sys.path: keep bench/ modules from shadowing libraries.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata

import sluiceway.websocket.connection as connection_module
from sluiceway.websocket.connection import Connection
from sluiceway.websocket.frames import (
    Opcode,
    apply_mask,
    apply_mask_python,
    build_frame,
)

Step = Callable[[bytes], None]

REQUEST = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def sluiceway_engine(echo: bool, pure: bool = False) -> Step:
    # ``pure`` measures the codec as it runs without the websockets package
    # installed, i.e. with the int-XOR masking fallback.
    connection_module.apply_mask = apply_mask_python if pure else apply_mask
    conn = Connection()

    def step(frame: bytes) -> None:
        conn.receive_data(frame)
        for event in conn.events_received():
            if echo:
                data = event.data  # type: ignore[union-attr]
                if isinstance(data, str):
                    conn.send_text(data)
                else:
                    conn.send_binary(data)
        conn.data_to_send()

    return step


def websockets_engine(echo: bool) -> Step:
    from websockets.server import ServerProtocol

    proto = ServerProtocol(max_size=None)
    proto.receive_data(REQUEST)
    (request,) = proto.events_received()
    proto.send_response(proto.accept(request))  # type: ignore[arg-type]
    proto.data_to_send()

    def step(frame: bytes) -> None:
        proto.receive_data(frame)
        for event in proto.events_received():
            if echo:
                if event.opcode is event.opcode.TEXT:  # type: ignore[union-attr]
                    proto.send_text(event.data)  # type: ignore[union-attr]
                else:
                    proto.send_binary(event.data)  # type: ignore[union-attr]
        proto.data_to_send()

    return step


def wsproto_engine(echo: bool) -> Step:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Message, Request

    conn = WSConnection(ConnectionType.SERVER)
    conn.receive_data(REQUEST)
    for event in conn.events():
        if isinstance(event, Request):
            conn.send(AcceptConnection())
    send = conn.send

    def step(frame: bytes) -> None:
        conn.receive_data(frame)
        for event in conn.events():
            if echo and isinstance(event, Message):
                send(Message(data=event.data))

    return step


ENGINES: dict[str, Callable[[bool], Step]] = {
    "sluiceway": sluiceway_engine,
    "sluiceway (pure masking)": lambda echo: sluiceway_engine(echo, pure=True),
    "websockets": websockets_engine,
    "wsproto": wsproto_engine,
}


def measure(step: Step, frame: bytes, seconds: float) -> float:
    """Frames per second over about ``seconds``."""
    batch = 64
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            step(frame)
        done += batch
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()

    mask = os.urandom(4)
    workloads = {
        "text 100 B": build_frame(Opcode.TEXT, b"x" * 100, mask=mask),
        "binary 64 KiB": build_frame(Opcode.BINARY, os.urandom(65536), mask=mask),
    }
    print(
        f"# Python {platform.python_version()} on {platform.machine()}, "
        f"websockets {version('websockets')}, wsproto {version('wsproto')}; "
        f"frames/s, best of {args.rounds}"
    )
    print()
    print("| workload | mode | " + " | ".join(ENGINES) + " |")
    print("|---|---|" + "---:|" * len(ENGINES))
    for workload, frame in workloads.items():
        for mode in ("parse", "echo"):
            best: dict[str, float] = {}
            # Rounds interleave the engines so that noise from other
            # processes on the machine hits them all alike.
            for _ in range(args.rounds):
                for name, factory in ENGINES.items():
                    try:
                        step = factory(mode == "echo")
                    except ImportError:
                        continue
                    rate = measure(step, frame, args.seconds)
                    best[name] = max(best.get(name, 0.0), rate)
            cells = [f"{best[name]:,.0f}" if name in best else "n/a" for name in ENGINES]
            print(f"| {workload} | {mode} | " + " | ".join(cells) + " |")
    print()
    print("| masking | bytes | µs per call |")
    print("|---|---:|---:|")
    for label, fn in (
        ("apply_mask (in use)", apply_mask),
        ("pure Python int XOR", apply_mask_python),
    ):
        for size in (100, 65536):
            data = os.urandom(size)
            n = 20000 if size < 1000 else 500
            best = min(_time_calls(fn, data, mask, n) for _ in range(args.rounds))
            print(f"| {label} | {size} | {best * 1e6:.2f} |")
    sys.stdout.flush()


def _time_calls(fn: Callable[[bytes, bytes], bytes], data: bytes, mask: bytes, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(data, mask)
    return (time.perf_counter() - start) / n


if __name__ == "__main__":
    main()
