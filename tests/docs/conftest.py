"""Prints how many documentation blocks ran and which were skipped, with the reason."""

from __future__ import annotations

import sys

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    module = sys.modules.get("test_docs")
    counts = getattr(module, "COUNTS", None)
    if not counts or not (counts["run"] or counts["skipped"]):
        return
    terminalreporter.write_sep("-", "documentation blocks")
    terminalreporter.write_line(
        f"{counts['run']} blocks run, {len(counts['skipped'])} skipped with a reason; "
        f"{counts['outputs']} documented outputs compared, {counts['setups']} setups"
    )
    for line in counts["skipped"]:
        terminalreporter.write_line(f"  skipped {line}")
