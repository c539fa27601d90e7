"""docs/deploy.md runs as written: each configuration is read from the doc and exercised.

* nginx: the doc's server block, with only ports, certificate paths and the
  upstream port changed, runs in a real nginx (non-daemon, in a temporary
  prefix) in front of the doc's own ``sluiceway run`` command line. A client
  from 127.0.0.2 gets HTTP/2 from nginx, its address and ``https`` in the
  scope (nginx's X-Forwarded-For/-Proto, trusted by --forwarded-allow-ips),
  and a WebSocket through the upgrade with ``wss``.
* Load balancer: the doc's command line, with the trusted network as given
  (an untrusted peer's headers change nothing) and with it pointed at the
  loopback network (they set the client and scheme).
* Dockerfile: deploy/Dockerfile is the doc's block; a small parser checks a
  slim base, a non-root USER, a HEALTHCHECK and an exec-form CMD; the CMD is
  run in a new PID namespace (sluiceway is PID 1 there, as in a container,
  where the kernel drops a signal that has no handler) next to a copy of
  what the image COPYs, the health check passes, SIGTERM ends it with exit
  0, and the health check then fails.
* Kubernetes: the manifest parses, its args are valid options, and its
  grace period covers preStop + the graceful timeout + the cancel bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
import yaml
from websockets.asyncio.client import connect

from sluiceway.cli import build_parser
from sluiceway.config import Config
from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()
APP_DIR = str(ROOT / "tests" / "server")
DOC_APP = "myproject.asgi:application"
TEST_APP = "process_apps:echo_scope"


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def run_args(text: str) -> list[str]:
    """The arguments after ``sluiceway run`` in the section's one sh block."""
    (block,) = fenced(text, "sh")
    words = shlex.split(block)
    assert words[:2] == ["sluiceway", "run"], block
    return words[2:]


def substituted(args: list[str], **values: str) -> list[str]:
    """``args`` with the app replaced by the test's app and ``--flag value``s replaced."""
    assert DOC_APP in args
    out = [TEST_APP if arg == DOC_APP else arg for arg in args]
    for flag, value in values.items():
        index = out.index("--" + flag.replace("_", "-"))
        out[index + 1] = value
    return [*out, "--app-dir", APP_DIR]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_accepting(port: int) -> None:
    async def probe() -> None:
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)  # polling a port nginx is binding, bounded below
                continue
            writer.close()
            return

    await asyncio.wait_for(probe(), TIMEOUT_S)


# nginx


@dataclass
class Certs:
    ca: trustme.CA
    cert: Path
    key: Path

    def client(self) -> ssl.SSLContext:
        """A new client context: httpx sets ALPN on the one it is given."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "example.com")
    cert, key = tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    for pem in issued.cert_chain_pems[1:]:
        pem.write_to_path(str(cert), append=True)
    issued.private_key_pem.write_to_path(str(key))
    return Certs(ca, cert, key)


def nginx_conf(prefix: Path, certs: Certs, upstream: str, http: int, https: int) -> str:
    """The doc's block in a whole nginx.conf; ``upstream`` replaces its ``server`` line."""
    (block,) = fenced(section("Behind nginx"), "nginx")
    replacements = {
        "server 127.0.0.1:8000;": upstream,
        "listen 80;": f"listen 127.0.0.1:{http};",
        "listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
        "/etc/ssl/example.com/fullchain.pem": str(certs.cert),
        "/etc/ssl/example.com/privkey.pem": str(certs.key),
    }
    for old, new in replacements.items():
        assert block.count(old) == 1, old
        block = block.replace(old, new)
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # Workers run as root when the tests do: nginx's default user could not
    # read the temporary prefix.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n    access_log off;\n{temp}\n{block}\n}}\n"
    )


