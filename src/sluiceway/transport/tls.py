"""TLS: the server's ``SSLContext`` and the ASGI ``tls`` scope extension.

``create_ssl_context(config)`` loads the certificate chain and key (with an
optional password), the CA bundle that client certificates are verified
against, the client-certificate requirement, and advertises ALPN
``http/1.1`` (``h2`` joins when HTTP/2 lands), and applies ``--ssl-ciphers``
to TLS 1.2 (TLS 1.3's suites are OpenSSL's). TLS 1.2 is the floor. Any
unreadable file, wrong password or mismatched key is a one-line
``ConfigError`` (the CLI exits 2).

``tls_extension(ssl_object, server_cert_pem)`` builds the scope's
``extensions["tls"]`` dict (asgiref specs/tls.rst, version 0.2) from a
finished handshake; ``TLSInfo`` caches what is the same for every connection.

Imports only the standard library, ``sluiceway.config`` and ``sluiceway.errors``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

from sluiceway.config import Config
from sluiceway.errors import ConfigError

# RFC 9113 §3.2: "h2" first, so a client that speaks both gets HTTP/2.
ALPN_PROTOCOLS = ["h2", "http/1.1"]
ALPN_HTTP1_ONLY = ["http/1.1"]

# specs/tls.rst: tls_version is the TLS wire version number.
_TLS_VERSIONS = {
    "TLSv1": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}


@dataclass(slots=True)
class TLSInfo:
    """Per-server TLS facts: the server certificate (PEM) and cipher ids by name."""

    server_cert_pem: str | None
    cipher_ids: dict[str, int] = field(default_factory=dict)


def create_ssl_context(config: Config) -> ssl.SSLContext:
    """Build the server context from ``config``'s ``ssl_*`` fields.

    Raises:
        ConfigError: a file cannot be read or parsed, or the key does not fit.
    """
    if config.ssl_certfile is None:
        raise ConfigError("TLS needs --ssl-certfile")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.ssl_version != "auto":  # --ssl-version pins one, as PROTOCOL_TLSv1_2 did
        pinned = ssl.TLSVersion[config.ssl_version.replace(".", "_")]
        context.minimum_version = context.maximum_version = pinned
    try:
        context.load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile, password=config.ssl_keyfile_password
        )
    except FileNotFoundError as exc:
        missing = exc.filename or config.ssl_keyfile or config.ssl_certfile
        raise ConfigError(f"TLS certificate or key file not found: {missing}") from None
    except OSError as exc:
        # load_cert_chain reports a bad password and a non-PEM file alike.
        raise ConfigError(
            f"cannot load TLS certificate {config.ssl_certfile!r}"
            + (f" with key {config.ssl_keyfile!r}" if config.ssl_keyfile else "")
            + f": {_reason(exc)}"
        ) from None
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(cafile=config.ssl_ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load CA certificates {config.ssl_ca_certs!r}: {_reason(exc)}"
            ) from None
    context.verify_mode = ssl.VerifyMode(config.ssl_cert_reqs)
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"--ssl-ciphers {config.ssl_ciphers!r} selects no cipher OpenSSL knows"
            ) from None
    context.set_alpn_protocols(ALPN_PROTOCOLS if config.http2 else ALPN_HTTP1_ONLY)
    return context


def load_tls_info(config: Config, context: ssl.SSLContext) -> TLSInfo:
    """What the ``tls`` extension repeats on every connection, computed once."""
    pem: str | None = None
    if config.ssl_certfile is not None:
        try:
            with open(config.ssl_certfile, encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:
            text = ""
        begin = text.find("-----BEGIN CERTIFICATE-----")
        end_marker = "-----END CERTIFICATE-----"
        end = text.find(end_marker, begin)
        if begin >= 0 and end >= 0:
            # The leaf certificate: the first in the chain file.
            pem = text[begin : end + len(end_marker)] + "\n"
    # get_ciphers() ids are OpenSSL's 0x0300XXXX; the low 16 bits are the
    # IANA cipher suite number that specs/tls.rst asks for.
    ids = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}
    return TLSInfo(server_cert_pem=pem, cipher_ids=ids)


def tls_extension(ssl_object: ssl.SSLObject | ssl.SSLSocket, info: TLSInfo) -> dict[str, Any]:
    """The ``tls`` scope extension for one handshaken connection."""
    chain: list[str] = []
    name: str | None = None
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        chain.append(ssl.DER_cert_to_PEM_cert(der))
        # The parsed form exists only for a verified certificate, which is
        # the only kind a connection gets past the handshake with.
        name = rfc4514_name(ssl_object.getpeercert())
    version = ssl_object.version()
    cipher = ssl_object.cipher()
    return {
        "server_cert": info.server_cert_pem,
        "client_cert_chain": chain,
        "client_cert_name": name,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": info.cipher_ids.get(cipher[0]) if cipher else None,
    }


# RFC 4514 §3: short names for the usual attribute types.
_SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def rfc4514_name(cert: Any) -> str | None:
    """The subject of a ``getpeercert()`` dict as an RFC 4514 string."""
    if not cert or "subject" not in cert:
        return None
    # RFC 4514 §2.1: the RDNs are written in reverse of their ASN.1 order.
    rdns = []
    for rdn in reversed(cert["subject"]):
        parts = [f"{_SHORT_NAMES.get(key, key)}={_escape(value)}" for key, value in rdn]
        rdns.append("+".join(parts))
    return ",".join(rdns)


def _escape(value: str) -> str:
    # RFC 4514 §2.4.
    out = []
    for index, char in enumerate(value):
        if (
            char in ',+"\\<>;'
            or (char in " #" and index == 0)
            or (char == " " and index == len(value) - 1)
        ):
            out.append("\\" + char)
        elif char == "\0":
            out.append("\\00")
        else:
            out.append(char)
    return "".join(out)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason in (None, "PEM lib"):
        # OpenSSL says only "PEM lib" for a non-PEM file and a wrong password alike.
        return "not a valid PEM certificate and key, or the key password is wrong"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
