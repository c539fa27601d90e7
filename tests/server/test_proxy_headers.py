"""--proxy-headers / --forwarded-allow-ips: client and scheme from trusted proxies only.

The server runs on 127.0.0.1 with the real HTTP protocol; the test client is
the "proxy", so whether it is trusted is set through ``forwarded_allow_ips``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from sluiceway.errors import ConfigError
from sluiceway.option_sources import config_from_sources
from tests.server.process_apps import echo_scope
from tests.server.serving import TIMEOUT_S, cli_server, running

HERE = Path(__file__).parent
PEER = ["127.0.0.1", None]  # the port varies: compared loosely


async def facts(
    headers: list[tuple[str, str]] | list[tuple[bytes, bytes]], **options: Any
) -> dict[str, Any]:
    async with (
        running(echo_scope, **options) as server,
        httpx.AsyncClient(timeout=TIMEOUT_S) as client,
    ):
        response = await client.get(f"http://127.0.0.1:{server.port}/", headers=headers)
    assert response.status_code == 200
    result: dict[str, Any] = json.loads(response.text)
    return result


def is_peer(client: list[Any]) -> bool:
    return client[0] == "127.0.0.1" and client[1] != 0


async def test_trusted_proxy_sets_client_and_https() -> None:
    got = await facts([("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")])
    assert got == {"client": ["203.0.113.7", 0], "scheme": "https"}


async def test_untrusted_peer_headers_are_ignored() -> None:
    got = await facts(
        [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")],
        forwarded_allow_ips=("10.0.0.1",),
    )
    assert is_peer(got["client"]) and got["scheme"] == "http"


async def test_disabled_ignores_headers_even_from_localhost() -> None:
    got = await facts([("X-Forwarded-For", "203.0.113.7")], proxy_headers=False)
    assert is_peer(got["client"])


async def test_access_log_names_the_forwarded_client(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="sluiceway.access"):
        await facts([("X-Forwarded-For", "203.0.113.7")])
        await facts([])
    lines = [r.getMessage() for r in caplog.records if r.name == "sluiceway.access"]
    assert len(lines) == 2
    assert lines[0].startswith("203.0.113.7:0 - ")
    assert lines[1].startswith("127.0.0.1:")  # no header: the peer, as before


@pytest.mark.parametrize(
    ("chain", "allow", "client"),
    [
        # The client forged the left-most entry; our proxy 10.1.2.3 appended the real one.
        ("198.51.100.1, 203.0.113.7, 10.1.2.3", ("127.0.0.1", "10.0.0.0/8"), "203.0.113.7"),
        # Without trusting 10.0.0.0/8, the right-most entry is the client.
        ("198.51.100.1, 203.0.113.7, 10.1.2.3", ("127.0.0.1",), "10.1.2.3"),
        # Every hop trusted: the left-most is the origin.
        ("10.0.0.1,10.0.0.2", ("127.0.0.1", "10.0.0.0/8"), "10.0.0.1"),
        # '*' trusts every hop, so the left-most.
        ("198.51.100.1, 203.0.113.7", ("*",), "198.51.100.1"),
        # IPv6, with and without brackets; a non-canonical spelling is normalised.
        ("2001:DB8::0:1", ("127.0.0.1",), "2001:db8::1"),
        ("[2001:db8::1]", ("127.0.0.1",), "2001:db8::1"),
    ],
)
async def test_forwarded_for_chain_takes_rightmost_untrusted(
    chain: str, allow: tuple[str, ...], client: str
) -> None:
    got = await facts([("X-Forwarded-For", chain)], forwarded_allow_ips=allow)
    assert got["client"] == [client, 0]


async def test_ports_in_entries_are_kept() -> None:
    got = await facts([("X-Forwarded-For", "[2001:db8::1]:4711")])
    assert got["client"] == ["2001:db8::1", 4711]
    got = await facts([("X-Forwarded-For", "203.0.113.7:80")])
    assert got["client"] == ["203.0.113.7", 80]


async def test_several_header_lines_are_one_chain() -> None:
    got = await facts(
        [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "10.1.2.3")],
        forwarded_allow_ips=("127.0.0.1", "10.0.0.0/8"),
    )
    assert got["client"] == ["203.0.113.7", 0]


@pytest.mark.parametrize(
    "chain",
    [
        "unknown",
        "example.com",
        "203.0.113.7, , 10.1.2.3",
        "203.0.113.7,",
        "999.1.2.3",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "203.0.113.7:99999",
        "203.0.113.7:http",
        "_hidden",  # an RFC 7239 obfuscated identifier
    ],
)
async def test_malformed_forwarded_for_is_ignored(chain: str) -> None:
    got = await facts([("X-Forwarded-For", chain), ("X-Forwarded-Proto", "https")])
    assert is_peer(got["client"])
    assert got["scheme"] == "https"  # the rest of the request is still honoured


async def test_untrusted_malformed_hop_stops_the_walk() -> None:
    # "evil" sits right of the real client: it was not written by a trusted proxy.
    got = await facts(
        [("X-Forwarded-For", "203.0.113.7, evil, 10.1.2.3")],
        forwarded_allow_ips=("127.0.0.1", "10.0.0.0/8"),
    )
    assert is_peer(got["client"])


@pytest.mark.parametrize(
    ("proto", "scheme"),
    [
        ("https", "https"),
        ("HTTPS", "https"),
        ("wss", "https"),
        ("http", "http"),
        ("http, https", "https"),
        ("gopher", "http"),
        ("", "http"),
        ("https;", "http"),
    ],
)
async def test_forwarded_proto(proto: str, scheme: str) -> None:
    got = await facts([("X-Forwarded-Proto", proto)])
    assert got["scheme"] == scheme


async def test_non_ascii_values_are_ignored() -> None:
    got = await facts(
        [
            (b"X-Forwarded-For", "203.0.113.7\xe9".encode("latin-1")),
            (b"X-Forwarded-Proto", "https\xe9".encode("latin-1")),
        ]
    )
    assert is_peer(got["client"]) and got["scheme"] == "http"


async def test_rfc7239_forwarded_header_is_not_read() -> None:
    got = await facts([("Forwarded", "for=203.0.113.7;proto=https")])
    assert is_peer(got["client"]) and got["scheme"] == "http"


async def test_websocket_scheme_becomes_wss() -> None:
    async with running(echo_scope) as server:
        url = f"ws://127.0.0.1:{server.port}/"
        headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        async with websockets.connect(url, additional_headers=headers) as ws:
            got = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
    assert got == {"client": ["203.0.113.7", 0], "scheme": "wss"}


def test_options_parse_and_validate() -> None:
    config = config_from_sources({"forwarded_allow_ips": "10.0.0.1, 10.1.0.0/16,*"}, {})
    assert config.forwarded_allow_ips == ("10.0.0.1", "10.1.0.0/16", "*")
    # uvicorn's variable works when ours is not set.
    config = config_from_sources({}, {"FORWARDED_ALLOW_IPS": "192.0.2.1"})
    assert config.forwarded_allow_ips == ("192.0.2.1",)
    with pytest.raises(ConfigError, match=r"--forwarded-allow-ips: 'proxy\.local' is not an IP"):
        config_from_sources({"forwarded_allow_ips": "10.0.0.1,proxy.local"}, {})
    assert config_from_sources({"proxy_headers": False}, {}).proxy_headers is False


async def test_cli_applies_forwarded_allow_ips() -> None:
    args = ["process_apps:echo_scope", "--port", "0", "--app-dir", str(HERE)]
    async with cli_server(*args, "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8") as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(
                proc.address, headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.9.9.9"}
            )
        assert json.loads(response.text)["client"] == ["203.0.113.7", 0]
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
