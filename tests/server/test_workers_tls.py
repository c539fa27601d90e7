"""``sluiceway run --workers N`` with TLS: every spawned worker serves HTTPS.

The supervisor binds once; each worker builds its own ``SSLContext`` from the
config it was handed (certificate, key, key password). The app below answers
with its pid and what its scope says about TLS, so a response tells which
worker served it and that the worker saw an ``https`` scope with the ``tls``
extension. Certificates come from ``trustme`` (``test_tls.py``'s fixture);
httpx verifies the server against that CA. Readiness is awaited on the
workers' "ready" lines, never on a sleep.

The worker imports this module as its app (``--app-dir`` is the repository
root), so what it imports at the top must import in a plain interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server.serving import TIMEOUT_S, CLIProcess, cli_server
from tests.server.test_tls import Certs, certs, client_context

__all__ = ["certs"]  # the module-scoped trustme fixture, shared with test_tls.py

ROOT = Path(__file__).parents[2]
APP = "tests.server.test_workers_tls:tls_facts"
READY = r"Worker (\d+) \(pid (\d+)\) ready"


async def tls_facts(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the serving pid, the scheme and the ``tls`` extension, as JSON."""
    if scope["type"] != "http":
        return  # lifespan: unsupported, which "auto" accepts
    body = json.dumps(
        {"pid": os.getpid(), "scheme": scope["scheme"], "tls": scope["extensions"].get("tls")}
    )
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


def tls_args(certfile: str, keyfile: str, *more: str) -> list[str]:
    return [
        APP,
        "--app-dir",
        str(ROOT),
        "--port",
        "0",
        "--workers",
        "2",
        "--ssl-certfile",
        certfile,
        "--ssl-keyfile",
        keyfile,
        *more,
    ]


async def fetch(url: str, context: ssl.SSLContext) -> dict[str, Any]:
    # A fresh connection (and TLS handshake) per request, so the kernel picks a worker each time.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(verify=context, timeout=TIMEOUT_S, limits=limits) as client:
        response = await client.get(url)
    assert response.status_code == 200
    facts: dict[str, Any] = response.json()
    return facts


async def serve_until_all_answer(
    proc: CLIProcess, certs: Certs, workers: set[int], deadline_s: float = 10.0
) -> list[dict[str, Any]]:
    """HTTPS requests (4 at a time) until every worker has answered one, or the deadline."""
    url = f"https://localhost:{proc.port}/"
    context = client_context(certs)
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    while not workers <= {a["pid"] for a in answers} and time.monotonic() < deadline:
        answers += await asyncio.gather(*(fetch(url, context) for _ in range(4)))
    return answers


def leaf_pem(certfile: str) -> str:
    """The first certificate of the chain file: the one the server presents."""
    end = "-----END CERTIFICATE-----"
    return Path(certfile).read_text().split(end)[0] + end + "\n"


async def test_two_workers_serve_https_with_the_tls_extension(certs: Certs) -> None:
    async with cli_server(*tls_args(certs.cert, certs.key)) as proc:
        assert proc.address.startswith("https://")
        ready = await proc.wait_for_lines(READY, 2)
        workers = {int(m.group(2)) for m in ready}
        answers = await serve_until_all_answer(proc, certs, workers)
        assert {a["pid"] for a in answers} == workers
        for answer in answers:
            assert answer["scheme"] == "https"
            tls = answer["tls"]
            assert tls["server_cert"] == leaf_pem(certs.cert)
            assert tls["tls_version"] in (0x0303, 0x0304)
            assert tls["client_cert_chain"] == []
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert "All workers stopped." in proc.text


async def test_encrypted_key_with_password_in_every_worker(certs: Certs) -> None:
    args = tls_args(certs.cert, certs.encrypted_key, "--ssl-keyfile-password", "s3cret")
    async with cli_server(*args) as proc:
        ready = await proc.wait_for_lines(READY, 2)
        workers = {int(m.group(2)) for m in ready}
        answers = await serve_until_all_answer(proc, certs, workers)
        assert {a["pid"] for a in answers} == workers
        assert {a["scheme"] for a in answers} == {"https"}
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert "s3cret" not in proc.text


async def test_wrong_key_password_is_one_line_before_any_worker_starts(certs: Certs) -> None:
    args = tls_args(certs.cert, certs.encrypted_key, "--ssl-keyfile-password", "nope")
    async with cli_server(*args, wait_listening=False) as proc:
        assert await proc.wait_exit() == 2
    assert proc.stderr == [
        f"sluiceway: error: cannot load TLS certificate {certs.cert!r} with key "
        f"{certs.encrypted_key!r}: not a valid PEM certificate and key, or the key password "
        "is wrong"
    ]


async def test_missing_certificate_is_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    async with cli_server(*tls_args(missing, missing), wait_listening=False) as proc:
        assert await proc.wait_exit() == 2
    assert proc.stderr == [f"sluiceway: error: TLS certificate or key file not found: {missing}"]
