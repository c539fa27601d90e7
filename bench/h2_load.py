"""HTTP/2 benchmark: sluiceway beside granian, hypercorn and uvicorn (zttp), one command.

    python bench/h2_load.py                      # 3 rounds of 10 s, every server, every case
    python bench/h2_load.py --duration 2 --rounds 1 --servers granian,uvicorn-h1 --cases a,b

Each server runs one worker with one thread, pinned to core 0, serving bench/apps/http_apps.py;
h2load (nghttp2-client) runs with one thread pinned to core 1, where this process runs too.
Cases, each with 16 connections:

    (a) small responses (GET /, 13 bytes), 32 streams per connection, h2 over TLS (ALPN)
    (b) the same over h2c (cleartext, prior knowledge: RFC 9113 §3.3)
    (c) small responses, 1 stream per connection, TLS
    (d) the same over h2c
    (e) 1 MiB download (GET /download, sent by the app in 64 KiB chunks), 1 stream, h2c
    (f) 1 MiB upload (POST /upload, read in full), 1 stream, h2c

(e) and (f) run over h2c so that what they measure is the server's framing and flow control
(RFC 9113 §5.2), not OpenSSL's record encryption, which costs every Python server the same.

Servers: sluiceway (h2c and TLS on the port it serves HTTP/1.1 on, no flag), granian
(``--http 2``), hypercorn (a config file raises ``keep_alive_max_requests``: at its default of
1,000 each of h2load's connections is closed after 1,000 requests and never reopened), uvicorn
with ``--http zttp --http2`` (uvicorn-zttp), and the baseline, uvicorn-h1: uvicorn's HTTP/1.1
(httptools + uvloop, as in bench/http_load.py) under the same h2load load and transport with
``--h1``, so the load tool is the same (h2load pipelines ``-m`` requests per HTTP/1.1
connection). Every ratio is requests/s over uvicorn-h1's on the same case. Known on this
machine kind (h2load -c16 -m32): granian h2c 1.55x, granian TLS 1.45x, hypercorn 0.09x, daphne
0.05x. Targets: sluiceway ahead of granian in every round of every case (paired round by
round), and at least 10x hypercorn.

Rounds are interleaved as in bench/http_load.py: each round starts every server twice, once in
cleartext and once with TLS (each on its own port, all on core 0; an idle one sleeps), and runs
the cases in turn, every server on one case before the next, the server order rotated per case
and per round. Each cell is the median over rounds; the paired columns take the median of the
per-round ratios. A full run (3+ rounds of 10+ s) writes bench/results/h2.md; a shortened run
only prints unless --output is given. One self-signed certificate (ECDSA P-256, key in PKCS#8,
which granian requires) is made per run in a temporary directory.

Invariants: before each measured run the case's response is checked for correctness over the
protocol under test (httpx with h2, or HTTP/1.1 for the baseline: status, body, protocol); after
each h2load run its negotiated protocol must be the one under test ("h2" over TLS, "h2c" in
cleartext, "http/1.1" for the baseline) and every response must be 2xx. A server that fails to
start or does not speak the protocol in one transport is reported in one line and loses that
transport's cases; any other failure loses that case only; the run goes on with the others.
Must not import: sluiceway.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import common
import httpx
from common import (
    HOST,
    BenchError,
    LoadResult,
    RunningServer,
    ServerSpec,
    median,
    python_module_version,
)
from http_load import (
    Cell,
    Results,
    _git_commit,
    _pick,
    _progress_line,
    _ratio,
    _script,
    _sluiceway_argv,
    _sluiceway_version,
    _uvicorn_argv,
)

BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
DEFAULT_OUTPUT = BENCH_DIR / "results" / "h2.md"
BASELINE = "uvicorn-h1"
MIB = 1024 * 1024
CONNECTIONS = 16

# The targets for sluiceway: ahead of granian in every round, and this many times
# hypercorn's requests/s (median of the per-round ratios).
TARGET_PEER = "granian"
FLOOR_PEER = "hypercorn"
FLOOR_RATIO = 10.0

# Hypercorn closes an HTTP/2 connection after this many requests by default (1,000), and h2load
# does not reopen it: raised far past what one connection serves in a run.
_HYPERCORN_CONFIG = "keep_alive_max_requests = 1000000000\n"


class ProtocolMismatch(BenchError):
    """The server did not speak the protocol under test in this transport (e.g. no h2c)."""


# ---------------------------------------------------------------------------------------------
# Files made once per run


@dataclass(frozen=True)
class RunFiles:
    """What a run writes once in its temporary directory and hands to servers and h2load."""

    cert: Path
    key: Path
    hypercorn_config: Path
    upload_body: Path
    logs: Path  # the servers' output

    @classmethod
    def create(cls, directory: Path) -> RunFiles:
        files = cls(
            directory / "cert.pem",
            directory / "key.pem",
            directory / "hypercorn.toml",
            directory / "upload.bin",
            directory / "logs",
        )
        files.logs.mkdir()
        files.cert.write_bytes(_self_signed(files.key))
        files.hypercorn_config.write_text(_HYPERCORN_CONFIG)
        files.upload_body.write_bytes(b"x" * MIB)
        return files


def _self_signed(key_path: Path) -> bytes:
    """Write a fresh ECDSA P-256 key to ``key_path`` (PKCS#8) and return its certificate's PEM.

    The certificate names 127.0.0.1 in subjectAltName; nothing verifies it (h2load does not, and
    the correctness check is about the protocol, not the PKI), but a well-formed one keeps every
    server's TLS stack from refusing it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sluiceway-bench")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    # granian reads PKCS#8 only ("BEGIN PRIVATE KEY"); the others read it too.
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert.public_bytes(serialization.Encoding.PEM)


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass(frozen=True)
class H2Server:
    """One server under test: its argv for a port, run files and transport, and its version.

    ``h1`` marks the baseline, which speaks HTTP/1.1 and is driven by ``h2load --h1``.
    """

    name: str
    argv: Callable[[int, RunFiles, bool], list[str]]
    version: Callable[[], str | None]
    h1: bool = False

    def spec(self, files: RunFiles, tls: bool) -> ServerSpec:
        return ServerSpec(
            f"{self.name}-{'tls' if tls else 'h2c'}",
            lambda port: self.argv(port, files, tls),
            self.version,
        )


def _tls_flags(tls: bool, cert_flag: str, key_flag: str, files: RunFiles) -> list[str]:
    return [cert_flag, str(files.cert), key_flag, str(files.key)] if tls else []


def _sluiceway_h2_argv(port: int, files: RunFiles, tls: bool) -> list[str]:
    # The HTTP/1.1 command line: h2c (prior knowledge) and h2 (ALPN) come on the same port.
    return _sluiceway_argv(port) + _tls_flags(tls, "--ssl-certfile", "--ssl-keyfile", files)


def _uvicorn_h1_argv(port: int, files: RunFiles, tls: bool) -> list[str]:
    return _uvicorn_argv(port) + _tls_flags(tls, "--ssl-certfile", "--ssl-keyfile", files)


def _uvicorn_zttp_argv(port: int, files: RunFiles, tls: bool) -> list[str]:
    # --http2 dispatches each connection by ALPN over TLS, by the client preface in cleartext.
    return [
        sys.executable, "-m", "uvicorn", "http_apps:app", "--host", HOST, "--port", str(port),
        "--http", "zttp", "--http2", "--loop", "uvloop", "--no-access-log",
        "--log-level", "warning", *_tls_flags(tls, "--ssl-certfile", "--ssl-keyfile", files),
    ]  # fmt: skip


def _granian_argv(port: int, files: RunFiles, tls: bool) -> list[str]:
    return [
        _script("granian"), "--interface", "asgi", "--http", "2",
        "--host", HOST, "--port", str(port), "--workers", "1", "--runtime-threads", "1",
        "--no-access-log", "--log-level", "warning",
        *_tls_flags(tls, "--ssl-certificate", "--ssl-keyfile", files), "http_apps:app",
    ]  # fmt: skip


def _hypercorn_argv(port: int, files: RunFiles, tls: bool) -> list[str]:
    return [
        sys.executable, "-m", "hypercorn", "--config", str(files.hypercorn_config),
        "--workers", "1", "--worker-class", "uvloop", "--bind", f"{HOST}:{port}",
        "--log-level", "warning",
        *_tls_flags(tls, "--certfile", "--keyfile", files), "http_apps:app",
    ]  # fmt: skip


def _uvicorn_zttp_version() -> str | None:
    uvicorn, zttp = python_module_version("uvicorn")(), python_module_version("zttp")()
    return f"{uvicorn} (zttp {zttp})" if uvicorn and zttp else None


SERVERS: dict[str, H2Server] = {
    "sluiceway": H2Server("sluiceway", _sluiceway_h2_argv, _sluiceway_version),
    "granian": H2Server("granian", _granian_argv, python_module_version("granian")),
    "hypercorn": H2Server("hypercorn", _hypercorn_argv, python_module_version("hypercorn")),
    "uvicorn-zttp": H2Server("uvicorn-zttp", _uvicorn_zttp_argv, _uvicorn_zttp_version),
    BASELINE: H2Server(BASELINE, _uvicorn_h1_argv, python_module_version("uvicorn"), h1=True),
}


def _accepts(port: int, *, tls: bool) -> bool:
    """Readiness: the port accepts a connection and, with ``tls``, completes a handshake.

    Whether the server speaks h2 there is the correctness check's question, which answers it
    in one line; a probe that asked it would only time out.
    """
    with socket.create_connection((HOST, port), timeout=2.0) as sock:
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2", "http/1.1"])
            with context.wrap_socket(sock):
                pass
    return True


# ---------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    key: str
    name: str
    title: str
    path: str
    streams: int
    tls: bool
    expected: bytes
    upload: bool = False


_SMALL = b"Hello, world!"
CASES = [
    Case("a", "small-tls", "(a) small, 16x32 streams, TLS", "/", 32, True, _SMALL),
    Case("b", "small-h2c", "(b) small, 16x32 streams, h2c", "/", 32, False, _SMALL),
    Case("c", "single-tls", "(c) small, 16x1 stream, TLS", "/", 1, True, _SMALL),
    Case("d", "single-h2c", "(d) small, 16x1 stream, h2c", "/", 1, False, _SMALL),
    Case("e", "download", "(e) 1 MiB download, 16x1, h2c", "/download", 1, False, b"x" * MIB),
    Case(
        "f", "upload", "(f) 1 MiB upload, 16x1, h2c", "/upload", 1, False, str(MIB).encode(), True
    ),
]


def _url(case: Case, port: int) -> str:
    return f"{'https' if case.tls else 'http'}://{HOST}:{port}{case.path}"


def check_case(case: Case, port: int, *, h1: bool) -> None:
    """Ask once over the protocol under test and compare status, body and HTTP version.

    Raises:
        ProtocolMismatch: no answer in that protocol (e.g. a server without h2c).
        BenchError: an answer, but a wrong one.
    """
    expected_version = "HTTP/1.1" if h1 else "HTTP/2"
    # http1=False: h2 only, so cleartext means prior knowledge and TLS offers ALPN "h2" alone.
    with httpx.Client(http1=h1, http2=not h1, verify=False, timeout=10.0) as client:
        try:
            resp = client.request(
                "POST" if case.upload else "GET",
                _url(case, port),
                content=b"x" * MIB if case.upload else None,
            )
        except httpx.HTTPError as exc:
            raise ProtocolMismatch(
                f"no {expected_version} answer: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from None
    if resp.http_version != expected_version:
        raise ProtocolMismatch(f"answered in {resp.http_version}, not {expected_version}")
    if resp.status_code != 200 or resp.content != case.expected:
        raise BenchError(
            f"{case.path} answered {resp.status_code} with {len(resp.content)} bytes"
            f" {resp.content[:40]!r}"
        )


# ---------------------------------------------------------------------------------------------
# Load generation (h2load)

_PROTOCOL_RE = re.compile(r"^Application protocol: (\S+)$", re.MULTILINE)
_REQUESTS_RE = re.compile(
    r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed,"
    r" (\d+) errored, (\d+) timeout$",
    re.MULTILINE,
)
_STATUS_RE = re.compile(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx$", re.MULTILINE)
_TRAFFIC_RE = re.compile(r"^traffic: .*?\((\d+)\) total", re.MULTILINE)


def run_h2load(
    url: str,
    *,
    streams: int,
    duration_s: float,
    h1: bool,
    upload: Path | None = None,
) -> LoadResult:
    """Run h2load pinned to the load core for ``duration_s`` (whole seconds) and read its numbers.

    Latency percentiles come from h2load's per-request log (``--log-file``), which holds the
    measured period only; everything else from its summary. ``requests`` counts the requests
    that completed with a 2xx; h2load's "errored" streams (reset, or lost with a connection) go
    to ``read_errors`` and its timeouts to ``timeouts``.

    Raises:
        ProtocolMismatch: h2load negotiated another protocol than the one under test.
        BenchError: h2load failed or hung, or a response was not 2xx.
    """
    if shutil.which("h2load") is None:
        raise BenchError("h2load is not installed (apt-get install nghttp2-client)")
    seconds = max(1, math.ceil(duration_s))
    expected = "http/1.1" if h1 else "h2" if url.startswith("https:") else "h2c"
    with tempfile.TemporaryDirectory(prefix="sluiceway-h2load-") as tmp:
        log_file = Path(tmp) / "requests.log"
        argv = ["h2load", "-t", "1", "-c", str(CONNECTIONS), "-m", str(streams)]
        argv += ["-D", str(seconds), "--log-file", str(log_file)]
        argv += ["--h1"] if h1 else []
        argv += ["-d", str(upload)] if upload else []
        argv.append(url)
        out, load_cpu_s = common.run_load_tool(argv, timeout_s=seconds + 60)
        latencies = _latencies_us(log_file)
    protocol = _PROTOCOL_RE.search(out.stdout)
    requests, status, traffic = (
        r.search(out.stdout) for r in (_REQUESTS_RE, _STATUS_RE, _TRAFFIC_RE)
    )
    if requests is None or status is None or traffic is None:
        detail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        raise BenchError(f"h2load exited {out.returncode} without a summary: {' | '.join(detail)}")
    if protocol is None or protocol.group(1) != expected:
        got = protocol.group(1) if protocol else "no protocol"
        raise ProtocolMismatch(f"h2load negotiated {got}, not {expected}")
    _done, succeeded, _failed, errored, timeouts = (int(g) for g in requests.groups())
    ok, *not_ok = (int(g) for g in status.groups())
    if sum(not_ok):
        raise BenchError(f"{ok} responses were 2xx, {sum(not_ok)} not (3xx/4xx/5xx {not_ok})")
    if not succeeded:
        raise BenchError(f"no request completed ({errored} errored, {timeouts} timed out)")
    return LoadResult(
        requests=succeeded,
        duration_s=float(seconds),
        bytes_read=int(traffic.group(1)),
        p50_ms=_percentile(latencies, 0.50) / 1000,
        p99_ms=_percentile(latencies, 0.99) / 1000,
        max_ms=(latencies[-1] if latencies else 0) / 1000,
        connect_errors=0,
        read_errors=errored - timeouts,
        write_errors=0,
        non_2xx=0,
        timeouts=timeouts,
        load_cpu_s=load_cpu_s,
    )


def _latencies_us(log_file: Path) -> list[int]:
    """Sorted microseconds to the end of each completed response (status -1: a failed stream)."""
    try:
        lines = log_file.read_text().splitlines()
    except OSError:
        return []
    # Columns: start (µs since epoch), status, µs until the end of the response.
    return sorted(int(cols[2]) for cols in (line.split("\t") for line in lines) if cols[1] != "-1")


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)])


