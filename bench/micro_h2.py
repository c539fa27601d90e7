"""Python cost per request of the HTTP/2 engine, without sockets or an app: µs per small GET.

    python bench/micro_h2.py                  # sluiceway's H2Connection and the h2 library
    python bench/micro_h2.py --engine sluiceway --requests 20000

What h2load -c16 -m32 makes a server's HTTP/2 layer do, minus the kernel and
the app: each connection gets its client preface, then reads of 32 HEADERS
frames (a small GET each, as h2load sends them); every request is answered
with a 200 head of five fields and a 13-byte body (HEADERS + DATA with
END_STREAM), and one ``data_to_send()`` per read collects the answers. The
client bytes are encoded beforehand by the ``hpack`` library; the clock runs
over ``receive_data``, the event dispatch, ``send_headers``, ``send_data``
and ``data_to_send`` only.

Output: microseconds per request and requests per second, the best of
``--repeat`` runs (other work on the machine only ever adds time) with the
median beside it. Invariants: every run checks that each request produced
exactly one event and that every answer's bytes were produced; a run that
loses one fails instead of reporting a number. The h2 library (which
hypercorn uses) is the baseline: the same bytes, the same answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Keep this script's folder off sys.path (nothing in bench/ may shadow a library).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

# ruff: noqa: E402
import argparse
import gc
import statistics
import struct
import time
from collections.abc import Callable

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [
    (b":method", b"GET"),
    (b":path", b"/"),
    (b":scheme", b"http"),
    (b":authority", b"127.0.0.1:8000"),
    (b"user-agent", b"h2load nghttp2/1.52.0"),
]
RESPONSE = [
    (b":status", b"200"),
    (b"content-type", b"text/plain"),
    (b"content-length", b"13"),
    (b"date", b"Sun, 06 Dec 2026 12:00:00 GMT"),
    (b"server", b"sluiceway"),
]
BODY = b"Hello, world!"


def frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    n = len(payload)
    return struct.pack(">HBBBL", n >> 8, n & 0xFF, frame_type, flags, stream_id) + payload


def client_reads(requests: int, batch: int) -> list[bytes]:
    """The reads one connection's server gets: the preface, then ``batch`` requests each."""
    encoder = hpack.Encoder()
    # h2load's preface: SETTINGS (window 2^30-1, no push) and a large connection window.
    settings = struct.pack(">HLHL", 2, 0, 4, (1 << 30) - 1)
    reads = [PREFACE + frame(4, 0, 0, settings) + frame(8, 0, 0, struct.pack(">L", 1 << 30))]
    stream_id = 1
    for start in range(0, requests, batch):
        wire = b"".join(
            frame(1, 0x5, stream_id + 2 * i, encoder.encode(REQUEST))
            for i in range(min(batch, requests - start))
        )
        stream_id += 2 * min(batch, requests - start)
        if start == 0:
            wire = frame(4, 0x1, 0, b"") + wire  # the ACK of the server's SETTINGS
        reads.append(wire)
    return reads


def run_sluiceway(reads: list[bytes]) -> tuple[int, int]:
    from sluiceway.http2.connection import H2Config, H2Connection
    from sluiceway.http2.events import RequestReceived

    conn = H2Connection(H2Config())
    conn.initiate()
    answered = 0
    out = len(conn.data_to_send())
    for data in reads:
        for event in conn.receive_data(data):
            if type(event) is RequestReceived:
                stream_id = event.stream_id
                conn.send_headers(stream_id, RESPONSE)
                conn.send_data(stream_id, BODY, True)
                answered += 1
        out += len(conn.data_to_send())
    return answered, out


def run_h2(reads: list[bytes]) -> tuple[int, int]:
    import h2.config
    import h2.connection
    import h2.events

    config = h2.config.H2Configuration(client_side=False, header_encoding=None)
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    answered = 0
    out = len(conn.data_to_send())
    request_received = h2.events.RequestReceived
    for data in reads:
        for event in conn.receive_data(data):
            if type(event) is request_received:
                stream_id = event.stream_id
                conn.send_headers(stream_id, RESPONSE)
                conn.send_data(stream_id, BODY, end_stream=True)
                answered += 1
        out += len(conn.data_to_send())
    return answered, out


ENGINES: dict[str, Callable[[list[bytes]], tuple[int, int]]] = {
    "sluiceway": run_sluiceway,
    "h2": run_h2,
}


def measure(engine: str, requests: int, batch: int, connections: int, repeat: int) -> list[float]:
    run = ENGINES[engine]
    reads = client_reads(requests // connections, batch)
    per_connection = requests // connections
    results = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        for _ in range(connections):
            answered, out = run(reads)
            if answered != per_connection or out < per_connection * (len(BODY) + 18):
                raise SystemExit(f"{engine}: answered {answered} of {per_connection}, {out} bytes")
        elapsed = time.perf_counter() - start
        results.append(elapsed / (per_connection * connections) * 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engine", choices=[*ENGINES, "all"], default="all")
    parser.add_argument("--requests", type=int, default=16 * 2000, help="in all (default 32000)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32, help="requests per read (h2load -m)")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(
        f"Python {sys.version.split()[0]}; {args.requests} GETs over {args.connections}"
        f" connections, {args.batch} per read; best (median) of {args.repeat}"
    )
    engines = list(ENGINES) if args.engine == "all" else [args.engine]
    best: dict[str, float] = {}
    for engine in engines:
        results = measure(engine, args.requests, args.batch, args.connections, args.repeat)
        best[engine] = min(results)
        print(
            f"  {engine:10} {best[engine]:7.2f} µs/request ({statistics.median(results):.2f})"
            f"  {1e6 / best[engine]:10,.0f} requests/s"
        )
    if len(best) == 2:
        print(f"  h2 / sluiceway: {best['h2'] / best['sluiceway']:.1f}x")


if __name__ == "__main__":
    main()
