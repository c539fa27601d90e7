"""Start-up of a real ``sluiceway run`` process: configuration errors and the order of its lines.

* A channel layer that is configured but cannot load fails the start with
  exit code 2 and one line saying what to install, before lifespan and
  before binding, instead of serving and answering 500 on every WebSocket.
* A configuration error the app raises during lifespan startup (a
  ``ConfigError``, a missing package) is that same one line and exit 2,
  in the default ``--lifespan auto`` too, never "the app does not support
  lifespan".
* The start-up lines come in order: the version banner, the app's startup,
  then "Listening on".

Every process is awaited with a timeout, its stderr read whole after exit.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.server.serving import TIMEOUT_S, cli_server

APP_DIR = ["--app-dir", str(Path(__file__).parent)]
# No Redis listens here: the layer must fail before it would ever connect.
NO_REDIS = {"SLUICEWAY_CHANNEL_LAYER": "redis://127.0.0.1:1/0"}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("sluiceway: error:")]


async def test_a_redis_layer_without_the_redis_package_fails_the_start_in_one_line() -> None:
    async with cli_server(
        "no_redis_app:app", "--port", "0", *APP_DIR, env=NO_REDIS, wait_listening=False
    ) as proc:
        code = await proc.wait_exit()
    assert code == 2, proc.text
    assert error_lines(proc.text) == [
        "sluiceway: error: channel layer 'default' (sluiceway.layers.redis.RedisChannelLayer)"
        " needs the 'redis' package: pip install 'sluiceway[redis]'"
    ], proc.text
    assert "Traceback" not in proc.text
    # Failed before anything was served or started.
    assert "Listening on" not in proc.text
    assert "Application startup" not in proc.text
    assert "lifespan" not in proc.text


async def test_a_configured_layer_that_loads_is_built_and_the_server_starts() -> None:
    env = {"SLUICEWAY_CHANNEL_LAYER": "memory://"}
    async with cli_server("logging_apps:app", "--port", "0", *APP_DIR, env=env) as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.post(proc.address + "/", content=b"up")
        assert response.text == "echo:up"
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0, proc.text


async def test_a_bad_channel_layer_url_fails_the_start() -> None:
    env = {"SLUICEWAY_CHANNEL_LAYER": "postgres://db/0"}
    async with cli_server(
        "logging_apps:app", "--port", "0", *APP_DIR, env=env, wait_listening=False
    ) as proc:
        code = await proc.wait_exit()
    assert code == 2, proc.text
    (line,) = error_lines(proc.text)
    assert "SLUICEWAY_CHANNEL_LAYER='postgres://db/0'" in line
    assert "Listening on" not in proc.text


@pytest.mark.parametrize(
    ("app", "error"),
    [
        ("config_error_in_lifespan", "ConfigError: DATABASE_URL is not set"),
        (
            "import_error_in_lifespan",
            "ModuleNotFoundError: No module named 'sluiceway_no_such_package'",
        ),
    ],
    ids=["ConfigError", "missing package"],
)
async def test_a_config_error_in_lifespan_startup_is_not_taken_for_no_lifespan_support(
    app: str, error: str
) -> None:
    async with cli_server(
        f"logging_apps:{app}", "--port", "0", *APP_DIR, wait_listening=False
    ) as proc:
        code = await proc.wait_exit()
    assert code == 2, proc.text
    assert error_lines(proc.text) == [f"sluiceway: error: application startup: {error}"], proc.text
    assert "does not support" not in proc.text
    assert "Traceback" not in proc.text
    assert "Listening on" not in proc.text


async def test_an_app_without_lifespan_support_is_still_served() -> None:
    """The other side of the line drawn above: a ValueError on the scope is "no lifespan"."""
    async with cli_server("logging_apps:no_lifespan", "--port", "0", *APP_DIR) as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            assert (await client.get(proc.address + "/")).status_code == 204
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0, proc.text
    assert "does not support the ASGI lifespan protocol" in proc.text


async def test_the_start_up_lines_come_in_order() -> None:
    async with cli_server("logging_apps:app", "--port", "0", *APP_DIR) as proc:
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0, proc.text
    lines = proc.stderr

    def index(text: str) -> int:
        found = [n for n, line in enumerate(lines) if text in line]
        assert found, f"no line with {text!r}:\n{proc.text}"
        return found[0]

    banner = index("sluiceway 0.")
    startup = index("Application startup complete.")
    listening = index("Listening on http://127.0.0.1:")
    assert banner < startup < listening, proc.text
