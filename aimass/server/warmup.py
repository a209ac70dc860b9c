"""Warm-up: one model call when a version loads, so the first real request does not pay lazy initialisation.

Frameworks defer work to the first call: onnxruntime allocates its arenas, torch picks kernels,
Keras traces its ``tf.function``. A served version therefore runs one warm-up call when it loads,
on (strongest first):

1. the package's recorded example inputs (``Model.example``: the ``example_input`` it was loaded
   with, saved in the package), when there are some;
2. inputs generated from the schema (:func:`aimass.measure.sample_inputs`), unless the package
   says it must not see synthetic input.

A package decides for itself in ``metadata["serving"]["warmup"]``: ``true`` (the default),
``false`` (never), or ``"sample"`` (only its recorded sample, never generated input). The server
turns warm-up off for every model with ``create_app(warmup=False)`` / ``aimass serve --no-warmup``.
A warm-up that fails is logged and the version is served anyway: a model may refuse made-up
input and still answer real requests.

Example:
    >>> m = Model.load("mlp.onnx")               # doctest: +SKIP
    >>> warm_up(m).source                        # doctest: +SKIP
    'generated'
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from aimass.measure import sample_inputs
from aimass.model import Model

__all__ = ["SETTINGS_KEY", "WarmupResult", "serving_settings", "warm_up", "warmup_inputs"]

log = logging.getLogger("aimass.server")

SETTINGS_KEY = "serving"  # metadata: per-package serving settings, {"warmup": ..., "pinned": ...}


@dataclasses.dataclass(frozen=True)
class WarmupResult:
    """What a warm-up did: the inputs' origin (``sample`` / ``generated``), seconds, and the error if it failed."""

    source: str
    seconds: float
    error: str | None = None


def serving_settings(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The package's serving settings (``metadata["serving"]``), empty when absent or malformed.

    Example:
        >>> serving_settings({"serving": {"warmup": "sample"}})
        {'warmup': 'sample'}
    """
    found = metadata.get(SETTINGS_KEY)
    return dict(found) if isinstance(found, Mapping) else {}


def warmup_inputs(model: Model, rows: int = 1) -> tuple[dict[str, np.ndarray], str] | None:
    """The warm-up inputs of ``model`` and their origin, or None when it must not be warmed up.

    Example:
        >>> inputs, source = warmup_inputs(Model.load("mlp.onnx"))   # doctest: +SKIP
        >>> source
        'generated'
    """
    setting = serving_settings(model.metadata).get("warmup", True)
    if setting is False:
        return None
    sample = getattr(model, "example", None)  # recorded with the package (Model.load(..., example_input=))
    if isinstance(sample, Mapping) and sample:
        return model.schema.coerce(dict(sample)), "sample"
    if setting == "sample":
        return None  # no recorded sample, and synthetic input is refused
    inputs, source = sample_inputs(model.schema, None, rows)
    return inputs, source


def warm_up(model: Model, rows: int = 1) -> WarmupResult | None:
    """Run one warm-up call on ``model``'s backend; None when the model must not be warmed up.

    A failure is returned (and logged), not raised.

    Example:
        >>> warm_up(Model.load("mlp.onnx")).seconds   # doctest: +SKIP
        0.0031
    """
    try:
        found = warmup_inputs(model, rows)
    except Exception as e:  # a malformed recorded sample: warn, serve anyway
        log.warning("model %r: no warm-up, its recorded sample does not fit the schema: %s", model.name, e)
        return WarmupResult("sample", 0.0, str(e))
    if found is None:
        return None
    inputs, source = found
    start = time.perf_counter()
    try:
        model.backend.run(inputs)
    except Exception as e:
        log.warning("model %r: warm-up on %s input failed (served anyway): %s", model.name, source, e)
        return WarmupResult(source, time.perf_counter() - start, f"{type(e).__name__}: {e}")
    return WarmupResult(source, time.perf_counter() - start)
