"""docs/usage.md documents every command-line option and its environment variable."""

from __future__ import annotations

from pathlib import Path

from sluiceway.options import OPTIONS

USAGE = Path(__file__).resolve().parents[2] / "docs" / "usage.md"


def test_usage_lists_every_option_and_variable() -> None:
    text = USAGE.read_text()
    for option in OPTIONS:
        assert f"`{option.flag}" in text, option.flag
        assert f"`{option.env}`" in text, option.env
        if option.kind == "switch":
            assert f"`--no-{option.flag[2:]}`" in text, option.flag
