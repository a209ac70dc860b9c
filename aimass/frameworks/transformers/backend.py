"""Hugging Face text models with no code: text in, labels/probabilities, embeddings or token labels out.

A :class:`TextBackend` is a pipeline of three parts: a fast tokenizer (:mod:`.tokenizer`), a
network run by another aimass backend (torch for a transformers model, onnxruntime after
``convert("onnx")``, reached through the backend registry) and the task's head logic in numpy
(:mod:`.tasks`). Its one input is ``text`` (BYTES ``[-1]``: a list of ``str``); its outputs follow
the task:

* ``text-classification`` (``*ForSequenceClassification``): ``label`` (BYTES, from ``id2label``)
  and ``probabilities`` (FP32, softmax; sigmoid for multi-label models);
* ``feature-extraction`` (a bare encoder such as ``BertModel``): ``embedding``, mean-pooled over
  the real tokens and L2-normalised;
* ``token-classification`` (``*ForTokenClassification``): ``tokens`` and ``labels`` per token,
  special tokens left out, rows padded with ``""``.

Sources: a transformers model object with ``options={"tokenizer": tok}`` (``Model.load(model,
tokenizer=tok)``), a directory written by ``save_pretrained`` (``config.json``, safetensors
weights, ``tokenizer.json``), or an aimass package. Options: ``max_length`` (default: the
tokenizer's ``model_max_length``, capped by the model's positions), ``truncation`` (default
True), ``padding`` (``"longest"``, the default, or ``"max_length"``), ``task`` (checked against
the model's class). Other options go to the network's backend, e.g. ``session_options`` for
onnxruntime (``aimass serve --option session_options.intra_op_num_threads=1``).

Packages hold ``pipeline.json`` (task, labels, tokenizer settings), the tokenizer's
``tokenizer.json`` and the network under ``network/``: ``config.json`` + ``model.safetensors``
for a transformers network, or the files of its backend (``model.onnx``). Loading reads data
only: no pickle, no code from the package, ``trust_remote_code`` never.

Example:
    >>> from aimass import Model
    >>> m = Model.load(bert_classifier, tokenizer=tok)            # doctest: +SKIP
    >>> m.predict(["you are lovely", "you idiot"])["label"]       # doctest: +SKIP
    array(['friendly', 'toxic'], dtype=object)
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from aimass.backends import get_backend
from aimass.backends.base import Backend
from aimass.backends.threads import thread_limit
from aimass.backends.tokens import TokenRows
from aimass.errors import ModelLoadError, SchemaError, UnsupportedOperation
from aimass.files import read_json
from aimass.frameworks.transformers.network import (
    load_pretrained,
    network_module,
    network_schema,
    read_config,
    save_pretrained,
)
from aimass.frameworks.transformers.tasks import TASKS, Head, Task, head_of, task_for_class
from aimass.frameworks.transformers.tokenizer import TextEncoder
from aimass.package import member
from aimass.schema import DType, Schema, TensorSpec, as_text

__all__ = ["PIPELINE", "TextBackend"]

PIPELINE = "pipeline.json"
TOKENIZER = "tokenizer.json"
NETWORK = "network"
FORMAT = 1
TEXT = "text"
_OPTIONS = frozenset({"tokenizer", "task", "max_length", "truncation", "padding"})


class TextBackend(Backend):
    """A fast tokenizer, a network on its own backend (torch or onnx) and a task head, as one model."""

    name: ClassVar[str] = "transformers"
    framework: ClassVar[str] = "transformers"
    extra: ClassVar[str] = "transformers"
    type_modules: ClassVar[tuple[str, ...]] = ("transformers.",)

    def __init__(
        self,
        *,
        task: Task,
        head: Head,
        encoder: TextEncoder,
        network: Backend,
        hf_model: Any = None,
        network_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.task = task
        self.head = head
        self.encoder = encoder
        self.network = network
        # The transformers model behind a torch network: saved as safetensors, exported to ONNX.
        self.hf_model = hf_model
        self.network_options = dict(network_options or {})
        self.device = network.device
        self.schema = Schema(inputs=[TensorSpec(name=TEXT, dtype=DType.BYTES, shape=[-1])], outputs=task.outputs(head))
        self._field = task.network_output

    # -- detection ---------------------------------------------------------------------------

    @classmethod
    def accepts(cls, source: Any) -> bool:
        """A transformers object, or a ``save_pretrained`` directory with ``config.json`` and ``tokenizer.json``."""
        if isinstance(source, (str, Path)):
            path = Path(source)
            return path.is_dir() and (path / "config.json").is_file() and (path / TOKENIZER).is_file()
        return super().accepts(source)

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        source: Any,
        *,
        device: str = "cpu",
        schema: Schema | None = None,
        example_input: Any = None,
        options: Mapping[str, Any] | None = None,
    ) -> TextBackend:
        # The text options are the pipeline's; every other option is the network backend's, so that
        # `aimass serve --option session_options.intra_op_num_threads=1` reaches onnxruntime here too.
        rest = {k: v for k, v in (options or {}).items() if k not in _OPTIONS and k != "trust_code"}
        opts = {k: v for k, v in (options or {}).items() if k in _OPTIONS}
        opts["network_options"] = rest
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.name == PIPELINE or (path / PIPELINE).is_file():
                backend = cls._from_package(path.parent if path.name == PIPELINE else path, device, opts)
            else:
                backend = cls._from_pretrained_dir(path, device, opts)
        else:
            backend = cls._from_object(source, device, opts)
        if schema is not None and schema != backend.schema:
            raise ModelLoadError(f"a {backend.task.name} text model has the schema {backend.schema}; got {schema}")
        return backend

    @classmethod
    def _from_object(cls, model: Any, device: str, opts: dict[str, Any]) -> TextBackend:
        tokenizer = opts.pop("tokenizer", None)
        if not hasattr(model, "config") or not hasattr(model, "save_pretrained"):
            raise ModelLoadError(
                f"a {type(model).__name__} is not a transformers model: pass the model, with its tokenizer as "
                "Model.load(model, tokenizer=tok)"
            )
        if tokenizer is None:
            raise ModelLoadError(
                f"a {type(model).__name__} needs its tokenizer: Model.load(model, tokenizer=tok) "
                "(a fast tokenizer from AutoTokenizer.from_pretrained)"
            )
        task = _task(type(model).__name__, opts.pop("task", None))
        config = model.config.to_dict()
        encoder = TextEncoder.from_pretrained(
            tokenizer, max_length=_max_length(tokenizer, config, opts), **_tokenizer_settings(opts)
        )
        return cls._with_torch(task, head_of(config, task), encoder, model.eval(), device, opts)

    @classmethod
    def _from_pretrained_dir(cls, path: Path, device: str, opts: dict[str, Any]) -> TextBackend:
        if not cls.accepts(path):
            raise ModelLoadError(
                f"{path.name!r} is not a save_pretrained directory with a fast tokenizer "
                "(config.json and tokenizer.json), nor an aimass package"
            )
        config = read_config(path)
        architectures = config.get("architectures") or ["Model"]
        task = _task(str(architectures[0]), opts.pop("task", None))
        tok_config = _tokenizer_config(path)
        pad = tok_config.get("pad_token")
        pad = pad.get("content") if isinstance(pad, dict) else pad
        max_length = _max_length(tok_config, config, opts)
        encoder = TextEncoder.from_file(
            path / TOKENIZER, pad_token=pad, max_length=max_length, **_tokenizer_settings(opts)
        )
        model = load_pretrained(path, task.auto_class)
        return cls._with_torch(task, head_of(config, task), encoder, model, device, opts)

    @classmethod
    def _with_torch(
        cls, task: Task, head: Head, encoder: TextEncoder, model: Any, device: str, opts: Mapping[str, Any]
    ) -> TextBackend:
        width = len(head.labels) if task.network_output == "logits" else head.hidden_size
        torch_backend = get_backend("torch")
        network = torch_backend.load(
            network_module(model, task.network_output),
            device=device,
            schema=network_schema(task.network_output, width),
            options=opts.get("network_options"),
        )
        return cls(
            task=task,
            head=head,
            encoder=encoder,
            network=network,
            hf_model=model,
            network_options=opts.get("network_options"),
        )

    @classmethod
    def _from_package(cls, root: Path, device: str, opts: dict[str, Any]) -> TextBackend:
        where = f"{PIPELINE} in {root.name!r}"
        raw = read_json(root / PIPELINE, ModelLoadError, where=where)
        if isinstance(raw, dict) and isinstance(raw.get("format"), int) and raw["format"] > FORMAT:
            raise ModelLoadError(f"{where} has format {raw['format']}; this aimass reads up to {FORMAT}")
        try:
            spec = _PipelineSpec.model_validate(raw)
            net = spec.network
            net_schema = Schema.model_validate(net.schema_) if net.format == "aimass" else None
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "the document"
            got = f", got {err['input']!r}" if "input" in err and err["type"] != "missing" else ""
            message = str(err["msg"]).removeprefix("Value error, ")
            raise ModelLoadError(f"{where} is not a text pipeline description: {field}: {message}{got}") from None
        task = TASKS.get(spec.task)
        if task is None:
            raise ModelLoadError(f"{where}: task {spec.task!r} is none of {sorted(TASKS)}")
        head = Head(labels=tuple(spec.labels), hidden_size=spec.hidden_size, multi_label=spec.multi_label)
        settings = spec.tokenizer.model_dump()
        settings.update(_tokenizer_settings(opts))
        if "max_length" in opts:
            settings["max_length"] = opts["max_length"]
        encoder = TextEncoder.from_file(root / TOKENIZER, **settings)
        net_dir = root / NETWORK
        # Names come from the package: each must stay inside it (no "..", no links out).
        files = [member(root, f"{NETWORK}/{name}") for name in net.files]
        if net_schema is None:  # format "transformers": a save_pretrained directory
            read_config(net_dir)  # refuses config.json pointing at shipped code, with the reason
            model = load_pretrained(net_dir, task.auto_class)
            return cls._with_torch(task, head, encoder, model, device, opts)
        network = get_backend(net.backend).load(
            files[0],
            device=device,
            schema=net_schema,
            options=opts.get("network_options"),
        )
        return cls(task=task, head=head, encoder=encoder, network=network, network_options=opts.get("network_options"))

    # -- running -----------------------------------------------------------------------------

    def encode(self, values: np.ndarray) -> tuple[dict[str, np.ndarray], list[Any]]:
        """The network's inputs for a BYTES array of texts, and the tokenizer's encodings."""
        ids, mask, encodings = self.encoder.encode(as_text(values, TEXT).tolist())
        if not self.encoder.truncation and ids.shape[-1] > self.encoder.max_length:
            longest = int(mask.sum(axis=1).argmax())
            raise SchemaError(
                f"input {TEXT!r}: element {longest} has {int(mask[longest].sum())} tokens, more than max_length "
                f"{self.encoder.max_length}, and truncation is off",
                tensor=TEXT,
            )
        return {"input_ids": ids, "attention_mask": mask}, encodings

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed, encodings = self.encode(inputs[TEXT])
        if not encodings:
            return {
                t.name: np.zeros([0 if d == -1 else d for d in t.shape], t.dtype.numpy) for t in self.schema.outputs
            }
        out = self.network.run(feed)[self._field]
        return self.task.finish(np.asarray(out), feed["attention_mask"], encodings, self.head)

    # -- token batching (aimass.backends.tokens): tokenized once at the edge, batched by length -----

    def tokenize(self, inputs: dict[str, np.ndarray]) -> TokenRows:
        """Each text's own tokens (truncated, not padded) and its token count.

        Example:
            >>> m.backend.tokenize({"text": np.array(["hi there"], dtype=object)}).lengths   # doctest: +SKIP
            array([4])
        """
        encodings = self.encoder.encode_rows(as_text(inputs[TEXT], TEXT).tolist())
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        if not self.encoder.truncation and len(lengths) and int(lengths.max()) > self.encoder.max_length:
            longest = int(lengths.argmax())
            raise SchemaError(
                f"input {TEXT!r}: element {longest} has {int(lengths[longest])} tokens, more than max_length "
                f"{self.encoder.max_length}, and truncation is off",
                tensor=TEXT,
            )
        return TokenRows(items=encodings, lengths=lengths)

    def run_tokens(self, rows: TokenRows) -> dict[str, np.ndarray]:
        """The outputs of token rows from any requests, padded to their longest: equal to :meth:`run`'s."""
        if not len(rows):
            return {
                t.name: np.zeros([0 if d == -1 else d for d in t.shape], t.dtype.numpy) for t in self.schema.outputs
            }
        ids, mask = self.encoder.pad(rows.items)
        out = self.network.run({"input_ids": ids, "attention_mask": mask})[self._field]
        return self.task.finish(np.asarray(out), mask, rows.items, self.head)

    def limit_threads(self, threads: int) -> TextBackend:
        """The same pipeline with its network's calls on ``threads`` threads (:mod:`aimass.backends.threads`)."""
        limit = thread_limit(self.network)
        network = limit.limit_threads(threads) if limit is not None else self.network
        if network is self.network:
            return self
        return TextBackend(
            task=self.task,
            head=self.head,
            encoder=self.encoder,
            network=network,
            hf_model=self.hf_model,
            network_options=self.network_options,
        )

    def with_network(self, network: Backend) -> TextBackend:
        """The same tokenizer and head around another network (exported, quantized)."""
        return TextBackend(
            task=self.task,
            head=self.head,
            encoder=self.encoder,
            network=network,
            network_options=self.network_options,
        )

    def to(self, device: str) -> TextBackend:
        if device == self.device:
            return self
        if self.hf_model is not None:
            # nn.Module.to moves in place: copy, so the original Model keeps its weights where they were.
            return TextBackend._with_torch(
                self.task,
                self.head,
                self.encoder,
                copy.deepcopy(self.hf_model),
                device,
                {"network_options": self.network_options},
            )
        return self.with_network(self.network.to(device))

    # -- saving ------------------------------------------------------------------------------

    def save(self, directory: Path) -> list[str]:
        net_dir = directory / NETWORK
        net_dir.mkdir()
        if self.hf_model is not None:
            save_pretrained(self.hf_model, net_dir)
            files = sorted(p.name for p in net_dir.iterdir() if p.is_file())
            if not any(f.endswith(".safetensors") for f in files):
                raise UnsupportedOperation(
                    "transformers wrote no safetensors weights; aimass packages never hold pickles"
                )
            network: dict[str, Any] = {"format": "transformers", "backend": self.network.name, "files": files}
        else:
            files = self.network.save(net_dir)
            network = {
                "format": "aimass",
                "backend": self.network.name,
                "files": files,
                "schema": self.network.schema.model_dump(mode="json"),
            }
        self.encoder.save(directory / TOKENIZER)
        spec = {
            "format": FORMAT,
            "task": self.task.name,
            "labels": list(self.head.labels),
            "hidden_size": self.head.hidden_size,
            "multi_label": self.head.multi_label,
            "tokenizer": self.encoder.settings(),
            "network": network,
        }
        (directory / PIPELINE).write_text(json.dumps(spec, indent=2), encoding="utf-8")
        return [PIPELINE, TOKENIZER, *(f"{NETWORK}/{f}" for f in files)]


