"""TLS end to end: a trustme CA, the real Server, httpx as the client."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from sluiceway.asgi.types import Receive, Scope, Send
from sluiceway.config import Config
from sluiceway.errors import ConfigError
from sluiceway.transport.tls import create_ssl_context, rfc4514_name
from tests.server.serving import TIMEOUT_S, running


async def tls_echo(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"scheme": scope["scheme"], "tls": scope["extensions"].get("tls")})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


@dataclass
class Certs:
    ca: trustme.CA
    cert: str
    key: str
    ca_file: str
    encrypted_key: str


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Certs]:
    from cryptography.hazmat.primitives import serialization

    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for blob in leaf.cert_chain_pems[1:]:
        blob.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    private = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    encrypted = directory / "encrypted-key.pem"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    yield Certs(ca, str(cert), str(key), str(ca_file), str(encrypted))


def client_context(certs: Certs, client_name: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs.ca_file)
    if client_name is not None:
        certs.ca.issue_cert(client_name, common_name=client_name).configure_cert(context)
    return context


async def fetch(url: str, context: ssl.SSLContext) -> dict[str, Any]:
    async with httpx.AsyncClient(verify=context, timeout=TIMEOUT_S) as client:
        response = await client.get(url)
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


async def test_https_scope_and_tls_extension(certs: Certs) -> None:
    async with running(tls_echo, ssl_certfile=certs.cert, ssl_keyfile=certs.key) as server:
        data = await fetch(f"https://localhost:{server.port}/", client_context(certs))
    assert data["scheme"] == "https"
    tls = data["tls"]
    assert tls["server_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert (
        tls["server_cert"]
        == Path(certs.cert).read_text().split("-----END CERTIFICATE-----")[0]
        + "-----END CERTIFICATE-----\n"
    )
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int) and 0 < tls["cipher_suite"] <= 0xFFFF


async def test_plain_http_has_no_tls_extension() -> None:
    async with running(tls_echo) as server, httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        data = (await client.get(f"http://127.0.0.1:{server.port}/")).json()
    assert data == {"scheme": "http", "tls": None}


async def test_encrypted_key_with_password(certs: Certs) -> None:
    async with running(
        tls_echo,
        ssl_certfile=certs.cert,
        ssl_keyfile=certs.encrypted_key,
        ssl_keyfile_password="s3cret",
    ) as server:
        data = await fetch(f"https://localhost:{server.port}/", client_context(certs))
    assert data["scheme"] == "https"


def test_wrong_password_is_one_line(certs: Certs) -> None:
    config = Config(
        ssl_certfile=certs.cert, ssl_keyfile=certs.encrypted_key, ssl_keyfile_password="nope"
    )
    with pytest.raises(ConfigError, match="key password is wrong"):
        create_ssl_context(config)


async def test_client_cert_required(certs: Certs) -> None:
    options = dict(
        ssl_certfile=certs.cert,
        ssl_keyfile=certs.key,
        ssl_ca_certs=certs.ca_file,
        ssl_cert_reqs=int(ssl.CERT_REQUIRED),
    )
    async with running(tls_echo, **options) as server:
        url = f"https://localhost:{server.port}/"
        data = await fetch(url, client_context(certs, "alice"))
        tls = data["tls"]
        assert tls["client_cert_name"] == rfc4514_name_of_issued("alice", tls)
        assert "CN=alice" in tls["client_cert_name"]
        assert len(tls["client_cert_chain"]) == 1
        assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            await fetch(url, client_context(certs))  # no client certificate: refused


def rfc4514_name_of_issued(name: str, tls: dict[str, Any]) -> str:
    """The RFC 4514 subject of the PEM the server reported, decoded independently."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(tls["client_cert_chain"][0].encode())
    return cert.subject.rfc4514_string()


async def test_client_cert_optional(certs: Certs) -> None:
    options = dict(
        ssl_certfile=certs.cert,
        ssl_keyfile=certs.key,
        ssl_ca_certs=certs.ca_file,
        ssl_cert_reqs=int(ssl.CERT_OPTIONAL),
    )
    async with running(tls_echo, **options) as server:
        url = f"https://localhost:{server.port}/"
        without = await fetch(url, client_context(certs))
        assert without["tls"]["client_cert_chain"] == []
        assert without["tls"]["client_cert_name"] is None
        with_cert = await fetch(url, client_context(certs, "bob"))
        assert "CN=bob" in with_cert["tls"]["client_cert_name"]


@pytest.mark.parametrize(
    ("http2", "offered", "chosen"),
    [
        (True, ["h2", "http/1.1"], "h2"),  # RFC 9113 §3.2: HTTP/2 preferred
        (True, ["http/1.1"], "http/1.1"),  # a client without HTTP/2 keeps HTTP/1.1
        (False, ["h2", "http/1.1"], "http/1.1"),  # --no-http2
    ],
)
async def test_alpn_chooses_h2_when_offered_and_enabled(
    certs: Certs, http2: bool, offered: list[str], chosen: str
) -> None:
    async with running(
        tls_echo, ssl_certfile=certs.cert, ssl_keyfile=certs.key, http2=http2
    ) as server:
        context = client_context(certs)
        context.set_alpn_protocols(offered)
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                "127.0.0.1", server.port, ssl=context, server_hostname="localhost"
            ),
            TIMEOUT_S,
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == chosen
        writer.close()


async def test_ssl_ciphers_limit_what_tls12_negotiates(certs: Certs) -> None:
    chosen = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384"
    async with running(
        tls_echo, ssl_certfile=certs.cert, ssl_keyfile=certs.key, ssl_ciphers=chosen
    ) as server:
        url = f"https://localhost:{server.port}/"
        listed = client_context(certs)
        listed.maximum_version = ssl.TLSVersion.TLSv1_2
        data = await fetch(url, listed)
        names = {c["name"]: c["id"] & 0xFFFF for c in ssl.create_default_context().get_ciphers()}
        assert data["tls"]["cipher_suite"] in {names[n] for n in chosen.split(":") if n in names}
        unlisted = client_context(certs)
        unlisted.maximum_version = ssl.TLSVersion.TLSv1_2
        unlisted.set_ciphers("ECDHE+AES128")  # none of them is on the server's list
        with pytest.raises(httpx.ConnectError):
            await fetch(url, unlisted)


def test_ssl_ciphers_that_select_nothing_is_one_line(certs: Certs) -> None:
    config = Config(ssl_certfile=certs.cert, ssl_keyfile=certs.key, ssl_ciphers="NO-SUCH-CIPHER")
    with pytest.raises(ConfigError, match="--ssl-ciphers 'NO-SUCH-CIPHER' selects no cipher"):
        create_ssl_context(config)


def test_rfc4514_escaping() -> None:
    cert = {"subject": ((("countryName", "GB"),), (("commonName", "Smith, J+r #1 "),))}
    assert rfc4514_name(cert) == "CN=Smith\\, J\\+r #1\\ ,C=GB"
