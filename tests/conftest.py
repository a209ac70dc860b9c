"""Shared fixtures: small real models built once per session, and the gpu marker's skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def _cuda_visible() -> bool:
    # Asks the NVIDIA driver, not torch: importing torch here would cost every run ~5 s.
    from aimass.device import cuda_device_count

    return cuda_device_count() > 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("AIMASS_FORCE_GPU_TESTS") or _cuda_visible():
        return
    skip = pytest.mark.skip(reason="no CUDA device visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Tests import the shared model builders (tests/models.py) and backend cases by module name.
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "backends"))
sys.path.insert(0, str(Path(__file__).parent / "compress"))
