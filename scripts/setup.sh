#!/usr/bin/env bash
# Create (or reuse) .venv with every framework pinned by requirements/lock.txt, and install aimass
# in editable mode. Re-running is cheap: the install is skipped while the pins are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.aimass-lock-stamp
want="$(cat requirements/dev.in requirements/lock.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch is pinned to the CPU build in the lock; the constraints keep pip from pulling CUDA wheels.
    .venv/bin/python -m pip install --quiet -r requirements/dev.in -c requirements/lock.txt
    .venv/bin/python -m pip install --quiet --no-deps -e .
    echo "$want" > "$stamp"
fi