class _TokenizerSpec(BaseModel):
    """How ``pipeline.json`` records the tokenizer settings (:meth:`TextEncoder.settings`)."""

    model_config = ConfigDict(extra="forbid")

    pad_token: str | None = None
    max_length: int
    truncation: bool = True
    padding: str = "longest"


class _NetworkSpec(BaseModel):
    """The network part of ``pipeline.json``: a ``save_pretrained`` directory or an aimass backend's files."""

    model_config = ConfigDict(populate_by_name=True)

    format: Literal["transformers", "aimass"]
    backend: str
    files: list[str] = Field(min_length=1)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _schema_for_aimass(self) -> _NetworkSpec:
        if self.format == "aimass" and self.schema_ is None:
            raise ValueError("network format 'aimass' needs the network's schema")
        return self


class _PipelineSpec(BaseModel):
    """``pipeline.json``, as :meth:`TextBackend.save` writes it."""

    format: int = FORMAT
    task: str
    labels: list[str]
    hidden_size: int
    multi_label: bool
    tokenizer: _TokenizerSpec
    network: _NetworkSpec


def _tokenizer_settings(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The tokenizer settings among the load options (``truncation``, ``padding``)."""
    return {k: opts[k] for k in ("truncation", "padding") if k in opts}


def _task(class_name: str, wanted: str | None) -> Task:
    task = task_for_class(class_name)
    if wanted is not None and wanted != task.name:
        raise ModelLoadError(f"option task={wanted!r}, but a {class_name} is a {task.name} model")
    return task


def _tokenizer_config(path: Path) -> dict[str, Any]:
    file = path / "tokenizer_config.json"
    if not file.is_file():
        return {}
    data = read_json(file, ModelLoadError, where=f"{path.name!r}: tokenizer_config.json")
    return data if isinstance(data, dict) else {}


def _max_length(tokenizer: Any, config: Mapping[str, Any], opts: Mapping[str, Any]) -> int:
    if opts.get("max_length") is not None:
        return int(opts["max_length"])
    declared = tokenizer.get("model_max_length") if isinstance(tokenizer, Mapping) else None
    declared = declared or getattr(tokenizer, "model_max_length", None)
    limits = [v for v in (declared, config.get("max_position_embeddings")) if isinstance(v, int) and 0 < v <= 1_000_000]
    return min(limits) if limits else 512
