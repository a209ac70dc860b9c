"""Backend registry: a name maps to ``"module:Class"``, imported only when chosen.

Detection never imports a framework that is not already needed: objects are matched by the
modules of their classes, paths by suffix. Backend modules themselves import their framework
lazily (inside ``load``), so even importing a backend class is cheap.

Example:
    >>> from aimass.backends import detect, get_backend
    >>> detect("model.onnx").name
    'onnx'
    >>> get_backend("xgboost").extra
    'xgboost'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimass.dependencies import import_target
from aimass.errors import BackendNotFound

if TYPE_CHECKING:
    from aimass.backends.base import Backend

__all__ = ["BACKENDS", "detect", "get_backend", "register"]

# Order matters for detection: the first backend that accepts a source wins.
BACKENDS: dict[str, str] = {
    # First: a PythonModel subclass may also derive from a framework's class (a torch Module, say).
    "python": "aimass.python_model:PythonBackend",
    "onnx": "aimass.frameworks.onnx.backend:OnnxBackend",
    # Before torch: transformers models are torch Modules too; also save_pretrained directories.
    "transformers": "aimass.frameworks.transformers.backend:TextBackend",
    "torch": "aimass.frameworks.torch.backend:TorchBackend",
    "xgboost": "aimass.frameworks.xgboost.backend:XGBoostBackend",
    "compose": "aimass.compose:ComposedBackend",  # pipelines/ensembles: loaded from packages, never detected
    # keras before tensorflow: Keras 3 models also derive from TensorFlow's trackable classes.
    "keras": "aimass.frameworks.keras.backend:KerasBackend",
    "tensorflow": "aimass.frameworks.keras.backend:SavedModelBackend",
    "tflite": "aimass.frameworks.keras.tflite:TFLiteBackend",
    "mxnet": "aimass.frameworks.mxnet.backend:MXNetBackend",
    "sklearn": "aimass.frameworks.sklearn.backend:SklearnBackend",  # after xgboost: XGBClassifier has sklearn mixins
    "remote": "aimass.backends.remote:RemoteBackend",
    "grpc": "aimass.backends.remote_grpc:GrpcRemoteBackend",  # grpc:// and grpcs:// model URLs
    "tensorrt": "aimass.frameworks.tensorrt.backend:TensorRTBackend",
}


def register(name: str, target: str) -> None:
    """Register (or replace) a backend as ``"package.module:ClassName"``.

    Example:
        >>> register("onnx", "aimass.frameworks.onnx.backend:OnnxBackend")
    """
    if ":" not in target:
        raise ValueError(f"backend target must look like 'module:Class', got {target!r}")
    BACKENDS[name] = target


def get_backend(name: str) -> type[Backend]:
    """The backend class registered under ``name`` (imports its module, not its framework)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise BackendNotFound(f"no backend named {name!r}; known backends: {sorted(BACKENDS)}") from None
    klass: type[Backend] = import_target(target)
    return klass


def detect(source: Any) -> type[Backend]:
    """The backend class for an object or a file path.

    Raises :class:`~aimass.errors.BackendNotFound` when no backend recognises ``source``.
    """
    for name in BACKENDS:
        klass = get_backend(name)
        if klass.accepts(source):
            return klass
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        what = f"directory {Path(source).name!r} (it is not an aimass package either: no aimass.json)"
    elif isinstance(source, (str, Path)):
        # Name only: messages may travel to remote clients, which must not learn server paths.
        what = f"file {Path(source).name!r} (suffix {Path(source).suffix or 'none'!r})"
    else:
        what = f"object of type {type(source).__module__}.{type(source).__qualname__}"
    raise BackendNotFound(f"no backend recognises {what}; known backends: {sorted(BACKENDS)}")
