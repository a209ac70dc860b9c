"""``aimass serve`` argument parsing (the server itself runs as a subprocess in tests/backends/test_remote.py)."""

from __future__ import annotations

import pytest
import typer

from aimass.cli import COMMANDS
from aimass.cli.serve import parse_duration, parse_size


def test_serve_is_registered() -> None:
    assert "aimass.cli.serve" in COMMANDS


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0.0), ("500us", 0.0005), ("2ms", 0.002), ("0.01", 0.01), ("1s", 1.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "size"), [("64MiB", 64 << 20), ("10MB", 10_000_000), ("4096", 4096), ("1kib", 1024)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["soon", "-1ms", "5 parsecs"])
def test_bad_values_are_refused(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_duration(text)
    with pytest.raises(typer.BadParameter):
        parse_size(text)
