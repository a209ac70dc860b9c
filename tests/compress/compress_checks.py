"""Independent re-computations of report figures, so tests check the numbers against their definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aimass import Model
from aimass.package import verify


def saved_size(model: Model, tmp: Path) -> int:
    """Bytes of the artifact files of a package saved now (the figure a report must equal)."""
    pkg = model.save(tmp)
    return sum((pkg / a.path).stat().st_size for a in verify(pkg).artifacts)


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a2 = a.reshape(len(a), -1).astype(np.float64)
    b2 = b.reshape(len(b), -1).astype(np.float64)
    cos = [float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v))) for u, v in zip(a2, b2, strict=True)]
    return float(np.mean(cos))


def assert_drift_is_real(
    original: Model, compressed: Model, data: np.ndarray | dict[str, np.ndarray], output: str
) -> None:
    """The report's drift for ``output`` equals the drift recomputed from both models' predictions."""
    a, b = original.predict(data)[output], compressed.predict(data)[output]
    drift = next(d for d in compressed.report.drift if d.output == output)
    assert drift.max_abs_error == pytest.approx(max_abs(a, b), rel=1e-6, abs=1e-9)
    assert drift.cosine == pytest.approx(mean_cosine(a, b), abs=1e-9)
    if a.ndim == 2 and a.shape[1] > 1:
        assert drift.top1_agreement == float((a.argmax(1) == b.argmax(1)).mean())
    rows = len(next(iter(data.values()))) if isinstance(data, dict) else len(data)
    assert compressed.report.samples == rows
