#!/usr/bin/env bash
# Set up .venv, then lint, type-check and run the whole test suite (extra args go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check aimass tests benchmarks examples
.venv/bin/ruff format --check aimass tests benchmarks examples
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
