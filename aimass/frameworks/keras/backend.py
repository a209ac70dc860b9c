"""TensorFlow models: Keras 3 models (objects and ``.keras`` files) and SavedModel directories.

Two backends share this module because they share TensorFlow's tensor types:

* ``keras`` (:class:`KerasBackend`): a ``keras.Model`` object or a ``.keras`` file, on Keras's
  TensorFlow backend. The model is traced once into a ``tf.function`` with the batch dimension
  left dynamic, and ``run`` calls that concrete function: on a 4-8-3 MLP this costs about a sixth
  of the eager ``model(x, training=False)`` (see ``benchmarks/overhead_keras_mxnet.py``). Input
  names are the input layers' names (or the keys of a dict input); outputs are named after the
  output layers, the keys of a dict output, or ``output`` / ``output_0 ...``. Functional and
  Sequential models carry their input shapes; subclassed models need ``example_input=`` or
  ``schema=``. Saving writes a ``.keras`` file. ``.keras`` files load with Keras's ``safe_mode``
  (no deserialized lambdas) unless ``options={"allow_pickle": True}``; ``options={"custom_objects":
  {...}}`` is passed to ``keras.saving.load_model``.
* ``tensorflow`` (:class:`SavedModelBackend`): a SavedModel directory (one holding
  ``saved_model.pb``) or an object returned by ``tf.saved_model.load``. It runs one serving
  signature: ``options={"signature": name}``, else ``serving_default``, else the only one. The
  schema is the signature's, with its names and dtypes. Packages hold the SavedModel as one
  uncompressed ``model.savedmodel.tar`` (package artifacts are plain files; the SavedModel
  layout has sub-directories), with the chosen signature saved as ``serving_default``.

Example:
    >>> import keras, numpy as np
    >>> from aimass import Model
    >>> net = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(3)])   # doctest: +SKIP
    >>> Model.load(net).predict(np.zeros((2, 4), np.float32))                          # doctest: +SKIP
    >>> Model.load("exported_savedmodel_dir/").schema                                  # doctest: +SKIP
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import distribution_version, require_framework
from aimass.device import split_device
from aimass.errors import DeviceError, ModelLoadError, PredictionError
from aimass.frameworks.keras.savedmodel_ops import check_savedmodel
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["KerasBackend", "SavedModelBackend"]

_ARCHIVE_SUFFIX = ".savedmodel.tar"


def _tf(backend: str = "tensorflow") -> Any:
    return require_framework("tensorflow", backend=backend, extra="tensorflow")


def _keras() -> Any:
    _tf("keras")
    keras = require_framework("keras", backend="keras", extra="tensorflow")
    if keras.backend.backend() != "tensorflow":
        raise ModelLoadError(
            f"the keras backend runs Keras on TensorFlow; KERAS_BACKEND is {keras.backend.backend()!r}"
        )
    return keras


def _tf_version() -> str | None:
    return distribution_version("tensorflow") or distribution_version("tensorflow-cpu")


def _spec(name: str, shape: Any, dtype: Any) -> TensorSpec:
    """A TensorSpec from a TF/Keras shape (``None`` -> -1) and dtype (TF dtype or its name)."""
    tf = _tf()
    tf_dtype = tf.as_dtype(dtype)
    if tf_dtype == tf.string:
        kind = DType.BYTES
    else:
        try:
            kind = DType.from_numpy(tf_dtype.as_numpy_dtype)
        except Exception:  # bfloat16, resource, variant ...: types the V2 protocol cannot carry
            raise ModelLoadError(f"tensor {name!r} has type {tf_dtype.name}, which aimass does not map") from None
    dims = tf.TensorShape(shape)
    if dims.rank is None:
        raise ModelLoadError(f"tensor {name!r} has an unknown rank; declare its shape with schema=Schema(...)")
    return TensorSpec(name=name, dtype=kind, shape=[-1 if d is None else int(d) for d in dims.as_list()])


def _check_device(device: str) -> str:
    """The TF device string for ``device``; DeviceError when TensorFlow sees no such GPU."""
    kind, index = split_device(device)
    if kind == "cpu":
        return "/CPU:0"
    gpus = _tf().config.list_physical_devices("GPU")
    if index >= len(gpus):
        raise DeviceError(
            f"device {device!r}: TensorFlow sees {len(gpus)} GPU(s) (tensorflow-cpu never sees one; "
            "install tensorflow[and-cuda] on a machine with a CUDA GPU)"
        )
    return f"/GPU:{index}"


def _layer_name(tensor: Any, fallback: str) -> str:
    history = getattr(tensor, "_keras_history", None)  # layer names persist in .keras files; tensor names do not
    operation = getattr(history, "operation", None)
    return str(getattr(operation, "name", None) or fallback)


def _example_arrays(example_input: Any, default_name: str) -> dict[str, np.ndarray]:
    if not isinstance(example_input, Mapping):
        example_input = {default_name: example_input}
    return {str(k): np.asarray(v) for k, v in example_input.items()}


# -- keras -----------------------------------------------------------------------------------


class KerasBackend(Backend):
    """A Keras 3 model run through one traced ``tf.function`` (dynamic batch dimension)."""

    name: ClassVar[str] = "keras"
    framework: ClassVar[str] = "keras"
    extra: ClassVar[str] = "tensorflow"
    suffixes: ClassVar[tuple[str, ...]] = (".keras",)
    type_modules: ClassVar[tuple[str, ...]] = ("keras.",)

    def __init__(self, model: Any, schema: Schema, device: str) -> None:
        tf = _tf("keras")
        self.model = model
        self.device = device
        self._tf_device = _check_device(device)
        names = schema.input_names
        structure, flat_names = _input_structure(model, names)
        if sorted(flat_names) != sorted(names):
            raise ModelLoadError(f"schema inputs {names} do not match the keras model's inputs {flat_names}")
        order = [names.index(n) for n in flat_names]
        signature = [
            tf.TensorSpec([None if d == -1 else d for d in t.shape], t.dtype.numpy, name=t.name) for t in schema.inputs
        ]
        self._out_keys: list[str] | None = None

        def call(*tensors: Any) -> list[Any]:
            out = model(tf.nest.pack_sequence_as(structure, [tensors[i] for i in order]), training=False)
            if isinstance(out, Mapping):
                self._out_keys = sorted(str(k) for k in out)
                return [out[k] for k in sorted(out)]
            return list(out) if isinstance(out, (list, tuple)) else [out]

        with tf.device(self._tf_device):
            try:
                self._fn = tf.function(call, input_signature=signature).get_concrete_function()
            except Exception as e:  # tracing runs the user's call(): any error can come out
                raise ModelLoadError(f"keras model could not be traced for {schema}: {type(e).__name__}: {e}") from e
        outputs = [
            _spec(name, t.shape, t.dtype)
            for name, t in zip(
                _output_names(model, self._out_keys, len(self._fn.outputs)), self._fn.outputs, strict=True
            )
        ]
        if schema.outputs and len(schema.outputs) != len(outputs):
            raise ModelLoadError(
                f"schema declares {len(schema.outputs)} outputs; the keras model returns {len(outputs)}"
            )
        self.schema = schema if schema.outputs else schema.model_copy(update={"outputs": outputs})
        self._input_names = names
        self._output_names = self.schema.output_names

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> KerasBackend:
        keras = _keras()
        options = options or {}
        if isinstance(source, (str, Path)):
            source = _load_keras_file(Path(source), options)
        if not isinstance(source, keras.Model):
            raise ModelLoadError(f"the keras backend needs a keras.Model, got {type(source).__name__}")
        if schema is None:
            schema = _keras_input_schema(source, example_input)
        return cls(source, schema, device)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self._fn(*[inputs[n] for n in self._input_names])
        except Exception as e:  # TF raises InvalidArgumentError and friends from inside the graph
            raise PredictionError(f"keras model failed: {type(e).__name__}: {e}") from e
        return {n: t.numpy() for n, t in zip(self._output_names, outs, strict=True)}

    def to(self, device: str) -> KerasBackend:
        if device == self.device:
            return self
        return KerasBackend(self.model, self.schema, device)

    def save(self, directory: Path) -> list[str]:
        try:
            self.model.save(str(directory / "model.keras"))
        except Exception as e:  # unregistered custom layers cannot be serialized
            raise ModelLoadError(f"keras could not save this model: {type(e).__name__}: {e}") from e
        return ["model.keras"]


def _load_keras_file(path: Path, options: Mapping[str, Any]) -> Any:
    keras = _keras()
    try:
        return keras.saving.load_model(
            str(path),
            custom_objects=options.get("custom_objects"),
            compile=False,
            safe_mode=not options.get("allow_pickle", False),
        )
    except Exception as e:  # keras raises ValueError/TypeError/OSError for bad or unsafe files
        hint = ""
        if "safe_mode" in str(e):
            hint = " (the file holds code such as a Lambda layer: pass options={'allow_pickle': True} if you trust it)"
        raise ModelLoadError(f"keras could not load {path.name!r}: {e}{hint}") from e


def _input_structure(model: Any, names: Sequence[str]) -> tuple[Any, list[str]]:
    """What ``model`` is called with (its own input structure, else a tensor or a dict of names),
    and the input names in the order that structure flattens to."""
    structure = _functional_input(model)
    if structure is not None:
        return structure, _flat_input_names(model, structure)
    if len(names) == 1:
        return names[0], list(names)
    return {n: n for n in names}, sorted(names)


def _functional_input(model: Any) -> Any:
    """The symbolic input structure of a functional or Sequential model; None for subclassed ones."""
    try:
        return model.input
    except (AttributeError, ValueError):
        pass
    try:
        inputs = model.inputs  # Sequential models have .inputs before they have .input
    except (AttributeError, ValueError):
        return None
    if not inputs:
        return None
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _keras_input_schema(model: Any, example_input: Any) -> Schema:
    tf = _tf("keras")
    structure = _functional_input(model)
    if example_input is not None:
        default = "input" if structure is None else _flat_input_names(model, structure)[0]
        example = _example_arrays(example_input, default)
        return Schema(
            inputs=[
                TensorSpec(name=k, dtype=DType.from_numpy(v.dtype), shape=[-1, *v.shape[1:]])
                for k, v in example.items()
            ]
        )
    if structure is None:
        raise ModelLoadError(
            "this keras model is subclassed and has not recorded its input shapes: pass example_input={name: array} "
            "or schema=Schema(...) to Model.load"
        )
    specs = []
    for name, t in zip(_flat_input_names(model, structure), tf.nest.flatten(structure), strict=True):
        spec = _spec(name, t.shape, t.dtype)
        if spec.shape:  # Keras's first dimension is the batch, even when a call on data fixed it
            spec = spec.model_copy(update={"shape": [-1, *spec.shape[1:]]})
        specs.append(spec)
    return Schema(inputs=specs)


def _flat_input_names(model: Any, structure: Any) -> list[str]:
    tf = _tf("keras")
    if isinstance(structure, Mapping):
        return [str(k) for k in sorted(structure)]  # tf.nest flattens dicts in sorted key order
    flat = tf.nest.flatten(structure)
    return [_layer_name(t, f"input_{i}") for i, t in enumerate(flat)]


def _output_names(model: Any, keys: list[str] | None, count: int) -> list[str]:
    if keys is not None:
        return keys
    outputs = getattr(model, "outputs", None) if _functional_input(model) is not None else None
    if outputs and len(outputs) == count:
        names = [_layer_name(t, f"output_{i}") for i, t in enumerate(outputs)]
        if len(set(names)) == len(names):
            return names
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


# -- SavedModel ------------------------------------------------------------------------------


class SavedModelBackend(Backend):
    """One serving signature of a TensorFlow SavedModel."""

    name: ClassVar[str] = "tensorflow"
    framework: ClassVar[str] = "tensorflow"
    extra: ClassVar[str] = "tensorflow"
    suffixes: ClassVar[tuple[str, ...]] = (_ARCHIVE_SUFFIX,)
    type_modules: ClassVar[tuple[str, ...]] = ("tensorflow.",)

    def __init__(self, root: Any, signature: str, device: str, schema: Schema | None, workdir: Any = None) -> None:
        self.root = root
        self.signature = signature
        self.device = device
        self._tf_device = _check_device(device)
        self._workdir = workdir  # an extracted archive: kept while the model lives (assets are read lazily)
        self._fn = root.signatures[signature]
        args, kwargs = self._fn.structured_input_signature
        if args:
            raise ModelLoadError(f"signature {signature!r} takes positional inputs; serving signatures take names")
        outputs = self._fn.structured_outputs
        if not isinstance(outputs, Mapping):
            raise ModelLoadError(f"signature {signature!r} does not return a dict of named outputs")
        inferred = Schema(
            inputs=[_spec(k, s.shape, s.dtype) for k, s in kwargs.items()],
            outputs=[_spec(k, s.shape, s.dtype) for k, s in outputs.items()],
        )
        self.schema = schema or inferred
        self._input_names = self.schema.input_names
        self._output_names = self.schema.output_names
        self._tf = _tf()

    @classmethod
    def accepts(cls, source: Any) -> bool:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.name == "saved_model.pb" or (path / "saved_model.pb").is_file():
                return True
            return super().accepts(source)
        return super().accepts(source) and hasattr(source, "signatures")

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> SavedModelBackend:
        tf = _tf()
        options = options or {}
        workdir = None
        if isinstance(source, (str, Path)):
            path = Path(source)
            shown = f"{path.name}/saved_model.pb"  # what users see: never an absolute path
            if path.name == "saved_model.pb":
                path = path.parent
                shown = f"{path.name}/saved_model.pb"
            elif path.name.endswith(_ARCHIVE_SUFFIX):
                workdir = tempfile.TemporaryDirectory(prefix="aimass-savedmodel-")
                path = _extract(path, Path(workdir.name))
            if not (path / "saved_model.pb").is_file():
                raise ModelLoadError(f"{path.name!r} is not a SavedModel directory: it has no saved_model.pb")
            # A SavedModel is a program: its ops are checked before TensorFlow reads the directory.
            check_savedmodel(path, shown, trusted=bool(options.get("trust_code")))
            try:
                with tf.device(_check_device(device)):
                    source = tf.saved_model.load(str(path), tags=options.get("tags"))
            except Exception as e:  # TF raises OSError, ValueError, its own errors for bad directories
                raise ModelLoadError(f"tensorflow could not load SavedModel {path.name!r}: {e}") from e
        signatures = getattr(source, "signatures", None)
        if not signatures:
            raise ModelLoadError(
                "this TensorFlow object has no serving signature: export it with "
                "tf.saved_model.save(obj, dir, signatures=...) or keras_model.export(dir)"
            )
        return cls(source, _pick_signature(signatures, options.get("signature")), device, schema, workdir)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outs = self._fn(**{n: self._tf.constant(inputs[n]) for n in self._input_names})
        except Exception as e:  # TF raises InvalidArgumentError and friends from inside the graph
            raise PredictionError(f"tensorflow signature {self.signature!r} failed: {type(e).__name__}: {e}") from e
        return {n: outs[n].numpy() for n in self._output_names}

    def to(self, device: str) -> SavedModelBackend:
        if device == self.device:
            return self
        _check_device(device)
        # Loaded variables stay where they were restored; re-save and re-load to move them.
        with tempfile.TemporaryDirectory(prefix="aimass-savedmodel-") as tmp:
            self._save_dir(Path(tmp) / "m")
            # Re-saved from an object already loaded (checked, or trusted by the user): not re-checked.
            return SavedModelBackend.load(
                Path(tmp) / "m", device=device, schema=self.schema, options={"trust_code": True}
            )

    def save(self, directory: Path) -> list[str]:
        with tempfile.TemporaryDirectory(prefix="aimass-savedmodel-") as tmp:
            src = Path(tmp) / "m"
            self._save_dir(src)
            with tarfile.open(directory / f"model{_ARCHIVE_SUFFIX}", "w") as tar:
                for f in sorted(src.rglob("*")):
                    tar.add(f, arcname=str(f.relative_to(src)), recursive=False)
        return [f"model{_ARCHIVE_SUFFIX}"]

    def _save_dir(self, path: Path) -> None:
        try:
            _tf().saved_model.save(self.root, str(path), signatures={"serving_default": self._fn})
        except Exception as e:  # TF cannot always re-save objects it loaded (e.g. missing assets)
            raise ModelLoadError(f"tensorflow could not save this SavedModel: {type(e).__name__}: {e}") from e

    @property
    def version(self) -> str | None:
        return _tf_version()


def _pick_signature(signatures: Mapping[str, Any], wanted: str | None) -> str:
    names = sorted(signatures)
    if wanted is not None:
        if wanted not in signatures:
            raise ModelLoadError(f"SavedModel has no signature {wanted!r}; signatures are {names}")
        return wanted
    if "serving_default" in signatures:
        return "serving_default"
    if len(names) == 1:
        return names[0]
    raise ModelLoadError(
        f"SavedModel has {len(names)} signatures {names} and none is 'serving_default': "
        "pick one with options={'signature': name}"
    )


def _extract(archive: Path, target: Path) -> Path:
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
                    raise ModelLoadError(
                        f"SavedModel archive {archive.name!r} holds {member.name!r}, which is not a plain file "
                        "inside the archive"
                    )
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the stdlib's own check as well
                tar.extractall(target, filter="data")
            else:
                tar.extractall(target)  # members checked above
    except (tarfile.TarError, OSError) as e:
        raise ModelLoadError(f"cannot extract SavedModel archive {archive.name!r}: {e}") from e
    return target
