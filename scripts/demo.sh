#!/usr/bin/env bash
# Set up .venv and run the embedded quickstart demo (local models only, no external service).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/quickstart.py