def h2load_version() -> str:
    try:
        out = subprocess.run(["h2load", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "h2load not installed"
    return out.stdout.strip() or "h2load"


# ---------------------------------------------------------------------------------------------
# The run


def run(
    servers: Sequence[H2Server], cases: Sequence[Case], args: argparse.Namespace, tmp: Path
) -> Results:
    """Every round of every case on every server; ``tmp`` takes the run's files and logs."""
    files = RunFiles.create(tmp)
    results: Results = {(s.name, c.key): Cell([]) for s in servers for c in cases}
    for round_no in range(args.rounds):
        # As in bench/http_load.py: every server up for the whole round, in both transports,
        # taking turns on each case, so the runs a ratio compares are a few runs apart.
        running: dict[tuple[str, bool], RunningServer] = {}
        try:
            _start_all(running, servers, cases, results, files)
            for case_no, case in enumerate(cases):
                print(f"round {round_no + 1}/{args.rounds}: {case.title}", flush=True)
                shift = (round_no + case_no) % len(servers)
                for server in [*servers[shift:], *servers[:shift]]:
                    process = running.get((server.name, case.tls))
                    _run_cell(results, server, case, cases, process, args, files)
        finally:
            for process in running.values():
                process.stop()
    return results


def _start_all(
    running: dict[tuple[str, bool], RunningServer],
    servers: Sequence[H2Server],
    cases: Sequence[Case],
    results: Results,
    files: RunFiles,
) -> None:
    """Start each server once per transport the cases use, into ``running`` as they come up."""
    for server in servers:
        for tls in sorted({c.tls for c in cases}):
            if all(results[(server.name, c.key)].failure for c in cases if c.tls == tls):
                continue
            try:
                running[(server.name, tls)] = common.start_server(
                    server.spec(files, tls),
                    cwd=APPS_DIR,
                    log_dir=files.logs,
                    ready_probe=partial(_accepts, tls=tls),
                )
            except BenchError as exc:
                _fail_transport(results, server.name, cases, tls, f"did not start: {exc}")


def _run_cell(
    results: Results,
    server: H2Server,
    case: Case,
    cases: Sequence[Case],
    process: RunningServer | None,
    args: argparse.Namespace,
    files: RunFiles,
) -> None:
    """Check, warm up and measure one server on one case; record the result or the failure."""
    cell = results[(server.name, case.key)]
    if process is None or cell.failure:
        return
    if process.proc.poll() is not None:
        _fail_transport(results, server.name, cases, case.tls, "exited during the run")
        return
    try:
        check_case(case, process.port, h1=server.h1)
        load = partial(
            run_h2load,
            _url(case, process.port),
            streams=case.streams,
            h1=server.h1,
            upload=files.upload_body if case.upload else None,
        )
        if args.warmup > 0:
            load(duration_s=args.warmup)
        result = common.measure(process, partial(load, duration_s=args.duration))
    except ProtocolMismatch as exc:
        _fail_transport(results, server.name, cases, case.tls, str(exc).splitlines()[0])
        return
    except (BenchError, OSError, ValueError) as exc:
        cell.failure = str(exc).splitlines()[0]
        print(f"  {server.name:<12} FAILED: {cell.failure}", flush=True)
        return
    cell.results.append(result)
    print(_progress_line(f"{server.name:<12}", result), flush=True)


def _fail_transport(
    results: Results, server: str, cases: Sequence[Case], tls: bool, why: str
) -> None:
    """Fail every case of one server in one transport, with one line (plus a log tail)."""
    transport = "TLS" if tls else "h2c"
    print(f"  {server} FAILED over {transport}: {why}", flush=True)
    short = why.split("; its log ends", 1)[0]
    for case in cases:
        cell = results[(server, case.key)]
        if case.tls == tls and not cell.failure:
            cell.failure = short


# ---------------------------------------------------------------------------------------------
# Reporting


def _paired(results: Results, ours: str, theirs: str, key: str) -> list[float]:
    """Per-round requests/s ratios of ``ours`` over ``theirs`` on one case.

    A cell keeps its rounds in order and stops at its first failure, so the first N results of
    two cells are the same N rounds: zip compares the rounds both finished.
    """
    a, b = results.get((ours, key)), results.get((theirs, key))
    if a is None or b is None:
        return []
    pairs = zip(a.results, b.results, strict=False)  # unequal after a failure
    return [x.rps / y.rps for x, y in pairs if x.rps > 0 and y.rps > 0]


def _paired_cell(ratios: Sequence[float]) -> str:
    if not ratios:
        return "n/a"
    return f"{median(ratios):.2f}x ({sum(r > 1 for r in ratios)}/{len(ratios)})"


def _median_cell(results: Results, name: str, key: str, attr: str, base: float) -> str:
    cell = results[(name, key)]
    return _ratio(cell.med(attr), base) if cell.results else "failed"


def ratio_matrix(results: Results, names: Sequence[str], cases: Sequence[Case], attr: str) -> str:
    """Each server's median ``attr`` over uvicorn-h1's, one row per case."""
    rows = []
    for case in cases:
        base = results.get((BASELINE, case.key))
        base_value = base.med(attr) if base and base.results else 0.0
        rows.append(
            [case.title, *(_median_cell(results, n, case.key, attr, base_value) for n in names)]
        )
    return common.format_table(["case", *names], rows, markdown=True)


def targets_table(results: Results, cases: Sequence[Case]) -> str:
    """sluiceway against the issue's targets: paired with granian and hypercorn round by round."""
    header = [
        "case",
        f"vs {BASELINE}",
        f"vs {TARGET_PEER} (rounds ahead)",
        f"vs {FLOOR_PEER} (rounds ahead)",
        "met",
    ]
    rows = []
    for case in cases:
        ours, base = results.get(("sluiceway", case.key)), results.get((BASELINE, case.key))
        vs_base = (
            _ratio(ours.med("rps"), base.med("rps"))
            if ours and ours.results and base and base.results
            else "n/a"
        )
        vs_peer = _paired(results, "sluiceway", TARGET_PEER, case.key)
        vs_floor = _paired(results, "sluiceway", FLOOR_PEER, case.key)
        if not (vs_peer and vs_floor):
            met = "n/a"
        else:
            ahead = all(r > 1 for r in vs_peer)
            met = "yes" if ahead and median(vs_floor) >= FLOOR_RATIO else "no"
        rows.append([case.title, vs_base, _paired_cell(vs_peer), _paired_cell(vs_floor), met])
    return common.format_table(header, rows, markdown=True)


def head_to_head_table(results: Results, names: Sequence[str], cases: Sequence[Case]) -> str:
    """sluiceway against each other server: the median per-round ratio and the rounds ahead."""
    peers = [n for n in names if n != "sluiceway"]
    rows = [
        [c.title, *(_paired_cell(_paired(results, "sluiceway", p, c.key)) for p in peers)]
        for c in cases
    ]
    return common.format_table(["case", *[f"vs {p}" for p in peers]], rows, markdown=True)


def case_table(results: Results, names: Sequence[str], case: Case, *, markdown: bool) -> str:
    header = ["server", "req/s", "p50 ms", "p99 ms", "req/CPU-s", "CPU %", "sys %"]
    header += ["h2load CPU %", "others on core 0 %", f"vs {BASELINE}", "errors"]
    base = results.get((BASELINE, case.key))
    base_rps = base.med("rps") if base and base.results else 0.0
    rows = []
    for name in names:
        cell = results[(name, case.key)]
        if not cell.results:
            rows.append([name, *["-"] * (len(header) - 2), f"failed: {cell.failure}"])
            continue
        errors = str(sum(r.errors for r in cell.results)) + (" (partial)" if cell.failure else "")
        rows.append(
            [
                name,
                f"{cell.med('rps'):,.0f}",
                f"{cell.med('p50_ms'):.2f}",
                f"{cell.med('p99_ms'):.2f}",
                f"{cell.med('per_cpu_s'):,.0f}",
                f"{median([100 * r.server_cpu_s / r.duration_s for r in cell.results]):.0f}",
                f"{100 * cell.med('sys_share'):.0f}",
                f"{100 * cell.med('load_cpu_share'):.0f}",
                f"{100 * cell.med('others_share'):.0f}",
                _ratio(cell.med("rps"), base_rps),
                errors,
            ]
        )
    return common.format_table(header, rows, markdown=markdown)


def rounds_table(results: Results, names: Sequence[str], cases: Sequence[Case]) -> str:
    header = ["case", "server", "round", "req/s", "p99 ms", "server CPU s", "req/CPU-s"]
    header += ["others on core 0 %", "errors"]
    rows = [
        [
            case.key, name, str(i), f"{r.rps:,.0f}", f"{r.p99_ms:.2f}", f"{r.server_cpu_s:.2f}",
            f"{r.per_cpu_s:,.0f}", f"{100 * r.others_share:.0f}", r.error_detail() or "0",
        ]
        for case in cases
        for name in names
        for i, r in enumerate(results[(name, case.key)].results, 1)
    ]  # fmt: skip
    return common.format_table(header, rows, markdown=True)


def markdown_report(
    results: Results, cases: Sequence[Case], args: argparse.Namespace, versions: dict[str, str]
) -> str:
    """The result file: how the run was made, the ratios, the targets, every case and round."""
    names = list(versions)
    info = common.machine_info()
    load_start, load_end = args.load_average
    header = [
        f"Written by `{' '.join(['python bench/h2_load.py', *args.argv])}` on {info['date']}.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}",
        f"- {info['python']}; {h2load_version()}",
        "- Servers: " + ", ".join(f"{n} {versions[n]}" for n in names),
        f"- {args.rounds} interleaved rounds of {args.duration:g} s"
        f" (after {args.warmup:g} s warm-up), {CONNECTIONS} connections, one h2load thread;"
        " each cell is the median over rounds.",
        "- In each round every server is up in cleartext and with TLS (idle ones sleep) and they"
        " take turns on each case, in an order rotated per case and per round.",
        "- Each server: one worker, one thread, pinned to core 0 (`taskset -c 0`); h2load on"
        f" core 1. The baseline, {BASELINE}, is uvicorn's HTTP/1.1 (httptools, uvloop) under"
        " `h2load --h1` with the same connections and `-m` (pipelined requests).",
        f"- sluiceway at commit {_git_commit()}; 1-minute load average {load_start:.1f} at the"
        f" start and {load_end:.1f} at the end (2 cores; above ~2 other work shared the machine).",
        "- req/CPU-s, CPU %, others on core 0 %: as in bench/results/http.md.",
    ]
    sections = [
        (f"Ratio to {BASELINE}: requests/s", ratio_matrix(results, names, cases, "rps")),
        (
            f"Ratio to {BASELINE}: requests per server CPU-second",
            ratio_matrix(results, names, cases, "per_cpu_s"),
        ),
    ]
    if "sluiceway" in names:
        met = (
            f"Met: ahead of {TARGET_PEER} in every round, and at least {FLOOR_RATIO:g}x"
            f" {FLOOR_PEER} (median of the per-round ratios). Paired columns: median of the"
            " per-round requests/s ratios; in brackets, the rounds sluiceway was ahead in."
        )
        sections += [
            ("sluiceway against its targets", f"{met}\n\n{targets_table(results, cases)}"),
            (
                "sluiceway against each server, round by round",
                head_to_head_table(results, names, cases),
            ),
        ]
    sections += [(c.title, case_table(results, names, c, markdown=True)) for c in cases]
    sections.append(("Every round", rounds_table(results, names, cases)))
    body = [f"## {title}\n\n{text}\n" for title, text in sections]
    return "\n".join(["# HTTP/2 benchmark results", "", *header, "", *body])


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/h2_load.py",
        description="HTTP/2 benchmark of sluiceway and its peers.",
    )
    for flag, kind, default, what in (
        ("--rounds", int, 3, "interleaved rounds"),
        ("--duration", float, 10.0, "seconds per run"),
        ("--warmup", float, 1.0, "unmeasured seconds first, per run"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=f"{what} (default {default:g})")
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help=f"comma list from {','.join(SERVERS)} (all)"
    )
    parser.add_argument(
        "--cases",
        default=",".join(c.key for c in CASES),
        help="comma list of " + ",".join(c.key for c in CASES) + " or their names (all)",
    )
    default_output = DEFAULT_OUTPUT.relative_to(BENCH_DIR.parent)
    output_help = f"markdown file to write (default {default_output} for 3+ rounds of 10+ s)"
    parser.add_argument("--output", type=Path, help=output_help)
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be at least 1, --warmup >= 0")
    return args


def _installed(names: Sequence[str]) -> dict[str, str]:
    """The version of each named server that is installed; a line on stderr for each other."""
    versions = {name: SERVERS[name].version() for name in names}
    for name, version in versions.items():
        if version is None:
            print(f"skipping {name}: not installed (or, for sluiceway, no CLI)", file=sys.stderr)
    return {name: version for name, version in versions.items() if version is not None}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    by_name: dict[str, object] = {**{c.key: c for c in CASES}, **{c.name: c for c in CASES}}
    wanted = _pick("case", args.cases, by_name)
    cases = [c for c in CASES if c.key in wanted or c.name in wanted]
    versions = _installed(_pick("server", args.servers, dict(SERVERS)))
    names = list(versions)
    if not names:
        common.fail("no server to run")
    if shutil.which("taskset") is None or shutil.which("h2load") is None:
        common.fail("needs taskset (util-linux) and h2load (nghttp2-client) on PATH")

    # This process reads h2load's per-request log (a second for 600,000 lines) inside the window
    # measure() times: on the load core, that work is never counted against the server's core.
    os.sched_setaffinity(0, {int(common.LOAD_CORE)})
    load_start = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory(prefix="sluiceway-h2bench-") as tmp:
            results = run([SERVERS[n] for n in names], cases, args, Path(tmp))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    args.load_average = (load_start, os.getloadavg()[0])

    print()
    for case in cases:
        print(f"{case.title}\n{case_table(results, names, case, markdown=False)}\n")
    if "sluiceway" in names:
        print("sluiceway against its targets (paired round by round; rounds ahead)")
        print(f"{targets_table(results, cases)}\n")

    full_run = args.rounds >= 3 and args.duration >= 10
    output: Path | None = args.output or (DEFAULT_OUTPUT if full_run else None)
    if output is None:
        print("shortened run: results not written (pass --output FILE to keep them)")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown_report(results, cases, args, versions))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
