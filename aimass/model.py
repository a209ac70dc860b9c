"""``Model``: one interface over every backend, local or remote.

Example:
    >>> from aimass import Model
    >>> m = Model.load("mlp.onnx")                       # doctest: +SKIP
    >>> m.schema                                         # doctest: +SKIP
    >>> m.predict({"x": rows})["y"]                      # doctest: +SKIP
    >>> m.predict_batch(rows, batch_size=256)            # doctest: +SKIP
    >>> m.save("pkg/"); Model.load("pkg/")               # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aimass import __version__
from aimass.backends import detect, get_backend
from aimass.backends.base import Backend
from aimass.device import check_device, input_validator
from aimass.errors import BackendNotFound, ModelLoadError, SchemaError
from aimass.package import (
    EXAMPLE_FILE,
    MANIFEST,
    example_is_saveable,
    is_package,
    read_example,
    verify,
    write_example,
    write_package,
)
from aimass.schema import DType, Schema, text_or_bytes

__all__ = ["Model"]


class Model:
    """A loaded model: ``schema``, ``predict``, ``predict_batch``, ``apredict``, ``to``, ``save``.

    Build one with :meth:`Model.load`. Its backend, schema, name, metadata and report are set at
    construction, and verbs (``to``, ``compress``, ``convert``, ``update``) return new Models. The
    one state a Model gains later is its monitor: the first access to ``.monitor`` starts timing
    ``predict``. ``predict`` is safe to call from many threads at once.

    Example:
        >>> import numpy as np, xgboost as xgb
        >>> X, y = np.random.rand(64, 4).astype("float32"), np.arange(64) % 2
        >>> m = Model.load(xgb.XGBClassifier(n_estimators=3).fit(X, y))   # doctest: +SKIP
        >>> sorted(m.predict(X[:2]))                                       # doctest: +SKIP
        ['label', 'probabilities']
    """

    __slots__ = ("_arun", "_backend", "_coerce", "_monitor", "_run", "_text", "example", "metadata", "name", "report")

    def __init__(
        self,
        backend: Backend,
        *,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        report: Any = None,
        example: Mapping[str, np.ndarray] | None = None,
    ):
        self._backend = backend
        self.name = name
        # The inputs the model was loaded with (example_input=), kept so that checks without data=
        # (convert, compress) run on inputs the user recognises; saved in the package.
        self.example: dict[str, np.ndarray] | None = dict(example) if example else None
        self.metadata: dict[str, Any] = dict(metadata or {})
        # What compress/convert/distill measured on their way to this Model (None for loaded models).
        self.report: Any = report
        self._monitor: Any = None  # created by the first access to .monitor
        # Bound once: predict() is two calls, validation and the backend.
        # On a CUDA device, torch/CuPy tensors are validated and kept there (aimass.device).
        self._coerce = input_validator(backend)
        # BYTES outputs read as str when they are UTF-8 (labels), here and through a remote model alike.
        self._text = tuple(t.name for t in backend.schema.outputs if t.dtype is DType.BYTES)
        self._run = _text_outputs(backend.run, self._text) if self._text else backend.run
        # Backends with native async I/O (remote) need no thread for apredict.
        arun = getattr(backend, "arun", None)
        self._arun = None if arun is None else _text_outputs_async(arun, self._text) if self._text else arun

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        backend: str | None = None,
        device: str = "cpu",
        schema: Schema | Mapping[str, Any] | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
        name: str | None = None,
        artifacts: Mapping[str, Any] | None = None,
        trust_code: bool = False,
        tokenizer: Any = None,
    ) -> Model:
        """Load or wrap a model: a framework object, a model file, a saved package directory.

        ``backend`` forces a backend by name instead of detecting it; ``schema`` overrides the
        inferred schema; ``example_input`` lets backends that cannot read input shapes from the
        object (torch modules) infer them; ``options`` go to the backend (e.g.
        ``{"session_options": {...}}`` for onnx, ``{"allow_pickle": True}`` for torch).
        ``artifacts`` are the files, directories and Models a :class:`aimass.PythonModel` gets in
        ``setup``; ``trust_code=True`` allows loading a package that holds Python code, which runs
        (see :mod:`aimass.python_model`); both travel to the backend as options.
        ``tokenizer`` is a transformers model's fast tokenizer (:mod:`aimass.frameworks.transformers`),
        passed to the backend as an option too.

        Example:
            >>> m = Model.load("model.onnx", device="cpu")   # doctest: +SKIP
        """
        if isinstance(source, Model):
            return source.to(device) if device != source.device else source
        if tokenizer is not None:
            options = {**(options or {}), "tokenizer": tokenizer}
        if trust_code or artifacts is not None:
            options = {**(options or {}), **({"trust_code": True} if trust_code else {})}
            if artifacts is not None:
                options["artifacts"] = artifacts
        if isinstance(source, str) and ":" in source:
            from aimass.store import load as load_from_store
            from aimass.store import parse_ref

            ref = parse_ref(source)  # store://fraud@production, fraud:3; None for paths and other URLs
            if ref is not None:
                return load_from_store(ref, device=device, options=options)
        parsed = Schema.model_validate(schema) if isinstance(schema, Mapping) else schema
        url = isinstance(source, str) and "://" in source
        # Known before any loading (a URL's backend is found from the string): a model server owns its device.
        klass = get_backend(backend) if backend else detect(source) if url else None
        if device != "cpu" and not (klass is not None and klass.owns_device):
            check_device(device)  # one "no CUDA device is visible" for every backend, before any loading
        if isinstance(source, (str, os.PathLike)) and "://" not in str(source):
            path = Path(source)
            if is_package(path):
                return cls._load_package(path, device=device, options=options)
            if not path.exists():
                raise ModelLoadError(f"no such model file or package: {path.name!r}")
        klass = klass or detect(source)
        loaded = klass.load(source, device=device, schema=parsed, example_input=example_input, options=options)
        if name is None and isinstance(source, (str, os.PathLike)):
            name = getattr(loaded, "model_name", None) or Path(source).stem  # remote: the served name
        return cls(loaded, name=name, example=_example_arrays(example_input, loaded.schema))

    @classmethod
    def from_config(cls, name: str | None = None, *, path: str | os.PathLike[str] | None = None) -> Model:
        """The model ``name`` as configuration says: local file/package or remote URL (see :mod:`aimass.config`).

        Example:
            >>> m = Model.from_config("fraud")   # AIMASS_FRAUD_URI, aimass.toml or AIMASS_MODEL_URI  # doctest: +SKIP
        """
        from aimass.config import model_config

        return model_config(name, path=path).load(name)

    @classmethod
    def _load_package(cls, path: Path, *, device: str, options: Mapping[str, Any] | None) -> Model:
        manifest = verify(path)
        try:
            klass = get_backend(manifest.backend)
        except BackendNotFound as e:  # the manifest names it: say which package
            raise BackendNotFound(f"package {path.name!r} ({MANIFEST}): {e}") from None
        main = path / manifest.artifacts[0].path
        loaded = klass.load(main, device=device, schema=manifest.model_schema, options=options)
        example = read_example(path, manifest)
        report: Any = None
        if manifest.report is not None:
            from aimass.compress import Report  # pydantic only: no framework is imported

            try:
                report = Report.model_validate(manifest.report)
            except ValueError:  # a report is information, never a reason to refuse a verified model
                report = None
        return cls(loaded, name=manifest.name or path.name, metadata=manifest.metadata, example=example, report=report)

    # -- properties --------------------------------------------------------------------------

    @property
    def schema(self) -> Schema:
        """Inputs and outputs: name, V2 dtype, shape (-1 = dynamic)."""
        return self._backend.schema

    @property
    def backend(self) -> Backend:
        """The backend object (framework-specific handle, e.g. ``.session`` for onnx)."""
        return self._backend

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def device(self) -> str:
        return self._backend.device

    # -- prediction --------------------------------------------------------------------------

    def predict(self, inputs: Any) -> dict[str, np.ndarray]:
        """Run the model on one batch: a dict of arrays, or one array for one-input models.

        Example:
            >>> m.predict({"x": np.zeros((2, 4), "float32")})   # doctest: +SKIP
            {'y': array(...)}
        """
        return self._run(self._coerce(inputs))

    async def apredict(self, inputs: Any) -> dict[str, np.ndarray]:
        """``predict`` in a worker thread, so the event loop keeps running.

        Example:
            >>> out = await m.apredict(x)   # doctest: +SKIP
        """
        if self._arun is not None:  # timed by the monitor like predict, when there is one
            out: dict[str, np.ndarray] = await self._arun(self._coerce(inputs))
            return out
        import asyncio  # asyncio costs ~30 ms to import; only async callers pay it

        return await asyncio.to_thread(self.predict, inputs)

    def predict_batch(
        self, inputs: Any, *, batch_size: int = 256, progress: bool | None = None
    ) -> dict[str, np.ndarray]:
        """Predict many rows in slices of ``batch_size`` with a progress bar; same result as ``predict``.

        Inputs are validated and converted one slice at a time, and outputs are written into
        arrays allocated once, so memory stays at the size of the result plus one batch.
        ``progress=None`` shows a bar when there is more than one batch and stderr is a terminal.

        Example:
            >>> out = m.predict_batch(big_array, batch_size=1024)   # doctest: +SKIP
        """
        from tqdm.auto import tqdm  # tqdm costs ~10 ms to import; only batch users pay it

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        raw = self._split_ready(inputs)
        n = _batch_length(raw)
        outputs: dict[str, np.ndarray] = {}
        # progress=None: a bar for more than one batch, on a terminal only (tqdm's disable=None), so that
        # logs and CI output do not get one line per update.
        disable = (None if n > batch_size else True) if progress is None else not progress
        with tqdm(total=n, unit="row", disable=disable, desc=self.name or "predict") as bar:
            for start in range(0, max(n, 1), batch_size):
                stop = min(start + batch_size, n)
                chunk = {k: v[start:stop] for k, v in raw.items()}
                result = self.predict(chunk)
                for key, value in result.items():
                    if key not in outputs:
                        outputs[key] = np.empty((n, *value.shape[1:]), dtype=value.dtype)
                    outputs[key][start:stop] = value
                bar.update(stop - start)
        return outputs

    def predict_dataset(self, data: Any, output: Any = None, *, batch_size: int = 1024, **options: Any) -> Any:
        """Distributed batch prediction on Ray Data; see :func:`aimass.scale.batch_predict` (``[ray]`` extra).

        Example:
            >>> m.predict_dataset("rows.parquet", "predictions/", batch_size=1024, actors=2)   # doctest: +SKIP
        """
        from aimass.scale import batch_predict

        return batch_predict(self, data, output, batch_size=batch_size, **options)

    def _split_ready(self, inputs: Any) -> dict[str, Any]:
        """Inputs as ``{name: array-like sliceable on axis 0}`` without converting dtypes."""
        mapping = self.schema.named(inputs)
        return {k: v if hasattr(v, "shape") else np.asarray(v) for k, v in mapping.items()}

    # -- new models --------------------------------------------------------------------------

    def to(self, device: str) -> Model:
        """A new Model on ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``); DeviceError when unavailable.

        Example:
            >>> gpu = m.to("cuda")   # doctest: +SKIP
        """
        if device == self.device:
            return self
        if not self._backend.owns_device:  # a remote model's device is its server's business
            check_device(device)
        return Model(self._backend.to(device), name=self.name, metadata=self.metadata, example=self.example)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a package (artifacts + manifest with checksums) atomically; returns its path.

        Example:
            >>> m.save("packages/mlp")   # doctest: +SKIP
        """
        b = self._backend
        example = self.example

        def artifacts(directory: Path) -> list[str]:
            names = b.save(directory)
            kept = write_example(directory, example, taken=names) if example else None
            return [*names, kept] if kept else names

        return write_package(
            path,
            artifacts,
            {
                "name": self.name,
                "backend": b.name,
                "framework": b.framework,
                "framework_version": b.version,
                "aimass_version": __version__,
                "model_schema": self.schema,
                "metadata": self.metadata,
                "example": EXAMPLE_FILE if example and example_is_saveable(example) else None,
                "report": _report_document(self.report),
            },
            overwrite=overwrite,
        )

    def compress(self, method: str = "int8", **options: Any) -> Model:
        """A new, compressed Model with ``.report`` (size, latency, drift); see :func:`aimass.compress.compress`.

        Example:
            >>> q = m.compress("int8", data=rows); print(q.report)   # doctest: +SKIP
        """
        from aimass.compress import compress

        return compress(self, method, **options)

    def convert(self, target: str = "onnx", **options: Any) -> Model:
        """A new Model in another format, checked numerically; see :func:`aimass.convert.convert`.

        Example:
            >>> o = m.convert("onnx"); o.report.max_abs_error        # doctest: +SKIP
        """
        from aimass.convert import convert

        return convert(self, target, **options)

    def update(self, data: Any, labels: Any, **options: Any) -> Model:
        """A new Model trained further on new data from the current weights; see :func:`aimass.update.update`.

        Example:
            >>> m2 = m.update(new_rows, new_labels, epochs=3)   # doctest: +SKIP
        """
        from aimass.update import update

        return update(self, data, labels, **options)

    @property
    def monitor(self) -> Any:
        """Calls, errors, latency and input drift of this Model (:class:`aimass.monitor.Monitor`).

        The first access starts monitoring: later ``predict`` calls are timed and their inputs
        kept in a sliding window. Example:
            >>> m.predict(rows); m.monitor.report().drifted   # doctest: +SKIP
        """
        if self._monitor is None:
            from aimass.monitor import for_model

            self._monitor = for_model(self)
            self._coerce, self._run = self._monitor.wrap(self._coerce, self._run)
            if self._arun is not None:
                self._arun = self._monitor.wrap_async(self._arun)
        return self._monitor

    # -- display -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"Model(name={self.name!r}, backend={self.backend_name!r}, device={self.device!r}, schema={self.schema})"

    def _repr_html_(self) -> str:
        title = f"<b>Model</b> {self.name or ''} &middot; {self.backend_name} &middot; {self.device}"
        return f"<div>{title}{self.schema._repr_html_()}</div>"


