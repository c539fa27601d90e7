"""Config errors name what the user typed: a field for run(), a flag or variable on the CLI."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from sluiceway.config import InvalidField, config_from_options
from sluiceway.errors import ConfigError
from sluiceway.option_sources import config_from_sources
from sluiceway.options import BY_FIELD

# One bad value for every field that Config checks on its own.
BAD: dict[str, Any] = {
    "port": 70000,
    "fd": -1,
    "backlog": 0,
    "lifespan": "sometimes",
    "loop": "trio",
    "ws": "maybe",
    "log_level": "loud",
    "log_config": 42,
    "root_path": "api/",
    "keep_alive_timeout_s": -1.0,
    "graceful_shutdown_timeout_s": -1.0,
    "request_headers_timeout_s": -1.0,
    "lifespan_startup_timeout_s": -1.0,
    "lifespan_shutdown_timeout_s": -1.0,
    "ws_ping_interval_s": -1.0,
    "ws_ping_timeout_s": -1.0,
    "max_request_headers_bytes": 0,
    "max_request_line_bytes": 0,
    "ws_max_size_bytes": 0,
    "ws_max_queue": 0,
    "max_request_body_bytes": -1,
    "limit_concurrency": 0,
    "ssl_cert_reqs": 7,
    "workers": 0,
}


@pytest.mark.parametrize(("field", "value"), BAD.items())
def test_run_names_the_field_and_the_cli_the_flag_or_variable(field: str, value: Any) -> None:
    with pytest.raises(InvalidField) as caught:
        config_from_options(**{field: value})
    problem = caught.value.problem
    assert caught.value.field_name == field
    assert str(caught.value) == f"{field} {problem}"
    assert "\n" not in str(caught.value)

    option = BY_FIELD[field]  # every checked field has a flag to name
    text = str(value)
    try:
        if option.parse(text) != value:
            return  # no text parses to it (log_config=42): nothing to name on the CLI
    except ValueError:
        return  # the option's parser refuses it first, naming the flag (test_cli.py)
    with pytest.raises(ConfigError) as via_argv:
        config_from_sources({field: text}, {})
    assert str(via_argv.value) == f"{option.flag} {problem}"
    with pytest.raises(ConfigError) as via_env:
        config_from_sources({}, {option.env: text})
    assert str(via_env.value) == f"{option.env} {problem}"


def test_invalid_field_survives_pickling() -> None:
    error = InvalidField("workers", "must be at least 1, got 0")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field_name, copy.problem, str(copy)) == (
        "workers",
        "must be at least 1, got 0",
        "workers must be at least 1, got 0",
    )
