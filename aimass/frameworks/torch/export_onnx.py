"""PyTorch -> ONNX with ``torch.onnx.export`` (the dynamo exporter), dynamic axes from the schema.

Every ``-1`` dimension of the source schema stays dynamic in the graph (``Dim.AUTO``); input and
output names are the schema's. The legacy TorchScript exporter (``dynamo=False``) warns that it is
deprecated, so it is used only when asked for, or for Hugging Face attention (see
:func:`torch_to_onnx`), whose TorchScript graph onnxruntime can fuse.

Example:
    >>> o = convert(Model.load(net, example_input={"x": x}), "onnx")   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from typing import Any

from aimass.dependencies import require
from aimass.errors import ConversionError
from aimass.frameworks.torch.backend import TorchBackend
from aimass.quiet import silenced

__all__ = ["torch_to_onnx"]


def _with_plain_attention(module: Any) -> Any | None:
    """A copy of ``module`` whose Hugging Face attention runs eagerly, or None when it has none to switch.

    ``sdpa`` attention exports as one opaque pattern that onnxruntime's transformer optimizer
    does not fuse; the eager form computes the same and fuses into ``Attention`` kernels.
    """
    modules = list(module.modules()) if hasattr(module, "modules") else []
    switchable = [
        m
        for m in modules
        if hasattr(m, "set_attn_implementation")
        and getattr(getattr(m, "config", None), "_attn_implementation", "eager") != "eager"
    ]
    if not switchable:
        return None
    clone = copy.deepcopy(module)
    for m in clone.modules():
        if hasattr(m, "set_attn_implementation"):
            with contextlib.suppress(Exception):  # models without an eager path keep theirs
                m.set_attn_implementation("eager")
    return clone


def torch_to_onnx(backend: TorchBackend, *, opset: int | None = None, dynamo: bool | None = None) -> Any:
    """The ``onnx.ModelProto`` of a torch backend's module (names not yet aligned).

    ``dynamo=None`` picks the exporter: for modules with Hugging Face attention, attention in
    its eager form through the TorchScript exporter, whose graph onnxruntime fuses
    (:mod:`aimass.frameworks.onnx.optimize`), falling back to dynamo if that fails; dynamo otherwise.
    """
    module = TorchBackend.of(backend).module
    if dynamo is None:
        plain = _with_plain_attention(module)
        if plain is None:
            return _export(backend, module, opset=opset, dynamo=True)
        try:
            return _export(backend, plain, opset=opset, dynamo=False)
        except ConversionError:
            return _export(backend, module, opset=opset, dynamo=True)
    return _export(backend, module, opset=opset, dynamo=dynamo)


def _export(backend: TorchBackend, module: Any, *, opset: int | None, dynamo: bool) -> Any:
    torch = require("torch", feature="the torch backend", extra="torch")
    if dynamo:  # the dynamo exporter writes its graph through onnxscript
        require("onnxscript", feature="compression and conversion", extra="compress")
    schema = backend.schema
    # Batch 2, not 1: export specializes dimensions of size 1 even when marked dynamic.
    sample = schema.example(batch=2)
    args = tuple(torch.from_numpy(sample[n]) for n in schema.input_names)
    kwargs: dict[str, Any] = {
        "input_names": schema.input_names,
        "output_names": schema.output_names,
        "dynamo": dynamo,
        "verbose": False,
    }
    if opset is not None:
        kwargs["opset_version"] = opset
    if dynamo:
        kwargs["dynamic_shapes"] = tuple(
            {i: torch.export.Dim.AUTO for i, d in enumerate(t.shape) if d == -1} or None for t in schema.inputs
        )
    else:
        kwargs["dynamic_axes"] = {
            t.name: {i: f"{t.name}_d{i}" for i, d in enumerate(t.shape) if d == -1}
            for t in [*schema.inputs, *schema.outputs]
        }
    try:
        # The exporter reports progress on stdout, torchvision's absence on the torch.onnx logger (four
        # lines per export) and its own deprecations as FutureWarning; keep callers' output clean.
        # Modules of exported programs cannot be put in eval mode (they have no train/eval switch).
        with (
            contextlib.redirect_stdout(io.StringIO()),
            silenced(
                loggers=("torch.onnx",),
                categories=(FutureWarning,),
                messages=("Exporting a model while it is in training mode",),
            ),
        ):
            if dynamo:
                program = torch.onnx.export(module, args, **kwargs)
                return program.model_proto
            buf = io.BytesIO()
            # The TorchScript exporter warns about its deprecation and about tracing Python conditions
            # (shape checks in transformers' masks) that the numeric check after export covers.
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buf, **kwargs)
    except Exception as e:  # the exporter raises from many torch subsystems
        raise ConversionError(f"torch.onnx.export failed: {type(e).__name__}: {str(e)[:500]}") from e
    onnx = require("onnx", feature="the onnx backend", extra="onnx")
    return onnx.load_model_from_string(buf.getvalue())
