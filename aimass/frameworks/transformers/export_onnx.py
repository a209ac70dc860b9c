"""Text model -> ONNX: the network is exported with ``torch.onnx.export``, the tokenizer and head stay.

The result is still a text model (text in, labels out): the same fast tokenizer feeds an
onnxruntime session through the onnx backend (found in the backend registry), so serving it needs
``tokenizers`` and ``onnxruntime`` but neither torch nor transformers. Batch and token axes stay
dynamic. The TorchScript exporter (``dynamo=False``, the default here) exports a BERT-size encoder
in well under a second and gave a graph 5-10 % faster under onnxruntime than the dynamo exporter
(``dynamo=True``), which takes several seconds.

Example:
    >>> o = Model.load(bert, tokenizer=tok).convert("onnx", data=["a post", "another"])   # doctest: +SKIP
    >>> o.backend.network.name                                                          # doctest: +SKIP
    'onnx'
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from aimass.backends import get_backend
from aimass.backends.base import no_unknown_options
from aimass.dependencies import require
from aimass.errors import ConversionError, UnsupportedOperation
from aimass.frameworks.transformers.backend import TextBackend
from aimass.frameworks.transformers.network import INPUTS, network_module
from aimass.quiet import silenced

__all__ = ["text_to_onnx"]

# Two texts of different lengths: the exporter must see a batch and a token axis it cannot specialise.
_SAMPLE = ["a short sample", "a somewhat longer sample sentence to trace the network with"]


def text_to_onnx(
    backend: TextBackend, *, opset: int | None = None, dynamo: bool = False, **unknown: Any
) -> TextBackend:
    """The same text model with its network exported to ONNX and run by onnxruntime."""
    no_unknown_options(unknown)
    text = TextBackend.of(backend)
    if text.hf_model is None:
        raise UnsupportedOperation(
            f"this text model's network already runs on the {text.network.name} backend; only a transformers "
            "network (torch) exports to ONNX"
        )
    torch = require("torch", feature="the transformers backend", extra="transformers")
    field = text.task.network_output
    module = network_module(text.hf_model, field)
    feed, _ = text.encode(np.array(_SAMPLE, dtype=object))
    device = next(iter(text.hf_model.parameters())).device
    args = tuple(torch.from_numpy(feed[n]).to(device) for n in INPUTS)
    axes = {n: {0: "batch", 1: "tokens"} for n in INPUTS}
    axes[field] = {0: "batch", 1: "tokens"} if field == "last_hidden_state" else {0: "batch"}
    kwargs: dict[str, Any] = {"input_names": list(INPUTS), "output_names": [field], "dynamo": dynamo}
    if opset is not None:
        kwargs["opset_version"] = opset
    try:
        # The exporters report progress on stdout, torchvision's absence on the torch.onnx logger and
        # deprecations as warnings; keep callers' output clean.
        with (
            contextlib.redirect_stdout(io.StringIO()),
            silenced(loggers=("torch.onnx",), categories=(Warning,)),
            torch.inference_mode(False),
        ):
            if dynamo:
                dim = torch.export.Dim.AUTO
                program = torch.onnx.export(
                    module, args, dynamic_shapes=tuple({0: dim, 1: dim} for _ in INPUTS), **kwargs
                )
                blob = program.model_proto.SerializeToString()
            else:
                buf = io.BytesIO()
                torch.onnx.export(module, args, buf, dynamic_axes=axes, **kwargs)
                blob = buf.getvalue()
    except Exception as e:  # the exporters raise from many torch subsystems
        raise ConversionError(
            f"torch.onnx.export failed on the text network: {type(e).__name__}: {str(e)[:500]}"
        ) from e
    network = get_backend("onnx").load(
        blob, device=text.device, schema=text.network.schema, options=text.network_options or None
    )
    return text.with_network(network)
