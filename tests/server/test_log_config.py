"""``--log-config FILE``: a real ``sluiceway run`` process logs where the user's file says.

Each served test routes ``sluiceway.access`` to a file with its own format,
makes a real request with httpx, stops the server with SIGTERM (so every
handler is flushed and closed) and then reads the file: no sleeps, no polling.
The one-line errors for bad files are in ``test_cli.py``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sluiceway.config import InvalidField, config_from_options
from sluiceway.logconfig import configure_logging
from tests.server.serving import TIMEOUT_S, cli_server

HERE = Path(__file__).parent
APP_DIR = ["--app-dir", str(HERE)]
HAVE_YAML = importlib.util.find_spec("yaml") is not None


def access_to_file(log_file: Path, fmt: str, level: str = "INFO") -> dict[str, Any]:
    """A dictConfig that sends ``sluiceway.access`` to ``log_file`` only, formatted by ``fmt``."""
    return {
        "version": 1,
        "formatters": {"custom": {"format": fmt}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "formatter": "custom",
            }
        },
        "loggers": {
            "sluiceway.access": {"handlers": ["file"], "level": level, "propagate": False},
        },
    }


async def serve_one_request(*args: str, app: str = "cli_apps:app", path: str = "/") -> str:
    """Run the CLI, GET ``path``, stop it with SIGTERM; the response body."""
    async with cli_server(app, "--port", "0", *APP_DIR, *args) as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(proc.address + path)
        assert response.status_code == 200
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0, proc.text
    # The defaults still hold where the file is silent: server events on stderr.
    assert "Listening on" in proc.text
    return response.text


async def test_json_config_routes_the_access_log_to_a_file(tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(
        json.dumps(access_to_file(log_file, "JSON|%(name)s|%(levelname)s|%(message)s"))
    )
    await serve_one_request("--log-config", str(config), path="/?from=json")
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1, lines
    assert re.fullmatch(
        r'JSON\|sluiceway\.access\|INFO\|127\.0\.0\.1:\d+ - "GET /\?from=json HTTP/1\.1" 200 10 '
        r"[\d.]+ms",
        lines[0],
    ), lines[0]


async def test_ini_config_goes_to_file_config(tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    config = tmp_path / "logging.ini"
    config.write_text(
        "[loggers]\nkeys=root,access\n\n"
        "[handlers]\nkeys=file\n\n"
        "[formatters]\nkeys=custom\n\n"
        "[logger_root]\nlevel=WARNING\nhandlers=\n\n"
        "[logger_access]\nlevel=INFO\nhandlers=file\npropagate=0\nqualname=sluiceway.access\n\n"
        f"[handler_file]\nclass=FileHandler\nformatter=custom\nargs=({str(log_file)!r}, 'a')\n\n"
        "[formatter_custom]\nformat=INI %(levelname)s %(message)s\n"
    )
    await serve_one_request("--log-config", str(config), path="/?from=ini")
    (line,) = log_file.read_text().splitlines()
    assert line.startswith("INI INFO 127.0.0.1:"), line
    assert '"GET /?from=ini HTTP/1.1" 200' in line


@pytest.mark.parametrize(
    ("file_level", "args", "logged"),
    [
        # The file's level stands when --log-level is not given...
        ("WARNING", [], False),
        # ...an explicit --log-level is applied over it, as uvicorn does...
        ("WARNING", ["--log-level", "info"], True),
        # ...and --no-access-log keeps the access log off whatever the file says.
        ("INFO", ["--no-access-log"], False),
    ],
)
async def test_explicit_level_and_no_access_log_apply_over_the_file(
    tmp_path: Path, file_level: str, args: list[str], logged: bool
) -> None:
    log_file = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(access_to_file(log_file, "%(message)s", file_level)))
    await serve_one_request("--log-config", str(config), *args)
    # FileHandler opens its file when configured, so it exists either way.
    assert bool(log_file.read_text()) is logged


async def test_every_worker_applies_the_config(tmp_path: Path) -> None:
    log_file = tmp_path / "access.log"
    config = tmp_path / "logging.json"
    config.write_text(json.dumps(access_to_file(log_file, "pid=%(process)d %(message)s")))
    worker_pid = int(
        await serve_one_request(
            "--log-config", str(config), "--workers", "2", app="process_apps:pid"
        )
    )
    (line,) = log_file.read_text().splitlines()
    assert line.startswith(f"pid={worker_pid} 127.0.0.1:"), line


if HAVE_YAML:

    async def test_yaml_config_goes_to_dict_config(tmp_path: Path) -> None:
        log_file = tmp_path / "access.log"
        config = tmp_path / "logging.yaml"
        config.write_text(
            "version: 1\n"
            "formatters:\n  custom:\n    format: 'YAML %(message)s'\n"
            "handlers:\n  file:\n    class: logging.FileHandler\n"
            f"    filename: {json.dumps(str(log_file))}\n    formatter: custom\n"
            "loggers:\n  sluiceway.access:\n    handlers: [file]\n    level: INFO\n"
            "    propagate: false\n"
        )
        await serve_one_request("--log-config", str(config), path="/?from=yaml")
        (line,) = log_file.read_text().splitlines()
        assert line.startswith("YAML 127.0.0.1:") and "/?from=yaml" in line, line


def test_yaml_without_pyyaml_is_one_clear_line(tmp_path: Path) -> None:
    """PyYAML is optional; without it a YAML config says so (exit 2).

    Runs whether or not PyYAML is installed: when it is, the child process
    blocks the import the way a missing package fails it.
    """
    (tmp_path / "logging.yaml").write_text("version: 1\n")
    block = "import sys; sys.modules['yaml'] = None; " if HAVE_YAML else "import sys; "
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            block + "from sluiceway.cli import main; sys.exit(main())",
            *("run", "cli_apps:app", "--port", "0", *APP_DIR, "--log-config", "logging.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "sluiceway: error: --log-config 'logging.yaml': a YAML config needs PyYAML "
        "(pip install pyyaml)"
    ]


# --- run(log_config=...) and Config, in this process ------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in ("sluiceway", "sluiceway.error", "sluiceway.access")]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate, lg.disabled) for lg in loggers]
    factory = logging.getLogRecordFactory()  # configure_logging wraps it (SafeRecords)
    yield
    logging.setLogRecordFactory(factory)
    for lg, level, handlers, propagate, disabled in saved:
        for handler in lg.handlers:
            if handler not in handlers:
                handler.close()
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate
        lg.disabled = disabled


def test_a_dict_config_leaves_the_loggers_it_does_not_name_alone(
    restore_logging: None, tmp_path: Path
) -> None:
    log_file = tmp_path / "access.log"
    configure_logging(None, True, access_to_file(log_file, "DICT %(message)s"))
    logging.getLogger("sluiceway.access").info("one %s", "line")
    error = logging.getLogger("sluiceway.error")
    # dictConfig's own default would have disabled these: the file did not name them.
    assert not error.disabled and error.isEnabledFor(logging.INFO)
    assert not logging.getLogger("sluiceway").disabled
    assert log_file.read_text() == "DICT one line\n"


def test_log_config_must_be_a_path_or_a_dict() -> None:
    with pytest.raises(InvalidField, match="log_config must be a file path or a dictConfig dict"):
        config_from_options(log_config=42)
    assert config_from_options(log_config=Path("x.json")).log_config == Path("x.json")
