"""aimass: serve machine-learning models as a service from one interface.

``import aimass`` imports no ML framework and not even numpy: public names load on first use.

Example:
    >>> from aimass import Model
    >>> m = Model.load("model.onnx")   # doctest: +SKIP
    >>> m.predict(rows)                # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AimassError",
    "BackendNotFound",
    "BackendUnavailable",
    "CompressionRejected",
    "ConversionError",
    "DType",
    "DeviceError",
    "GateFailed",
    "IntegrityError",
    "MissingDependency",
    "Model",
    "ModelLoadError",
    "ModelNotFound",
    "PredictionError",
    "PythonModel",
    "RemoteError",
    "Schema",
    "SchemaError",
    "ServiceUnavailable",
    "StoreError",
    "TensorSpec",
    "UnsafeProgram",
    "UnsupportedOperation",
    "UntrustedCode",
    "__version__",
]

# Public name -> module that defines it. Resolved lazily (PEP 562) so `import aimass` stays cheap.
_LAZY: dict[str, str] = {
    "Model": "aimass.model",
    "PythonModel": "aimass.python_model",
    "DType": "aimass.schema",
    "Schema": "aimass.schema",
    "TensorSpec": "aimass.schema",
    **{
        name: "aimass.errors"
        for name in (
            "AimassError",
            "BackendNotFound",
            "BackendUnavailable",
            "CompressionRejected",
            "ConversionError",
            "DeviceError",
            "GateFailed",
            "IntegrityError",
            "MissingDependency",
            "ModelLoadError",
            "ModelNotFound",
            "PredictionError",
            "RemoteError",
            "SchemaError",
            "ServiceUnavailable",
            "StoreError",
            "UnsafeProgram",
            "UnsupportedOperation",
            "UntrustedCode",
        )
    },
}

if TYPE_CHECKING:
    from aimass.errors import (
        AimassError,
        BackendNotFound,
        BackendUnavailable,
        CompressionRejected,
        ConversionError,
        DeviceError,
        GateFailed,
        IntegrityError,
        MissingDependency,
        ModelLoadError,
        ModelNotFound,
        PredictionError,
        RemoteError,
        SchemaError,
        ServiceUnavailable,
        StoreError,
        UnsafeProgram,
        UnsupportedOperation,
        UntrustedCode,
    )
    from aimass.model import Model
    from aimass.python_model import PythonModel
    from aimass.schema import DType, Schema, TensorSpec


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'aimass' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
