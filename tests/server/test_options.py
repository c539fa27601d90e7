"""Config validation, option parsing from argv/env, and --env-file parsing (no I/O but files)."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import pytest

from sluiceway.config import Config, config_from_options
from sluiceway.envfile import load_env_file, parse_env_file
from sluiceway.errors import ConfigError
from sluiceway.option_sources import config_from_sources, options_from_env
from sluiceway.option_values import parse_size
from sluiceway.options import OPTIONS


def test_every_option_has_a_field_and_an_env_name() -> None:
    fields = set(Config.__dataclass_fields__)
    for option in OPTIONS:
        assert option.field in fields, option.flag
        assert option.env == "SLUICEWAY_" + option.flag[2:].upper().replace("-", "_")
    flags = [option.flag for option in OPTIONS]
    assert len(flags) == len(set(flags))


def test_env_overrides_defaults_and_argv_overrides_env() -> None:
    env = {"SLUICEWAY_PORT": "9000", "SLUICEWAY_HOST": "0.0.0.0", "SLUICEWAY_ACCESS_LOG": "false"}
    config = config_from_sources({"port": "9001"}, env)
    assert config.port == 9001
    assert config.host == "0.0.0.0"
    assert config.access_log is False


def test_every_kind_of_value_parses_from_env() -> None:
    env = {
        "SLUICEWAY_TIMEOUT_KEEP_ALIVE": "2.5",
        "SLUICEWAY_LIMIT_REQUEST_BODY": "10m",
        "SLUICEWAY_LIMIT_REQUEST_HEADERS": "32KiB",
        "SLUICEWAY_HEADER": "X-One: 1\nX-Two:two words",
        "SLUICEWAY_SSL_CERT_REQS": "optional",
        "SLUICEWAY_SSL_CA_CERTS": "ca.pem",
        "SLUICEWAY_SSL_CERTFILE": "cert.pem",
        "SLUICEWAY_WS_PER_MESSAGE_DEFLATE": "no",
        "SLUICEWAY_LIFESPAN": "ON",
        "SLUICEWAY_FACTORY": "1",
        "SLUICEWAY_ROOT_PATH": "",  # empty: ignored
    }
    config = config_from_sources({}, env)
    assert config.keep_alive_timeout_s == 2.5
    assert config.max_request_body_bytes == 10 * 1024 * 1024
    assert config.max_request_headers_bytes == 32 * 1024
    assert config.headers == (("X-One", "1"), ("X-Two", "two words"))
    assert config.ssl_cert_reqs == ssl.CERT_OPTIONAL
    assert config.ws_per_message_deflate is False
    assert config.lifespan == "on"
    assert config.factory is True
    assert config.root_path == ""


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"SLUICEWAY_PORT": "eighty"}, "SLUICEWAY_PORT: 'eighty' is not an integer"),
        ({"SLUICEWAY_ACCESS_LOG": "maybe"}, "SLUICEWAY_ACCESS_LOG: 'maybe' is not true or false"),
        ({"SLUICEWAY_LIFESPAN": "sometimes"}, "SLUICEWAY_LIFESPAN"),
        ({"SLUICEWAY_TIMEOUT_KEEP_ALIVE": "nan"}, "not a finite number"),
        ({"SLUICEWAY_HEADER": "X-Bad"}, "is not NAME:VALUE"),
        ({"SLUICEWAY_HEADER": "Bad Name: v"}, "not a valid HTTP token"),
    ],
)
def test_bad_env_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        options_from_env(env)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"port": "70000"}, "--port must be between 0 and 65535"),
        ({"port": "x"}, "--port: 'x' is not an integer"),
        ({"uds": "/tmp/s", "fd": "3"}, "--uds and --fd"),
        ({"root_path": "api"}, "--root-path must start with '/'"),
        ({"ssl_keyfile": "k.pem"}, "--ssl-keyfile needs --ssl-certfile"),
        ({"ssl_certfile": "c.pem", "ssl_cert_reqs": "required"}, "needs --ssl-ca-certs"),
        ({"limit_max_requests": "0"}, "--limit-max-requests must be positive, got 0"),
        ({"limit_max_requests_jitter": "-1"}, "--limit-max-requests-jitter must not be negative"),
        ({"limit_max_requests": "ten"}, "invalid value for --limit-max-requests"),
        ({"interface": "asgi4"}, "--interface: 'asgi4' is not one of auto, asgi3, asgi2, wsgi"),
        ({"http": "h3"}, "--http: 'h3' is not one of auto, httptools, h11, zttp"),
        ({"reload_delay_s": "0"}, "--reload-delay must be positive, got 0.0"),
    ],
)
def test_bad_argv_values_are_config_errors(args: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        config_from_sources(args, {})


def test_header_values_cannot_split_the_response() -> None:
    with pytest.raises(ConfigError, match="CR, LF or NUL"):
        Config(headers=(("X-Evil", "a\r\nSet-Cookie: x=1"),))


def test_run_options_reject_unknown_names_and_wrong_types() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        config_from_options(prot=8000)
    with pytest.raises(ConfigError, match=r"port must be a number, got .8000."):
        config_from_options(port="8000")
    assert config_from_options(port=0).port == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [("65536", 65536), ("64k", 65536), ("64KiB", 65536), ("2m", 2 << 20), ("1g", 1 << 30)],
)
def test_sizes(text: str, value: int) -> None:
    assert parse_size(text) == value


def test_size_rejects_junk() -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size("ten")


def test_env_file_syntax() -> None:
    text = """
# comment
PLAIN=value
export EXPORTED = spaced   # trailing comment
SINGLE='no $escapes \\n here'
DOUBLE="line\\nbreak and \\"quote\\"" # comment
EMPTY=
HASH=a#b
"""
    assert parse_env_file(text) == {
        "PLAIN": "value",
        "EXPORTED": "spaced",
        "SINGLE": "no $escapes \\n here",
        "DOUBLE": 'line\nbreak and "quote"',
        "EMPTY": "",
        "HASH": "a#b",
    }


@pytest.mark.parametrize(
    ("text", "needle"),
    [("JUSTAWORD", ":1: expected KEY=VALUE"), ('A="open', "unterminated"), ("A='x' y", "after")],
)
def test_env_file_errors_name_the_line(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_env_file(text, "f.env")


def test_load_env_file_keeps_existing_values(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("NEW=1\nOLD=from-file\n")
    environ = {"OLD": "from-env"}
    load_env_file(str(path), environ)
    assert environ == {"OLD": "from-env", "NEW": "1"}


def test_load_env_file_missing_is_one_line() -> None:
    with pytest.raises(ConfigError, match=re.escape("cannot read env file '/nonexistent/.env'")):
        load_env_file("/nonexistent/.env", {})
