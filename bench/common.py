"""Shared pieces of sluiceway's load benchmarks (bench/http_load.py, bench/h2_load.py).

The job: start a server process pinned to one core, wait until it answers, drive it with wrk
(or h2load) pinned to the other core, read its numbers and the server's CPU time, and print
medians.

Invariants:
- The server under test runs under ``taskset -c 0`` and the load tool under ``taskset -c 1``,
  so the two never compete for a core; every child a server forks inherits the pinning.
- CPU time is utime+stime of the server's whole process tree (all threads, all forked workers),
  sampled just before and just after a load run; "requests per server CPU-second" divides by
  that difference. It is steadier than requests/s on a machine other people share.
- Every wait has a deadline: a server that does not answer, a wrk that does not return, or a
  server that will not stop raises ``BenchError`` (stopping falls back to SIGKILL).
- wrk's result comes from a Lua ``done()`` hook that prints one JSON line, never from scraping
  its human-readable report.

Must not import: sluiceway (the harness must run against peers before sluiceway serves, and
must not let a broken sluiceway import break the peers' numbers). Standard library only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

SERVER_CORE = "0"
LOAD_CORE = "1"
HOST = "127.0.0.1"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_RESULT_MARK = "BENCH-RESULT "


class BenchError(Exception):
    """A benchmark step failed in a way the harness reports as one line (no traceback)."""


# ---------------------------------------------------------------------------------------------
# Ports and processes


def free_port(host: str = HOST) -> int:
    """Return a TCP port that was free a moment ago (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def pinned(core: str, argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` with taskset so the process (and its children) stay on ``core``."""
    return ["taskset", "-c", core, *argv]


@dataclass(frozen=True)
class ServerSpec:
    """How to run one server: a name, an argv built from the port, and how to tell its version.

    ``version`` returns None when the server is not installed; the harness then skips it.
    """

    name: str
    argv: Callable[[int], list[str]]
    version: Callable[[], str | None]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class RunningServer:
    """A started server process (its own session, so its whole group can be signalled)."""

    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds of the server's process tree so far."""
        return tree_cpu_seconds(self.proc.pid)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM the server's process group, then SIGKILL it if it outlives ``timeout_s``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout_s)
        # Forked workers can outlive a master that died first; they share its process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_server(
    spec: ServerSpec,
    *,
    cwd: Path,
    log_dir: Path,
    ready_path: str = "/",
    ready_timeout_s: float = 30.0,
    ready_probe: Callable[[int], bool] | None = None,
) -> RunningServer:
    """Start ``spec`` on a free port, pinned to the server core, and wait until it answers.

    ``ready_probe``, when given, replaces the HTTP/1.1 ``GET ready_path``: it is called with the
    port until it returns True (an OSError counts as "not yet"), for a server that does not speak
    cleartext HTTP/1.1 (TLS only, HTTP/2 only).

    Raises:
        BenchError: the process exited, or did not answer ``ready_path`` with a 200 (or pass
            ``ready_probe``) in time.
    """
    port = free_port()
    log_path = log_dir / f"{spec.name}-{port}.log"
    env = dict(os.environ)
    env.update(spec.env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH", "")]))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pinned(SERVER_CORE, spec.argv(port)),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = RunningServer(spec, proc, port, log_path)
    try:
        wait_until_ready(server, ready_path, ready_timeout_s, ready_probe)
    except BaseException:
        server.stop()
        raise
    return server


def wait_until_ready(
    server: RunningServer,
    path: str,
    timeout_s: float,
    probe: Callable[[int], bool] | None = None,
) -> None:
    """Poll until the server answers ``GET path`` with a 200 (or ``probe(port)`` returns True);
    fail fast if it exits."""
    deadline = time.monotonic() + timeout_s
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while True:
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server.spec.name} exited with code {server.proc.returncode} before answering;"
                f" its log ends:\n{server.log_tail()}"
            )
        status_line = b""
        try:
            if probe is None:
                status_line = http_status_line(HOST, server.port, request, timeout_s=2.0)
                ready = status_line.startswith(b"HTTP/1.1 200")
            else:
                ready = probe(server.port)
        except OSError:
            ready = False
        if ready:
            return
        if time.monotonic() > deadline:
            asked = (
                f"answer GET {path} with 200 within {timeout_s:.0f} s"
                f" (last status line {status_line!r})"
                if probe is None
                else f"pass its readiness probe within {timeout_s:.0f} s"
            )
            raise BenchError(
                f"{server.spec.name} did not {asked}; its log ends:\n{server.log_tail()}"
            )
        # Startup polling of a port we do not control: there is no event to await.
        time.sleep(0.05)


def http_status_line(host: str, port: int, request: bytes, timeout_s: float) -> bytes:
    """Send ``request`` on a fresh connection and return the response's status line."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(request)
        buf = b""
        while b"\r\n" not in buf and len(buf) < 8192:
            chunk = sock.recv(8192)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\r\n", 1)[0]


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # the process ended while we looked
        # Field 4 is the parent pid; the name (field 2) may hold spaces and parentheses.
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and every live descendant of it."""
    children = _children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) in seconds of ``pid`` and its live descendants (all threads of each).

    On loopback the system share is large: a write() runs the peer's TCP receive path too.

    Raises:
        BenchError: ``pid`` itself is gone (the server died).
    """
    user_ticks = sys_ticks = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            if member == pid:
                raise BenchError(f"process {pid} is gone") from None
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # proc(5): utime and stime are fields 14 and 15, i.e. 11 and 12 after the state field.
        user_ticks += int(fields[11])
        sys_ticks += int(fields[12])
    return user_ticks / _CLOCK_TICKS, sys_ticks / _CLOCK_TICKS


# ---------------------------------------------------------------------------------------------
# Load generation (wrk)

_DONE_HOOK = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%.1f,"p99_us":%.1f,"max_us":%.1f}\\n',
    "__MARK__", summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured, plus the server CPU time spent during it."""

    requests: int
    duration_s: float
    bytes_read: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    connect_errors: int
    read_errors: int
    write_errors: int
    non_2xx: int
    timeouts: int
    load_cpu_s: float = 0.0
    server_user_s: float = 0.0
    server_sys_s: float = 0.0
    core_busy_s: float = 0.0

    @property
    def server_cpu_s(self) -> float:
        return self.server_user_s + self.server_sys_s

    @property
    def load_cpu_share(self) -> float:
        """wrk's CPU time over the run's wall time: near 1.0, the load tool is the bottleneck."""
        return self.load_cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def others_share(self) -> float:
        """Busy time of the server's core not spent by the server, over wall time (0..1).

        Other processes, interrupts and the hypervisor's steal: what a shared machine took from
        the server. Above a few per cent, requests/s of the run understates the server.
        """
        if not self.duration_s:
            return 0.0
        return max(0.0, self.core_busy_s - self.server_cpu_s) / self.duration_s

    @property
    def sys_share(self) -> float:
        """The kernel's part of the server's CPU time (0..1): syscalls and loopback TCP."""
        return self.server_sys_s / self.server_cpu_s if self.server_cpu_s > 0 else 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def per_cpu_s(self) -> float:
        return self.requests / self.server_cpu_s if self.server_cpu_s > 0 else 0.0

    @property
    def errors(self) -> int:
        return (
            self.connect_errors
            + self.read_errors
            + self.write_errors
            + self.non_2xx
            + self.timeouts
        )

    def error_detail(self) -> str:
        """wrk's error counters that are not zero, e.g. "read 3, non-2xx 1" ("" when clean)."""
        counts = [
            ("connect", self.connect_errors),
            ("read", self.read_errors),
            ("write", self.write_errors),
            ("non-2xx", self.non_2xx),
            ("timeout", self.timeouts),
        ]
        return ", ".join(f"{name} {n}" for name, n in counts if n)


def wrk_version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "wrk"
    match = re.match(r"(wrk \S+)", first)
    return match.group(1) if match else first.strip()


def run_load_tool(
    argv: Sequence[str], *, timeout_s: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run a load generator pinned to the load core; return its output and its CPU seconds.

    Raises:
        BenchError: it did not finish within ``timeout_s`` (it is killed).
    """
    # The tool is the only child reaped in this window, so the rusage delta of children is its own.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        out = subprocess.run(
            pinned(LOAD_CORE, argv), capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} did not finish within {timeout_s:g} s") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def run_wrk(
    url: str,
    *,
    connections: int,
    duration_s: float,
    threads: int = 1,
    lua: str = "",
    headers: Sequence[str] = (),
    request_timeout_s: float = 10.0,
) -> LoadResult:
    """Run wrk pinned to the load core and return its numbers.

    ``lua`` is extra wrk script (e.g. setting ``wrk.method`` and ``wrk.body``); the harness
    appends its own ``done()`` hook. ``duration_s`` is rounded up to whole seconds, wrk's unit.

    Raises:
        BenchError: wrk failed, hung, or printed no result line.
    """
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    seconds = max(1, int(duration_s + 0.999))
    with tempfile.TemporaryDirectory(prefix="sluiceway-bench-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(lua + "\n" + _DONE_HOOK.replace("__MARK__", _RESULT_MARK))
        argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
        argv += ["--timeout", f"{request_timeout_s:g}s", "-s", str(script)]
        for header in headers:
            argv += ["-H", header]
        argv.append(url)
        out, load_cpu_s = run_load_tool(argv, timeout_s=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith(_RESULT_MARK):
            data = json.loads(line[len(_RESULT_MARK) :])
            return LoadResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                bytes_read=data["bytes"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                max_ms=data["max_us"] / 1000,
                connect_errors=data["connect"],
                read_errors=data["read"],
                write_errors=data["write"],
                non_2xx=data["status"],
                timeouts=data["timeout"],
                load_cpu_s=load_cpu_s,
            )
    detail = (out.stderr or out.stdout).strip().splitlines()[-3:]
    raise BenchError(f"wrk exited {out.returncode} without a result: {' | '.join(detail)}")


def core_busy_seconds(core: str = SERVER_CORE) -> float:
    """Non-idle time of one CPU since boot, steal included (proc(5): /proc/stat "cpuN")."""
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith(f"cpu{core} "):
                ticks = [int(v) for v in line.split()[1:]]
                idle = ticks[3] + ticks[4]  # idle, iowait
                return (sum(ticks[:8]) - idle) / _CLOCK_TICKS  # user..steal; guest is in user
    return 0.0


def measure(server: RunningServer, load: Callable[[], LoadResult]) -> LoadResult:
    """Run ``load`` and attach the CPU seconds the server tree, and its core, spent meanwhile."""
    user_before, sys_before = server.cpu_seconds()
    core_before = core_busy_seconds()
    result = load()
    core_after = core_busy_seconds()
    user_after, sys_after = server.cpu_seconds()
    return dataclasses.replace(
        result,
        server_user_s=user_after - user_before,
        server_sys_s=sys_after - sys_before,
        core_busy_s=core_after - core_before,
    )


# ---------------------------------------------------------------------------------------------
# Summaries and tables


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool) -> str:
    """Render rows as a GitHub markdown table or as aligned plain text (numbers right-aligned)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    numeric = [
        all(_looks_numeric(r[i]) for r in rows) if rows else False for i in range(len(header))
    ]

    def cell(i: int, text: str) -> str:
        return text.rjust(widths[i]) if numeric[i] else text.ljust(widths[i])

    lines = []
    if markdown:
        lines.append("| " + " | ".join(cell(i, h) for i, h in enumerate(header)) + " |")
        rule = [("-" * (w - 1) + ":") if numeric[i] else "-" * w for i, w in enumerate(widths)]
        lines.append("| " + " | ".join(rule) + " |")
        lines += ["| " + " | ".join(cell(i, c) for i, c in enumerate(r)) + " |" for r in rows]
    else:
        lines.append("  ".join(cell(i, h) for i, h in enumerate(header)))
        lines.append("  ".join("-" * w for w in widths))
        lines += ["  ".join(cell(i, c) for i, c in enumerate(r)) for r in rows]
    return "\n".join(lines)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+]?[\d,.]+[x%]?|-|n/a", text.strip()))


def machine_info() -> dict[str, str]:
    """CPU model, core count, kernel, Python and wrk versions and the UTC time, for result files."""
    model = platform.processor() or "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        match = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE)
        if match:
            model = match.group(1).strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": model,
        "cores": str(os.cpu_count() or 0),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}"
        f" ({python_build()})",
        "wrk": wrk_version() if shutil.which("wrk") else "not installed",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def python_build() -> str:
    """Which Python ran, and whether its interpreter is a shared libpython.

    The build moves every Python server's numbers, not the Rust one's: pyenv's default build
    (no profile-guided optimisation, libpython shared) ran the same request path markedly
    slower here than Debian's python3.11 (linked in, built with PGO and LTO), see
    docs/performance.md, session 5. So a result file says which one ran.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    linked = "libpython shared" if "libpython" in maps else "libpython linked in"
    return f"{sys.executable}, {linked}"


def python_module_version(dist: str) -> Callable[[], str | None]:
    """A ``ServerSpec.version`` that reads an installed distribution's version (None if absent)."""

    def version() -> str | None:
        from importlib import metadata

        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return version


def fail(message: str) -> None:
    """Print one line to stderr and exit 1: the harness's answer to a failed step."""
    print(f"bench: {message}", file=sys.stderr)
    raise SystemExit(1)
