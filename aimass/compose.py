"""Models made of Models: pipelines and ensembles that are themselves Models.

A composed model runs on the ``compose`` backend, so everything a Model does works unchanged:
``predict``, ``predict_batch``, ``save``/``Model.load`` (one package holding every part, each
checksummed), publishing to the library, serving and remote calls.

* :func:`pipeline`: each step's outputs feed the next step's inputs by name (``connect`` renames;
  a single output feeds a single input whatever their names). Inputs are the first step's (plus
  any later input no step produces); outputs are the last step's.
* :func:`ensemble`: every part gets the same inputs. ``mean`` and ``weighted`` average the float
  outputs the parts share (a shared ``label`` becomes the argmax of the averaged
  ``probabilities``); ``vote`` returns the majority ``label`` (ties go to the smaller label).

Example:
    >>> from aimass import compose
    >>> both = compose.ensemble(m1, m2, method="weighted", weights=[0.7, 0.3])   # doctest: +SKIP
    >>> chain = compose.pipeline(scaler, classifier)                              # doctest: +SKIP
    >>> chain.predict(rows)["probabilities"]                                      # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from aimass.backends import get_backend
from aimass.backends.base import Backend
from aimass.errors import BackendNotFound, IntegrityError, SchemaError
from aimass.files import read_json
from aimass.model import Model
from aimass.package import checksummed_names, member
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["ComposedBackend", "ensemble", "pipeline"]

SPEC_FILE = "compose.json"
METHODS = ("mean", "weighted", "vote")


def _as_model(part: Any) -> Model:
    return part if isinstance(part, Model) else Model.load(part)


class ComposedBackend(Backend):
    """Runs a pipeline or an ensemble of Models; saved as ``compose.json`` plus ``parts/<i>/``."""

    name: ClassVar[str] = "compose"
    framework: ClassVar[str] = "aimass"
    extra: ClassVar[str] = "all"

    def __init__(
        self,
        kind: str,
        parts: Sequence[Model],
        *,
        connect: Sequence[Mapping[str, str]] | None = None,
        method: str = "mean",
        weights: Sequence[float] | None = None,
    ) -> None:
        if kind not in ("pipeline", "ensemble"):
            raise ValueError(f"kind must be 'pipeline' or 'ensemble', got {kind!r}")
        if len(parts) < 1:
            raise ValueError(f"a {kind} needs at least one model")
        self.kind = kind
        self.parts = list(parts)
        self.device = self.parts[0].device
        if kind == "pipeline":
            self.connect = _pipeline_connections(self.parts, connect or [])
            self.schema = _pipeline_schema(self.parts, self.connect)
            self.method, self.weights = "", [1.0] * len(self.parts)
        else:
            if method not in METHODS:
                raise ValueError(f"ensemble method must be one of {METHODS}, got {method!r}")
            self.method = method
            self.weights = [float(w) for w in weights] if weights is not None else [1.0] * len(self.parts)
            if len(self.weights) != len(self.parts) or any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"weights must be {len(self.parts)} non-negative numbers with a positive sum")
            self.schema = _ensemble_schema(self.parts, method)
            # One-input parts may name their input differently: each reads the ensemble's input.
            first = self.schema.input_names
            self.connect = [
                {} if p.schema.input_names == first else {p.schema.input_names[0]: first[0]} for p in self.parts
            ]

    @classmethod
    def accepts(cls, source: Any) -> bool:
        return False  # built by pipeline()/ensemble() or loaded from a package, never detected

    # -- running ---------------------------------------------------------------------------------

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.kind == "pipeline":
            env: dict[str, np.ndarray] = dict(inputs)
            for part, wiring in zip(self.parts, self.connect, strict=True):
                env.update(part.predict({n: env[wiring.get(n, n)] for n in part.schema.input_names}))
            return {name: env[name] for name in self.schema.output_names}
        results = [
            part.predict({n: inputs[w.get(n, n)] for n in part.schema.input_names})
            for part, w in zip(self.parts, self.connect, strict=True)
        ]
        if self.method == "vote":
            return {"label": _vote([_labels(r) for r in results])}
        w = np.asarray(self.weights) / sum(self.weights)
        out: dict[str, np.ndarray] = {}
        for spec in self.schema.outputs:
            if spec.name == "label":
                continue  # derived below from the averaged probabilities
            stacked = np.stack([r[spec.name].astype(np.float64) for r in results])
            out[spec.name] = np.tensordot(w, stacked, axes=1).astype(spec.dtype.numpy)
        if "label" in self.schema.output_names:
            out["label"] = out["probabilities"].argmax(axis=1).astype(np.int64)
        return {name: out[name] for name in self.schema.output_names}

    def to(self, device: str) -> ComposedBackend:
        if device == self.device:
            return self
        return ComposedBackend(
            self.kind,
            [p.to(device) for p in self.parts],
            connect=self.connect,
            method=self.method or "mean",
            weights=self.weights,
        )

    # -- saving and loading ----------------------------------------------------------------------

    def save(self, directory: Path) -> list[str]:
        files: list[str] = []
        specs = []
        for i, part in enumerate(self.parts):
            sub = directory / "parts" / str(i)
            sub.mkdir(parents=True, exist_ok=True)
            names = part.backend.save(sub)
            files += [f"parts/{i}/{n}" for n in names]
            specs.append(
                {
                    "backend": part.backend_name,
                    "name": part.name,
                    "artifacts": names,
                    "schema": part.schema.model_dump(mode="json"),
                    "metadata": part.metadata,
                }
            )
        spec = {
            "kind": self.kind,
            "method": self.method,
            "weights": self.weights,
            "connect": self.connect,
            "parts": specs,
        }
        (directory / SPEC_FILE).write_text(json.dumps(spec, indent=2, default=str), encoding="utf-8")
        return [SPEC_FILE, *files]

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> ComposedBackend:
        path = Path(source)
        if path.is_dir():
            path = path / SPEC_FILE
        root = path.parent
        spec = read_json(path, IntegrityError, where=f"composed model {root.name!r}: {path.name}")
        _, checked = checksummed_names(root)  # compose.json cannot point at a file the manifest does not cover
        where = f"composed model {root.name!r}: {SPEC_FILE}"
        if not (isinstance(spec, dict) and isinstance(spec.get("parts"), list) and spec["parts"]):
            raise IntegrityError(f"{where} has no list of parts")
        steps: list[tuple[str, list[str], Schema, Any, Any]] = []
        for i, p in enumerate(spec["parts"]):
            if not (isinstance(p, dict) and isinstance(p.get("artifacts"), list) and p["artifacts"]):
                raise IntegrityError(f"{where}: part {i} lists no artifacts")
            if not (isinstance(p.get("backend"), str) and all(isinstance(a, str) for a in p["artifacts"])):
                raise IntegrityError(f"{where}: part {i} needs a backend name and artifact file names")
            try:
                part_schema = Schema.model_validate(p.get("schema"))
            except ValueError as e:  # pydantic's ValidationError
                raise IntegrityError(f"{where}: part {i} has an invalid schema: {e}") from None
            names = [f"parts/{i}/{a}" for a in p["artifacts"]]
            for rel in names:
                member(root, rel, f"composed model {root.name!r}")  # relative, inside, no links
                if rel not in checked:
                    raise IntegrityError(
                        f"composed model {root.name!r}: part {i} file {rel!r} is not covered by the package's checksums"
                    )
            steps.append((p["backend"], names, part_schema, p.get("name"), p.get("metadata")))
        parts = []
        for backend_name, names, part_schema, name, metadata in steps:
            try:
                klass = get_backend(backend_name)
            except BackendNotFound as e:
                raise BackendNotFound(f"{where}: {e}") from None
            loaded = klass.load(root / names[0], device=device, schema=part_schema, options=options)
            if not (name is None or isinstance(name, str)) or not isinstance(metadata or {}, dict):
                raise IntegrityError(f"{where}: a part's 'name' must be a string and its 'metadata' an object")
            parts.append(Model(loaded, name=name, metadata=metadata or {}))
        try:
            backend = cls(
                spec.get("kind", ""),
                parts,
                connect=spec.get("connect"),
                method=spec.get("method") or "mean",
                weights=spec.get("weights"),
            )
        except (ValueError, TypeError, KeyError, IndexError) as e:  # SchemaError included: the spec is at fault
            raise IntegrityError(f"{where}: {e}") from None
        if schema is not None and schema != backend.schema:
            raise IntegrityError(f"{where}: the parts make schema {backend.schema}, the manifest says {schema}")
        return backend


# -- schemas and wiring ---------------------------------------------------------------------------


def _pipeline_connections(parts: list[Model], given: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """Per step, ``{step input: source tensor}`` for the inputs whose source has another name."""
    if len(given) > len(parts):
        raise SchemaError(f"connect has {len(given)} entries for a pipeline of {len(parts)} steps")
    wiring = [dict(w) for w in given] + [{} for _ in range(len(parts) - len(given))]
    available = set(parts[0].schema.input_names)
    for i, part in enumerate(parts):
        if i > 0:
            prev = parts[i - 1].schema
            missing = [n for n in part.schema.input_names if n not in wiring[i] and n not in available]
            if len(missing) == 1 and len(part.schema.inputs) == 1 and len(prev.outputs) == 1:
                wiring[i][missing[0]] = prev.outputs[0].name  # one output into one input: names need not match
        for target, source in wiring[i].items():
            if target not in part.schema.input_names:
                raise SchemaError(f"connect: step {i} has no input {target!r}; inputs are {part.schema.input_names}")
            if i > 0 and source not in available:
                raise SchemaError(
                    f"connect: step {i} input {target!r} reads {source!r}, which no earlier step produces"
                )
        available |= set(part.schema.output_names)
    return wiring


def _pipeline_schema(parts: list[Model], wiring: list[dict[str, str]]) -> Schema:
    inputs = list(parts[0].schema.inputs)
    produced = set(parts[0].schema.output_names) | set(parts[0].schema.input_names)
    for part, w in zip(parts[1:], wiring[1:], strict=True):
        for spec in part.schema.inputs:
            if w.get(spec.name, spec.name) not in produced:
                inputs.append(spec)  # an input no earlier step produces: the pipeline takes it from the caller
                produced.add(spec.name)
        produced |= set(part.schema.output_names)
    return Schema(inputs=inputs, outputs=list(parts[-1].schema.outputs))


def _ensemble_schema(parts: list[Model], method: str) -> Schema:
    first = parts[0].schema
    single = all(len(p.schema.inputs) == 1 for p in parts)
    for i, part in enumerate(parts[1:], start=1):
        if part.schema.input_names != first.input_names and not single:
            raise SchemaError(
                f"ensemble parts must share inputs: part 0 takes {first.input_names}, part {i} takes "
                f"{part.schema.input_names}"
            )
    if method == "vote":
        return Schema(inputs=first.inputs, outputs=[TensorSpec(name="label", dtype=DType.INT64, shape=[-1])])
    outputs = []
    for spec in first.outputs:
        others = [p.schema.output(spec.name) for p in parts[1:] if spec.name in p.schema.output_names]
        if len(others) != len(parts) - 1 or any(o.shape != spec.shape for o in others):
            continue
        if spec.dtype in (DType.FP16, DType.FP32, DType.FP64):
            outputs.append(spec)
    names = [o.name for o in outputs]
    if "probabilities" in names and all("label" in p.schema.output_names for p in parts):
        outputs.insert(0, TensorSpec(name="label", dtype=DType.INT64, shape=[-1]))
    if not outputs:
        raise SchemaError(
            "ensemble parts share no float output of the same shape to average; outputs are "
            f"{[p.schema.output_names for p in parts]} (method='vote' needs only labels)"
        )
    return Schema(inputs=first.inputs, outputs=outputs)


def _labels(result: Mapping[str, np.ndarray]) -> np.ndarray:
    if "label" in result:
        return result["label"].astype(np.int64).reshape(-1)
    for value in result.values():
        if value.dtype.kind == "f" and value.ndim == 2 and value.shape[1] > 1:
            return value.argmax(axis=1).astype(np.int64)
        if value.dtype.kind == "f" and value.ndim == 1:
            return (value > 0.5).astype(np.int64)
    raise SchemaError(f"cannot read a class label from outputs {sorted(result)} for a vote")


def _vote(labels: list[np.ndarray]) -> np.ndarray:
    stacked = np.stack(labels, axis=1)  # rows x parts
    n_classes = int(stacked.max()) + 1 if stacked.size else 1
    counts = np.zeros((stacked.shape[0], n_classes), dtype=np.int64)
    for j in range(stacked.shape[1]):
        counts[np.arange(stacked.shape[0]), stacked[:, j]] += 1
    return counts.argmax(axis=1).astype(np.int64)  # argmax keeps the first maximum: ties go to the smaller label


# -- builders -------------------------------------------------------------------------------------


def pipeline(*steps: Any, connect: Sequence[Mapping[str, str]] | None = None, name: str | None = None) -> Model:
    """A Model that runs ``steps`` in order, each step's outputs feeding the next by name.

    ``connect[i]`` maps step ``i``'s input names to the tensors they read when the names differ.

    Example:
        >>> chain = pipeline(scaler, classifier, connect=[{}, {"input": "scaled"}])   # doctest: +SKIP
    """
    parts = [_as_model(s) for s in steps]
    return Model(
        ComposedBackend("pipeline", parts, connect=connect), name=name or "+".join(p.name or "?" for p in parts)
    )


def ensemble(
    *models: Any, method: str = "mean", weights: Sequence[float] | None = None, name: str | None = None
) -> Model:
    """A Model that runs every part on the same inputs and combines them (``mean``, ``weighted``, ``vote``).

    Example:
        >>> both = ensemble(m1, m2, method="vote")   # doctest: +SKIP
    """
    if method == "weighted" and weights is None:
        raise ValueError("method='weighted' needs weights=[...], one per model")
    parts = [_as_model(m) for m in models]
    backend = ComposedBackend("ensemble", parts, method=method, weights=weights)
    return Model(backend, name=name or f"{method}(" + ",".join(p.name or "?" for p in parts) + ")")
