#!/usr/bin/env bash
# Set up .venv, then lint, type-check and run the whole test suite (extra args go to pytest,
# e.g. `bash scripts/test.sh -m "not slow"` for a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check aimass tests benchmarks examples
.venv/bin/ruff format --check aimass tests benchmarks examples
.venv/bin/mypy
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache   # layers, framework independence, no cycles (pyproject.toml)
# Peer servers (MLServer, Triton) for the compatibility tests live in their own environments under
# benchmarks/.peers/. CI (and AIMASS_PEERS=1) creates them; elsewhere those tests skip.
if [ "${CI:-}" = "true" ] || [ "${AIMASS_PEERS:-0}" = "1" ]; then
    .venv/bin/python benchmarks/serve_throughput.py --setup-peers \
        || echo "peer environments could not be created: the peer tests will skip"
    if command -v apt-get >/dev/null && ! ldconfig -p | grep -q libb64; then  # perf_analyzer needs it
        { apt-get install -y -q libb64-0d || { apt-get update -q && apt-get install -y -q libb64-0d; }; } >/dev/null 2>&1 \
            || echo "libb64 could not be installed: the perf_analyzer test will skip"
    fi
fi
# The dashboard's browser tests drive the system Chromium (Debian package `chromium`) with Playwright;
# without a browser they skip and say so.
if [ "${CI:-}" = "true" ] || [ "${AIMASS_BROWSER:-0}" = "1" ]; then
    if command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; } >/dev/null 2>&1 \
            || echo "chromium could not be installed: the dashboard browser tests will skip"
    fi
fi
# The int8 tests also run once on an emulated AVX2-only CPU (qemu-x86_64 -cpu Haswell, Debian package
# `qemu-user`): onnxruntime picks other int8 kernels there, so that path runs whatever CPU CI draws.
if [ "${CI:-}" = "true" ] || [ "${AIMASS_QEMU:-0}" = "1" ]; then
    if command -v apt-get >/dev/null && ! command -v qemu-x86_64 >/dev/null; then
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user; }; } >/dev/null 2>&1 \
            || echo "qemu-user could not be installed: the emulated AVX2 int8 test will fail on CI"
    fi
fi
exec .venv/bin/python -m pytest "$@"
