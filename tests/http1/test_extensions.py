"""ASGI extensions: pathsend, zerocopysend, early_hint, trailers, tls."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import httpx
import trustme

from tests.http1.apps import read_body
from tests.support import exchange, local_tls, raw_connection, serve

GET = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
PAYLOAD = bytes(range(256)) * 1000  # 256000 bytes: several socket writes


def start(headers: Any = ()) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": list(headers)}


async def test_pathsend_with_content_length(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        await send(start([(b"content-length", b"%d" % len(PAYLOAD))]))
        await send({"type": "http.response.pathsend", "path": str(path)})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        for _ in range(2):  # keep-alive survives a file response
            await conn.send(GET)
            response = await conn.read_response()
            assert response.body == PAYLOAD


async def test_pathsend_without_length_gets_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send({"type": "http.response.pathsend", "path": str(path)})

    async with serve(app) as srv:
        response = await exchange(srv.port, GET)
    assert response.header(b"content-length") == b"%d" % len(PAYLOAD)
    assert response.body == PAYLOAD


async def test_pathsend_missing_file_is_500(tmp_path: Path) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send({"type": "http.response.pathsend", "path": str(tmp_path / "nope")})

    async with serve(app) as srv:
        response = await exchange(srv.port, GET)
    assert response.status == 500


async def test_zerocopysend_offset_count_mixed_with_body(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        with open(path, "rb") as handle:
            await send(start())
            await send({"type": "http.response.body", "body": b"<", "more_body": True})
            await send(
                {
                    "type": "http.response.zerocopysend",
                    "file": handle,
                    "offset": 10,
                    "count": 1000,
                    "more_body": True,
                }
            )
            await send({"type": "http.response.body", "body": b">"})

    async with serve(app) as srv:
        response = await exchange(srv.port, GET)
    assert response.header(b"transfer-encoding") == b"chunked"
    assert response.body == b"<" + PAYLOAD[10:1010] + b">"


async def test_early_hint_is_a_103_before_the_response() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload"]})
        await send(start())
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve(app) as srv, raw_connection(srv.port) as conn:
        await conn.send(GET)
        hint = await conn.read_response()
        final = await conn.read_response()
        assert hint.status == 103
        assert hint.header(b"link") == b"</style.css>; rel=preload"
        assert final.status == 200 and final.body == b"ok"
        await conn.send(b"GET / HTTP/1.0\r\n\r\n")  # no 1xx for HTTP/1.0 (RFC 9110 §15.2)
        assert (await conn.read_response()).status == 200


async def test_early_hint_with_bad_link_is_app_error() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.early_hint", "links": [b"<a>\r\nx: y"]})

    async with serve(app) as srv:
        response = await exchange(srv.port, GET)
    assert response.status == 500


async def trailer_app(scope: Any, receive: Any, send: Any) -> None:
    await read_body(receive)
    await send({**start([(b"trailer", b"x-checksum")]), "trailers": True})
    await send({"type": "http.response.body", "body": b"data", "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})


async def test_trailers_sent_when_client_asked() -> None:
    async with serve(trailer_app) as srv, raw_connection(srv.port) as conn:
        await conn.send(b"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n")
        response = await conn.read_response()
        assert response.body == b"data"
        assert response.trailers == [(b"x-checksum", b"abc")]
        await conn.send(GET)  # framing stayed intact
        assert (await conn.read_response()).body == b"data"


async def test_trailers_dropped_without_te_trailers() -> None:
    async with serve(trailer_app) as srv:
        response = await exchange(srv.port, GET)
    assert response.body == b"data"
    assert response.trailers == []
    assert response.raw.endswith(b"0\r\n\r\n")


async def test_tls_scope_and_extension(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1")
    client_cert = ca.issue_cert("client@example.com", common_name="client")
    cert_file = tmp_path / "cert.pem"
    key_file = tmp_path / "key.pem"
    ca_file = tmp_path / "ca.pem"
    cert_file.write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    key_file.write_bytes(server_cert.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(ca_file))

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_cert.configure_cert(ctx)
    ca.configure_trust(ctx)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send(start())
        await send({"type": "http.response.body", "body": json.dumps(scope["scheme"]).encode()})

    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    client_cert.configure_cert(client_ctx)
    async with (
        serve(
            app,
            ssl_context=ctx,
            ssl_certfile=str(cert_file),
            ssl_keyfile=str(key_file),
            ssl_ca_certs=str(ca_file),
            ssl_cert_reqs=int(ssl.CERT_OPTIONAL),
        ) as srv,
        httpx.AsyncClient(verify=client_ctx) as client,
    ):
        response = await client.get(srv.url + "/")
    assert response.json() == "https"
    tls = seen[0]["extensions"]["tls"]
    assert tls["tls_version"] in (0x0303, 0x0304)
    assert isinstance(tls["cipher_suite"], int)
    assert tls["server_cert"].startswith("-----BEGIN CERTIFICATE-----")
    assert len(tls["client_cert_chain"]) == 1
    assert "CN=client" in tls["client_cert_name"]
    assert tls["client_cert_error"] is None


async def test_no_tls_extension_on_plain_connections() -> None:
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)
        await send(start())
        await send({"type": "http.response.body"})

    async with serve(app) as srv:
        await exchange(srv.port, GET)
    assert "tls" not in seen[0]["extensions"]
    await asyncio.sleep(0)


async def test_pathsend_over_tls(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    tls = local_tls(tmp_path)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(start())
        await send({"type": "http.response.pathsend", "path": str(path)})

    async with (
        serve(app, ssl_context=tls.server_context) as srv,
        httpx.AsyncClient(verify=tls.client_context) as client,
    ):
        response = await client.get(srv.url + "/")
    assert response.content == PAYLOAD