def _example_arrays(example_input: Any, schema: Schema) -> dict[str, np.ndarray] | None:
    """``example_input`` as validated arrays (torch tensors read through numpy), or None if it does not fit."""
    if example_input is None:
        return None
    if not isinstance(example_input, Mapping):
        example_input = {schema.input_names[0]: example_input} if len(schema.inputs) == 1 else example_input
    try:
        arrays = {
            k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in example_input.items()
        }
        return schema.coerce(arrays)
    except (SchemaError, TypeError, ValueError, AttributeError):
        return None  # the backend took it for its own use; checks fall back to generated rows


def _report_document(report: Any) -> dict[str, Any] | None:
    """A compress/convert report as JSON for the manifest (None when there is none)."""
    dump = getattr(report, "model_dump", None)  # aimass.compress.Report, a pydantic model
    return dump(mode="json") if callable(dump) else None


def _text_outputs(run: Any, names: tuple[str, ...]) -> Any:
    """``run`` whose BYTES outputs ``names`` come back as ``str`` where UTF-8 (:func:`aimass.schema.text_or_bytes`)."""

    def decoded(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = run(inputs)
        return {k: text_or_bytes(v) if k in names else v for k, v in out.items()}

    return decoded


def _text_outputs_async(arun: Any, names: tuple[str, ...]) -> Any:
    """:func:`_text_outputs` for a backend's ``arun``."""

    async def decoded(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = await arun(inputs)
        return {k: text_or_bytes(v) if k in names else v for k, v in out.items()}

    return decoded


def _batch_length(raw: Mapping[str, Any]) -> int:
    lengths = {k: (v.shape[0] if len(v.shape) else 0) for k, v in raw.items()}
    if len(set(lengths.values())) > 1:
        raise SchemaError(f"inputs have different numbers of rows: {lengths}")
    return next(iter(lengths.values()), 0)