@contextlib.asynccontextmanager
async def nginx(conf: str, prefix: Path, port: int) -> AsyncIterator[None]:
    (prefix / "nginx.conf").write_text(conf)
    conf_path, log = prefix / "nginx.conf", prefix / "error.log"
    process = await asyncio.create_subprocess_exec(
        *("nginx", "-p", str(prefix), "-c", str(conf_path), "-e", str(log)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_accepting(port)
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGQUIT)  # graceful stop of master and worker
            try:
                await asyncio.wait_for(process.wait(), TIMEOUT_S)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


def unix_socket_variant(args: list[str], path: Path) -> tuple[list[str], str]:
    """The doc's Unix-socket variant: its ``server unix:`` line and its sluiceway options."""
    text = section("Behind nginx")
    server = re.search(r"`(server unix:(\S+);)`", text)
    run = re.search(r"`sluiceway run \.\.\. (--uds (\S+))`", text)
    trust = re.search(r"`(--forwarded-allow-ips '\*')`", text)
    assert server and run and trust and server.group(2) == run.group(2)
    index = args.index("--host")
    del args[index : index + 4]  # --host 127.0.0.1 --port 8000
    args[args.index("--forwarded-allow-ips") + 1] = "*"
    return [*args, "--uds", str(path)], server.group(1).replace(server.group(2), str(path))


# nginx is installed by .ci/run (README); a machine without it fails here, never skips.
@pytest.mark.parametrize("upstream", ["tcp", "unix"])
async def test_the_nginx_server_block_gives_http2_websockets_and_the_client_address(
    tmp_path: Path, certs: Certs, upstream: str
) -> None:
    args = substituted(run_args(section("Behind nginx")), port="0")
    if upstream == "unix":
        args, server_line = unix_socket_variant(args, tmp_path / "sluiceway.sock")
    async with cli_server(*args) as app:
        if upstream == "tcp":
            server_line = f"server 127.0.0.1:{app.port};"
        http, https = free_port(), free_port()
        async with nginx(nginx_conf(tmp_path, certs, server_line, http, https), tmp_path, https):
            # From 127.0.0.2, so the address nginx forwards differs from nginx's own.
            transport = httpx.AsyncHTTPTransport(
                http2=True, verify=certs.client(), local_address="127.0.0.2"
            )
            async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT_S) as client:
                response = await client.get(f"https://127.0.0.1:{https}/page?x=1")
                assert response.http_version == "HTTP/2"
                assert response.json() == {"client": ["127.0.0.2", 0], "scheme": "https"}
                # Long URLs pass nginx (large_client_header_buffers) and sluiceway alike.
                long = await client.get(f"https://127.0.0.1:{https}/?q={'a' * 20000}")
                assert long.status_code == 200
                plain = await client.get(f"http://127.0.0.1:{http}/path?q=1")
                assert plain.status_code == 308
                assert plain.headers["location"] == "https://127.0.0.1/path?q=1"

            async with connect(
                f"wss://127.0.0.1:{https}/socket",
                ssl=certs.client(),
                local_addr=("127.0.0.2", 0),
                open_timeout=TIMEOUT_S,
            ) as ws:
                facts = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
            assert facts == {"client": ["127.0.0.2", 0], "scheme": "wss"}
    assert "Traceback" not in app.text


# Load balancer


async def lb_scope(args: list[str]) -> tuple[str, str]:
    """The client address and scheme the app sees for a request with forwarding headers."""
    async with cli_server(*args) as app, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        headers = {"x-forwarded-for": "203.0.113.9", "x-forwarded-proto": "https"}
        response = await client.get(f"http://127.0.0.1:{app.port}/", headers=headers)
    facts = response.json()
    return facts["client"][0], facts["scheme"]


async def test_the_load_balancer_command_trusts_only_the_networks_it_names() -> None:
    args = run_args(section("Behind a load balancer"))
    assert args[args.index("--forwarded-allow-ips") + 1] == "10.0.0.0/8"
    assert float(args[args.index("--timeout-keep-alive") + 1]) > 60  # AWS ALB's idle timeout
    as_given = substituted(args, host="127.0.0.1", port="0")
    assert await lb_scope(as_given) == ("127.0.0.1", "http")
    trusted = substituted(args, host="127.0.0.1", port="0", forwarded_allow_ips="127.0.0.0/8")
    assert await lb_scope(trusted) == ("203.0.113.9", "https")


# Dockerfile


@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str]:
        value = json.loads(self.arguments)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


def dockerfile_instructions(text: str) -> Iterator[Instruction]:
    """Instructions of a Dockerfile: comments dropped, continuation lines joined, ARGs expanded."""
    args: dict[str, str] = {}
    logical = ""
    for line in text.split("\n"):
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (logical + line).strip().partition(" ")
        logical = ""
        rest = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.strip())
        if keyword.upper() == "ARG" and "=" in rest:
            name, _, default = rest.partition("=")
            args[name] = default
        yield Instruction(keyword.upper(), re.sub(r"\s+", " ", rest))


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    assert starts, "no FROM"
    return instructions[starts[-1] :]


