"""Logging: TRACE level, the two loggers and their streams, and lines nobody can forge."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from sluiceway.logconfig import TRACE, SafeFormatter, configure_logging, escape_control


def test_trace_level_has_a_name() -> None:
    assert logging.getLevelName(TRACE) == "TRACE"


def test_escape_control_covers_newlines_and_ansi() -> None:
    assert escape_control("a\r\nb\x1b[31mred\x7f\x9b") == "a\\x0d\\x0ab\\x1b[31mred\\x7f\\x9b"
    assert escape_control("plain ünïcode") == "plain ünïcode"


def test_formatter_escapes_arguments_but_keeps_traceback_lines() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("bad\x1b[2J")
    except ValueError:
        record = logging.LogRecord(
            "sluiceway.error",
            logging.ERROR,
            __file__,
            1,
            "GET %s",
            ("/x\r\nINFO forged",),
            sys.exc_info(),
        )
    text = formatter.format(record)
    first, *rest = text.split("\n")
    assert first == "ERROR GET /x\\x0d\\x0aINFO forged"
    assert rest[0] == "  Traceback (most recent call last):"  # indented: a continuation
    assert "bad\\x1b[2J" in text
    assert "\x1b" not in text


@pytest.fixture
def restore_logging() -> object:
    loggers = [logging.getLogger(n) for n in ("sluiceway", "sluiceway.error", "sluiceway.access")]
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    factory = logging.getLogRecordFactory()  # configure_logging wraps it (SafeRecords)
    yield None
    logging.setLogRecordFactory(factory)
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


def test_configure_routes_error_to_stderr_and_access_to_stdout(
    restore_logging: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    configure_logging("info", access_log=True)
    logging.getLogger("sluiceway.error").info("server says %s", "hi")
    logging.getLogger("sluiceway.http1.protocol").debug("hidden at info")
    logging.getLogger("sluiceway.access").info('127.0.0.1:5 - "GET / HTTP/1.1" 200')
    assert "[INFO] server says hi" in err.getvalue()
    assert "hidden" not in err.getvalue()
    assert '"GET / HTTP/1.1" 200' in out.getvalue()
    assert "GET" not in err.getvalue()


def test_access_log_off_and_trace_level(
    restore_logging: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    configure_logging("trace", access_log=False)
    logging.getLogger("sluiceway.http1.protocol").log(TRACE, "< wire bytes")
    logging.getLogger("sluiceway.access").info("should not appear")
    assert "[TRACE] < wire bytes" in err.getvalue()
    assert out.getvalue() == ""
    assert not logging.getLogger("sluiceway.access").isEnabledFor(logging.CRITICAL)
