"""The command line as a user meets it: real subprocesses, exit codes and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sluiceway import __version__

TIMEOUT = 30


def sluiceway(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sluiceway", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=full_env,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], needle: str, code: int = 2
) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sluiceway: error: "), lines[0]
    assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "hello.py").write_text("async def app(scope, receive, send):\n    pass\n")
    (tmp_path / "broken_import.py").write_text("import not_a_real_dependency_xyz\n")
    return tmp_path


def test_version() -> None:
    result = sluiceway("--version")
    assert result.returncode == 0
    assert result.stdout.startswith(f"sluiceway {__version__} (")


def test_help_lists_options_and_env_names() -> None:
    result = sluiceway("run", "--help")
    assert result.returncode == 0
    for text in (
        "--timeout-graceful-shutdown",
        "SLUICEWAY_PORT",
        "--no-access-log",
        "--ws-max-size",
        "--log-config FILE",
        "SLUICEWAY_LOG_CONFIG",
    ):
        assert text in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "hello:app", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "hello:app", "--port", "eighty"], "--port: 'eighty' is not an integer"),
        (["run", "hello:app", "--port", "70000"], "port must be between 0 and 65535"),
        (["run", "hello:app", "--lifespan", "maybe"], "--lifespan: 'maybe' is not one of"),
        (["run", "hello:app", "--header", "no-colon"], "--header: 'no-colon' is not NAME:VALUE"),
        (["run", "hello:app", "--limit-request-body", "lots"], "is not a size"),
        (["run", "hello:app", "--ssl-keyfile", "k.pem"], "--ssl-keyfile needs --ssl-certfile"),
        (["run"], "missing APP"),
        (["run", "hello"], 'must be "module:attribute"'),
        ([], "COMMAND"),
    ],
)
def test_bad_usage_exits_2_with_one_line(app_dir: Path, args: list[str], needle: str) -> None:
    assert_one_line_error(sluiceway(*args, cwd=app_dir), needle)


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        # Config's own checks say the flag the user typed, not the dataclass field.
        (["--limit-concurrency", "0"], {}, "--limit-concurrency must be positive, got 0"),
        (["--timeout-keep-alive", "-1"], {}, "--timeout-keep-alive must not be negative, got -1.0"),
        (["--ws-ping-timeout", "-2"], {}, "--ws-ping-timeout must not be negative, got -2.0"),
        (["--limit-request-headers", "0"], {}, "--limit-request-headers must be positive, got 0"),
        (["--ws-max-size", "0"], {}, "--ws-max-size must be positive, got 0"),
        (["--workers", "0"], {}, "--workers must be at least 1, got 0"),
        (["--backlog", "0"], {}, "--backlog must be positive, got 0"),
        (["--fd", "-3"], {}, "--fd must not be negative, got -3"),
        (["--root-path", "api/"], {}, "--root-path must start with '/' and not end with one"),
        # Values the option parser refuses before Config sees them: named too.
        (["--limit-request-body", "-1"], {}, "invalid value for --limit-request-body: '-1'"),
        (["--ssl-cert-reqs", "3"], {}, "invalid value for --ssl-cert-reqs: '3' is not one of"),
        # From the environment, the variable it came from.
        ([], {"SLUICEWAY_LIMIT_CONCURRENCY": "0"}, "SLUICEWAY_LIMIT_CONCURRENCY must be positive"),
        ([], {"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY must be at least 1, got 0"),
        # The command line wins over the variable, and so does its name.
        (
            ["--timeout-graceful-shutdown", "-5"],
            {"SLUICEWAY_TIMEOUT_GRACEFUL_SHUTDOWN": "7"},
            "--timeout-graceful-shutdown must not be negative",
        ),
    ],
)
def test_bad_values_name_the_flag_or_variable(
    app_dir: Path, args: list[str], env: dict[str, str], line: str
) -> None:
    result = sluiceway("run", "hello:app", *args, cwd=app_dir, env=env)
    assert_one_line_error(result, line)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("missing.json", None, "--log-config 'missing.json': cannot read it: No such file"),
        ("bad.json", "{not json", "--log-config 'bad.json': not valid JSON: Expecting"),
        ("list.json", "[1, 2]", "must hold a dictConfig mapping, not list"),
        ("nover.json", '{"handlers": {}}', "rejected by logging: ValueError: dictionary doesn't"),
        (
            "handler.json",
            '{"version": 1, "handlers": {"f": {"class": "logging.FileHandler",'
            ' "filename": "/nonexistent-dir/x.log"}}}',
            "Unable to configure handler 'f' (FileNotFoundError:",
        ),
        ("bad.ini", "not an ini file\n", "--log-config 'bad.ini': rejected by logging:"),
        ("empty.conf", "", "--log-config 'empty.conf': rejected by logging: "),
    ],
)
def test_bad_log_config_exits_2_with_one_line(
    app_dir: Path, name: str, content: str | None, needle: str
) -> None:
    if content is not None:
        (app_dir / name).write_text(content)
    result = sluiceway("run", "hello:app", "--port", "0", "--log-config", name, cwd=app_dir)
    assert_one_line_error(result, needle)


def test_log_config_from_the_environment(app_dir: Path) -> None:
    result = sluiceway(
        "run", "hello:app", "--port", "0", cwd=app_dir, env={"SLUICEWAY_LOG_CONFIG": "gone.ini"}
    )
    assert_one_line_error(result, "--log-config 'gone.ini': cannot read it")


def test_missing_module(app_dir: Path) -> None:
    assert_one_line_error(
        sluiceway("run", "nope_module:app", cwd=app_dir), "module 'nope_module' not found"
    )


def test_missing_attribute(app_dir: Path) -> None:
    assert_one_line_error(
        sluiceway("run", "hello:application", cwd=app_dir),
        "attribute 'application' not found in module 'hello'",
    )


def test_import_error_inside_the_module_is_reported_as_such(app_dir: Path) -> None:
    result = sluiceway("run", "broken_import:app", cwd=app_dir)
    assert_one_line_error(result, "importing module 'broken_import' failed: ModuleNotFoundError")
    assert "not_a_real_dependency_xyz" in result.stderr


def test_app_dir_option(app_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    result = sluiceway("run", "hello:application", "--app-dir", str(app_dir), cwd=elsewhere)
    # Found the module through --app-dir: the error is now about the attribute.
    assert_one_line_error(result, "attribute 'application' not found in module 'hello'")


def test_bad_env_value_names_the_variable(app_dir: Path) -> None:
    result = sluiceway("run", "hello:app", cwd=app_dir, env={"SLUICEWAY_PORT": "x"})
    assert_one_line_error(result, "invalid value for SLUICEWAY_PORT: 'x' is not an integer")


def test_app_from_env(app_dir: Path) -> None:
    result = sluiceway("run", cwd=app_dir, env={"SLUICEWAY_APP": "hello:nothing"})
    assert_one_line_error(result, "attribute 'nothing' not found in module 'hello'")


def test_missing_env_file(app_dir: Path) -> None:
    result = sluiceway("run", "hello:app", "--env-file", "missing.env", cwd=app_dir)
    assert_one_line_error(result, "cannot read env file 'missing.env'")


def test_env_file_can_set_sluiceway_options(app_dir: Path) -> None:
    (app_dir / "bad.env").write_text("SLUICEWAY_LIFESPAN=sometimes\n")
    result = sluiceway("run", "hello:app", "--env-file", "bad.env", cwd=app_dir)
    assert_one_line_error(result, "invalid value for SLUICEWAY_LIFESPAN")


def test_bad_tls_files(app_dir: Path) -> None:
    result = sluiceway("run", "hello:app", "--port", "0", "--ssl-certfile", "nope.pem", cwd=app_dir)
    assert_one_line_error(result, "TLS certificate or key file not found: nope.pem")


def test_worker_subcommand_hands_its_arguments_to_the_worker() -> None:
    result = sluiceway("worker", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: sluiceway worker")
