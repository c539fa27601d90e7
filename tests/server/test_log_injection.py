"""An exception message cannot write a log line of its own (issue 16, defect 5).

Apps put request data in exception messages. Python prints a message's
newlines as they are, so ``ValueError("x\\nINFO: fake record")`` put a line
of the client's choosing in the error log, one that passes for a record.
Now every line of a traceback is indented, with sluiceway's formatter and
with a plain ``logging.Formatter`` from ``--log-config`` alike.
"""

from __future__ import annotations

import io
import json
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sluiceway.logconfig import SafeFormatter, SafeRecords, escape_control
from tests.server.serving import TIMEOUT_S, cli_server

HERE = Path(__file__).parent
FORGED = "INFO: fake record"
# A format under which a forged line is exactly what a real record looks like.
PLAIN = "%(levelname)s: %(message)s"

JSON_CONFIG = {
    "version": 1,
    "formatters": {"plain": {"format": PLAIN}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {"sluiceway": {"handlers": ["stderr"], "level": "INFO", "propagate": False}},
}

INI_CONFIG = f"""\
[loggers]
keys=root,sluiceway

[handlers]
keys=stderr

[formatters]
keys=plain

[logger_root]
handlers=

[logger_sluiceway]
level=INFO
handlers=stderr
propagate=0
qualname=sluiceway

[handler_stderr]
class=StreamHandler
formatter=plain
args=(sys.stderr,)

[formatter_plain]
format={PLAIN}
"""


def log_config_args(kind: str, tmp_path: Path) -> list[str]:
    if kind == "default":
        return []
    path = tmp_path / f"logging.{kind}"
    path.write_text(json.dumps(JSON_CONFIG) if kind == "json" else INI_CONFIG)
    return ["--log-config", str(path)]


@pytest.mark.parametrize("kind", ["default", "json", "ini"])
async def test_an_exception_message_cannot_start_a_log_line(kind: str, tmp_path: Path) -> None:
    args = ["--port", "0", "--app-dir", str(HERE), *log_config_args(kind, tmp_path)]
    async with cli_server("stop_apps:raises_request_data", *args) as proc:
        async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
            response = await client.get(proc.address + "/?x%0AINFO:+fake+record")
        assert response.status_code == 500
        await proc.wait_for_line("ValueError: x$")
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit() == 0
    assert not [line for line in proc.stderr if line.startswith(FORGED)], proc.text
    # Still logged, readable, as part of the traceback.
    traceback = proc.stderr[proc.stderr.index("  Traceback (most recent call last):") :]
    assert traceback[traceback.index("  ValueError: x") + 1] == "  " + FORGED


def raised(message: str) -> logging.LogRecord:
    try:
        raise ValueError(message)
    except ValueError:
        return logging.LogRecord(
            "sluiceway.error", logging.ERROR, __file__, 1, "boom", (), sys.exc_info()
        )


def test_the_safe_formatter_ignores_a_raw_traceback_another_formatter_cached() -> None:
    # Handlers share the record: the first formatter caches its exc_text on it.
    record = raised("x\n" + FORGED)
    logging.Formatter(PLAIN).format(record)
    assert ("\n" + FORGED) in (record.exc_text or "")
    lines = SafeFormatter(PLAIN).format(record).split("\n")
    assert lines[0] == "ERROR: boom"
    assert all(line.startswith("  ") or not line for line in lines[1:])
    assert "  " + FORGED in lines


@pytest.fixture
def record_factory() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(factory)


def test_safe_records_give_a_plain_formatter_an_indented_traceback(
    record_factory: None,
) -> None:
    SafeRecords.install()
    SafeRecords.install()  # once only: no double wrapping
    assert not isinstance(logging.getLogRecordFactory().make, SafeRecords)  # type: ignore[attr-defined]  # ours
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(PLAIN))
    for name in ("sluiceway.error", "someapp"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        try:
            try:
                raise ValueError("x\n" + FORGED)
            except ValueError:
                logger.exception("failed")
        finally:
            logger.removeHandler(handler)
    ours, theirs = out.getvalue().split("ERROR: failed\n")[1:]
    assert "\n  " + FORGED + "\n" in "\n" + ours
    assert "\n" + FORGED + "\n" in "\n" + theirs  # other loggers' records are left alone


def test_unicode_line_separators_are_escaped() -> None:
    assert escape_control("a\u2028b\u2029c") == "a\\u2028b\\u2029c"