def test_deploy_dockerfile_is_the_documented_one_and_builds_a_small_non_root_image() -> None:
    (documented,) = fenced(section("In a container (Dockerfile)"), "dockerfile")
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    assert text == documented
    stage = final_stage(list(dockerfile_instructions(text)))
    assert re.fullmatch(r"python:3\.\d+-slim", stage[0].arguments), stage[0]
    users = [ins.arguments for ins in stage if ins.keyword == "USER"]
    assert users and users[-1] not in ("root", "0") and not users[-1].startswith("0:")
    keywords = [ins.keyword for ins in stage]
    assert keywords.index("USER") < keywords.index("CMD")
    assert "ENTRYPOINT" not in keywords
    assert all(ins.arguments == "SIGTERM" for ins in stage if ins.keyword == "STOPSIGNAL")
    (health,) = [ins for ins in stage if ins.keyword == "HEALTHCHECK"]
    assert " CMD [" in f" {health.arguments}"
    # What the final stage copies from the context exists and is not ignored.
    ignored = [
        line.strip()
        for line in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().split("\n")
        if line.strip() and not line.startswith("#")
    ]
    for ins in stage:
        if ins.keyword == "COPY" and not ins.arguments.startswith("--from"):
            source = ins.arguments.split()[0].rstrip("/")
            assert (ROOT / source).exists(), source
            assert not any(fnmatch.fnmatch(source, pattern.rstrip("/")) for pattern in ignored)


def in_new_pid_namespace() -> list[str]:
    """A prefix that runs a command as PID 1 of a new PID namespace, if this machine allows it."""
    prefix = ["unshare", "--pid", "--fork", "--kill-child"]
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=TIMEOUT_S)
    return prefix if probe.returncode == 0 else []


def child_of(pid: int) -> int:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


async def test_the_dockerfile_command_serves_passes_its_health_check_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    stage = final_stage(list(dockerfile_instructions((ROOT / "deploy" / "Dockerfile").read_text())))
    # The image's WORKDIR: what the final stage copies from the context.
    for ins in stage:
        if ins.keyword == "COPY" and not ins.arguments.startswith("--from"):
            source, target = ins.arguments.split()
            shutil.copytree(ROOT / source, tmp_path / target)
    (cmd,) = [ins.exec_form() for ins in stage if ins.keyword == "CMD"]
    assert cmd[:2] == ["sluiceway", "run"]
    # Drained before docker stop's SIGKILL, 10 s after its SIGTERM by default.
    assert float(cmd[cmd.index("--timeout-graceful-shutdown") + 1]) < 10
    port = free_port()
    command = [arg if arg != "8000" else str(port) for arg in cmd[2:]]
    assert command != cmd[2:], "the CMD names no port 8000"
    (health,) = [ins for ins in stage if ins.keyword == "HEALTHCHECK"]
    check = json.loads(health.arguments.split(" CMD ", 1)[1])
    check = [
        sys.executable if arg == "python" else arg.replace(":8000/", f":{port}/") for arg in check
    ]

    pid1 = in_new_pid_namespace()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    process = await asyncio.create_subprocess_exec(
        *pid1, sys.executable, "-m", "sluiceway", "run", *command,
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    server = CLIProcess(process)
    try:
        await server.wait_for_line(r"Listening on ")
        healthy = await asyncio.create_subprocess_exec(*check, cwd=tmp_path)
        assert await asyncio.wait_for(healthy.wait(), TIMEOUT_S) == 0
        # docker stop: SIGTERM to PID 1 (the namespace's first process).
        os.kill(child_of(process.pid) if pid1 else process.pid, signal.SIGTERM)
        assert await server.wait_exit() == 0, server.text
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        server._reader.cancel()
    assert "Traceback" not in server.text
    assert re.search(r"Shutting down|Finished server process|Server stopped", server.text)
    unhealthy = await asyncio.create_subprocess_exec(
        *check, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(unhealthy.wait(), TIMEOUT_S) != 0


# Kubernetes


def test_the_kubernetes_grace_period_covers_prestop_the_drain_and_the_cancel_bound() -> None:
    (manifest,) = fenced(section("Kubernetes"), "yaml")
    pod = yaml.safe_load(manifest)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[:2] == ["sluiceway", "run"]
    options = build_parser().parse_args(args[1:])  # every flag is a real option
    graceful = float(options.graceful_shutdown_timeout_s)
    assert graceful < Config().graceful_shutdown_timeout_s + 1
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    cancel_bound = min(graceful, 5.0)  # usage.md "Shutdown and signals"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + graceful + cancel_bound
    port = args[args.index("--port") + 1]
    (declared,) = container["ports"]
    assert str(declared["containerPort"]) == port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        target = container[probe].get("tcpSocket") or container[probe]["httpGet"]
        assert target["port"] == declared["name"]
