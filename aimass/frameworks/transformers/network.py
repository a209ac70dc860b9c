"""The network part of a text model: a transformers model seen as ``(input_ids, attention_mask) -> tensor``.

transformers models return a ``ModelOutput`` with several fields; the pipeline needs one of them
(``logits`` or ``last_hidden_state``). :func:`network_module` wraps the model in a small
``nn.Module`` returning that field, which the torch backend runs and the ONNX exporter traces.
:func:`load_pretrained` reads weights saved by ``save_pretrained``: safetensors only, never pickled
``.bin`` files, never code from the directory (``trust_remote_code`` is always off).

Example:
    >>> net = network_module(bert_classifier, "logits")   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from aimass.dependencies import require_framework
from aimass.errors import ModelLoadError
from aimass.quiet import silenced
from aimass.schema import DType, Schema, TensorSpec

__all__ = ["INPUTS", "load_pretrained", "network_module", "network_schema", "read_config", "save_pretrained"]

INPUTS = ("input_ids", "attention_mask")


def _transformers() -> Any:
    # transformers' model code imports torchao when it is installed, and torchao logs each CUDA-only
    # library it cannot load and torch's pytree deprecations: nothing about the user's model.
    with silenced(loggers=("torchao", "torch.utils._pytree")):
        require_framework("transformers.modeling_utils", backend="transformers", extra="transformers")
    return require_framework("transformers", backend="transformers", extra="transformers")


@functools.cache
def _wrapper_class() -> type:
    torch = require_framework("torch", backend="transformers", extra="transformers")

    class TextNetwork(torch.nn.Module):  # type: ignore[name-defined]
        """``model(input_ids, attention_mask).<field>``: one tensor out, as exporters and backends want."""

        def __init__(self, model: Any, field: str) -> None:
            super().__init__()
            self.model = model
            self.field = field

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return getattr(self.model(input_ids=input_ids, attention_mask=attention_mask), self.field)

    return TextNetwork


def network_module(model: Any, field: str) -> Any:
    """``model`` (a transformers PreTrainedModel) as an ``nn.Module`` returning only ``field``, in eval mode."""
    return _wrapper_class()(model, field).eval()


def save_pretrained(model: Any, directory: Path) -> None:
    """``model.save_pretrained(directory)`` without transformers' "Writing model shards" progress bar.

    The bar (one shard for any small model) went to the caller's terminal or log on every
    ``Model.save``; it is turned off for this call and put back as it was.

    Example:
        >>> save_pretrained(bert_classifier, Path("pkg/network"))   # doctest: +SKIP
    """
    hf_logging = require_framework("transformers.utils.logging", backend="transformers", extra="transformers")
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(directory))
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def network_schema(field: str, width: int) -> Schema:
    """The network's tensors: int64 ids and mask in, ``logits [-1, labels]`` or ``hidden [-1, -1, width]`` out."""
    out_shape = [-1, width] if field == "logits" else [-1, -1, width]
    return Schema(
        inputs=[TensorSpec(name=n, dtype=DType.INT64, shape=[-1, -1]) for n in INPUTS],
        outputs=[TensorSpec(name=field, dtype=DType.FP32, shape=out_shape)],
    )


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a ``save_pretrained`` directory as a dict (ModelLoadError when absent or not JSON)."""
    file = directory / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{directory.name!r} has no config.json (not a save_pretrained directory)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{directory.name!r}: config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{directory.name!r}: config.json does not hold a JSON object")
    if config.get("auto_map"):
        raise ModelLoadError(
            f"{directory.name!r}: config.json points at model code shipped beside it (auto_map); aimass never "
            "runs code from a model directory: use a model whose architecture transformers itself provides"
        )
    return config


def load_pretrained(directory: Path, auto_class: str) -> Any:
    """The model in ``directory`` through a transformers Auto class: safetensors weights, no remote code."""
    transformers = _transformers()
    if not any(directory.glob("*.safetensors")):
        raise ModelLoadError(
            f"{directory.name!r} has no .safetensors weights; aimass does not unpickle .bin/.pt weights: "
            "re-save the model with save_pretrained(dir) (safetensors is its default)"
        )
    try:
        model = getattr(transformers, auto_class).from_pretrained(
            str(directory), local_files_only=True, use_safetensors=True, trust_remote_code=False
        )
    except Exception as e:  # transformers raises OSError/ValueError/KeyError for bad directories
        raise ModelLoadError(f"transformers could not load {directory.name!r}: {type(e).__name__}: {e}") from e
    return model.eval()
