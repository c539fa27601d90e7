"""HPACK micro-benchmark: sluiceway's codec (http2/hpack.py) vs the ``hpack`` library (h2's).

    python bench/micro_hpack.py [--rounds 7] [--number 2000]

Workloads, each on one core with no I/O; the blocks are encoded by the
``hpack`` library's encoder (Huffman on, every field indexed, as browsers and
nghttp2 encode requests):

* decode, first request: a browser's first request on a new connection
  (Huffman literals, each inserted into the dynamic table), fresh decoder each
  time;
* decode, repeated request: the same request again on that connection, all
  fields indexed; what h2load sends on every request after the first;
* decode, new path each request: 500 requests in a row on one connection, each
  with another ``:path`` (one Huffman literal inserted per request, the rest
  indexed): what a page load looks like;
* encode, same response: a small response again and again on one connection;
* encode, length varies: the same with a different ``content-length`` each time.

Also prints what Huffman coding our encoder's literals would cost and save,
which is why the encoder sends them raw. Reports microseconds per operation,
best of ``--rounds`` (other work on a shared machine only ever adds time).
Needs ``hpack`` (installed with ``h2``, in the test extra). Results, pure
Python and mypyc-compiled, go to bench/results/hpack.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder heads sys.path: keep bench/ modules from shadowing libraries.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import functools
import platform
import timeit
from collections.abc import Callable
from importlib import metadata

import hpack

from sluiceway.http2 import huffman
from sluiceway.http2.hpack import Decoder
from sluiceway.http2.hpack_encoder import Encoder

Fields = list[tuple[bytes, bytes]]

REQUEST: Fields = [
    (b":method", b"GET"),
    (b":authority", b"localhost:8000"),
    (b":scheme", b"https"),
    (b":path", b"/"),
    (b"sec-ch-ua", b'"Chromium";v="120", "Not(A:Brand";v="24", "Google Chrome";v="120"'),
    (b"sec-ch-ua-mobile", b"?0"),
    (b"sec-ch-ua-platform", b'"Linux"'),
    (b"upgrade-insecure-requests", b"1"),
    (
        b"user-agent",
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
        b" Chrome/120.0.0.0 Safari/537.36",
    ),
    (
        b"accept",
        b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
        b"image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7",
    ),
    (b"sec-fetch-site", b"none"),
    (b"sec-fetch-mode", b"navigate"),
    (b"sec-fetch-user", b"?1"),
    (b"sec-fetch-dest", b"document"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"accept-language", b"en-US,en;q=0.9"),
]
DATE = b"Mon, 21 Oct 2013 20:13:21 GMT"
RESPONSE: Fields = [
    (b":status", b"200"),
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"13"),
    (b"date", DATE),
    (b"server", b"sluiceway"),
]
PATHS = 500


def request_blocks() -> tuple[bytes, bytes, list[bytes]]:
    encoder = hpack.Encoder()
    first = encoder.encode(REQUEST)
    repeated = encoder.encode(REQUEST)
    paths = [
        encoder.encode([*REQUEST[:3], (b":path", b"/static/app-%d.js" % i), *REQUEST[4:]])
        for i in range(PATHS)
    ]
    return first, repeated, paths


def ours(first: bytes, repeated: bytes, paths: list[bytes]) -> dict[str, Callable[[], object]]:
    warm = Decoder()
    warm.decode(first)
    encoder = Encoder()
    lengths = [(b"content-length", str(n).encode()) for n in range(1000, 2000)]
    varying = [[*RESPONSE[:2], length, *RESPONSE[3:]] for length in lengths]
    position = [0]

    def decode_paths() -> None:
        decoder = Decoder()
        decoder.decode(first)
        for data in paths:
            decoder.decode(data)

    def encode_varying() -> bytes:
        position[0] = (position[0] + 1) % len(varying)
        return encoder.encode(varying[position[0]])

    return {
        "decode, first request": lambda: Decoder().decode(first),
        "decode, repeated request": lambda: warm.decode(repeated),
        "decode, new path each request": decode_paths,
        "encode, same response": lambda: encoder.encode(RESPONSE),
        "encode, length varies": encode_varying,
    }


def reference(first: bytes, repeated: bytes, paths: list[bytes]) -> dict[str, Callable[[], object]]:
    warm = hpack.Decoder()
    warm.decode(first, raw=True)
    encoder = hpack.Encoder()
    lengths = [(b"content-length", str(n).encode()) for n in range(1000, 2000)]
    varying = [[*RESPONSE[:2], length, *RESPONSE[3:]] for length in lengths]
    position = [0]

    def decode_first() -> object:
        return hpack.Decoder().decode(first, raw=True)

    def decode_paths() -> None:
        decoder = hpack.Decoder()
        decoder.decode(first, raw=True)
        for data in paths:
            decoder.decode(data, raw=True)

    def encode_varying() -> bytes:
        position[0] = (position[0] + 1) % len(varying)
        return encoder.encode(varying[position[0]])

    return {
        "decode, first request": decode_first,
        "decode, repeated request": lambda: warm.decode(repeated, raw=True),
        "decode, new path each request": decode_paths,
        "encode, same response": lambda: encoder.encode(RESPONSE),
        "encode, length varies": encode_varying,
    }


def best_us(step: Callable[[], object], number: int, rounds: int, per_call: int = 1) -> float:
    times = timeit.repeat(step, number=number, repeat=rounds)
    return min(times) / number / per_call * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    first, repeated, paths = request_blocks()
    # Both decoders must read the blocks as the request before either is timed.
    for blocks in ((first, repeated), (first, *paths)):
        ours_check, reference_check = Decoder(), hpack.Decoder()
        for data in blocks:
            assert ours_check.decode(data) == reference_check.decode(data, raw=True)
    assert Decoder().decode(first) == REQUEST
    print(
        f"Python {platform.python_version()} on {platform.machine()};"
        f" hpack {metadata.version('hpack')}; microseconds per operation, best of {args.rounds}"
    )
    print(f"request block: first {len(first)} bytes, repeated {len(repeated)} bytes")
    engines = {
        "sluiceway": ours(first, repeated, paths),
        "hpack": reference(first, repeated, paths),
    }
    print(f"{'workload':32}{'sluiceway':>12}{'hpack':>12}{'ratio':>8}")
    for workload in engines["sluiceway"]:
        paths_run = workload == "decode, new path each request"
        number = max(1, args.number // PATHS) if paths_run else args.number
        per_call = PATHS + 1 if paths_run else 1
        us = [best_us(engines[name][workload], number, args.rounds, per_call) for name in engines]
        print(f"{workload:32}{us[0]:12.2f}{us[1]:12.2f}{us[1] / us[0]:7.1f}x")
    print("Huffman on the encoder's literals (why it sends them raw):")
    for value in (b"13", b"1048576", DATE, b"session=8f2b1c9e4d7a6b3c5e0f1a2b3c4d5e6f; Path=/"):
        cost = best_us(functools.partial(huffman.encode, value), args.number, args.rounds)
        saved = len(value) - huffman.encoded_length(value)
        print(f"  {len(value):3} bytes: {cost:5.2f} us to save {saved} bytes  {value[:30]!r}")


if __name__ == "__main__":
    main()
