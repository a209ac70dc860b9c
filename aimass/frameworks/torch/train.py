"""Torch training: ``update()`` fine-tunes a copy of the module; ``distill()`` trains a student on a teacher."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np

from aimass.backends.base import Backend
from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.frameworks.torch.backend import TorchBackend
from aimass.training import log_target, loss_kind, run_steps

__all__ = ["distill", "train"]


def train(
    backend: TorchBackend,
    inputs: dict[str, np.ndarray],
    y: np.ndarray,
    *,
    epochs: int,
    learning_rate: float | None,
    batch_size: int,
    loss: str | None,
    progress: bool | None,
    seed: int,
    desc: str = "update",
    **_: Any,
) -> TorchBackend:
    """``epochs`` of Adam on a copy of the module: cross-entropy for integer labels, else mean squared error."""
    torch = require("torch", feature="torch training", extra="torch")
    source = TorchBackend.of(backend).module
    try:
        module = copy.deepcopy(source)
    except Exception as e:  # some compiled modules cannot be copied
        raise UnsupportedOperation(f"this torch module cannot be copied for fine-tuning: {e}") from e
    params = [p for p in module.parameters() if p.is_floating_point()]
    if not params:
        raise UnsupportedOperation("this torch module has no trainable parameters")
    for p in params:
        p.requires_grad_(True)
    kind = loss_kind(loss, y)
    names = backend.schema.input_names
    device = torch.device(backend.device)
    optimiser = torch.optim.Adam(params, lr=learning_rate or 1e-3)
    target = torch.from_numpy(y.astype(np.int64) if kind == "cross_entropy" else y.astype(np.float32)).to(device)
    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device) for n in names]
    if hasattr(module, "train"):
        with contextlib.suppress(NotImplementedError):  # exported-program modules refuse train()/eval()
            module.train()

    def step(rows: np.ndarray) -> float:
        idx = torch.from_numpy(rows).to(device)
        out = module(*(t[idx] for t in tensors))
        if isinstance(out, (tuple, list)):
            out = out[0]
        elif isinstance(out, dict):
            out = next(iter(out.values()))
        batch_target = target[idx]
        if kind == "cross_entropy":
            value = torch.nn.functional.cross_entropy(out, batch_target)
        else:
            value = torch.nn.functional.mse_loss(out.reshape(batch_target.shape), batch_target)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        return float(value.detach())

    run_steps(target.shape[0], {"epochs": epochs, "batch_size": batch_size}, seed, progress, step, desc=desc)
    if hasattr(module, "eval"):
        with contextlib.suppress(NotImplementedError):
            module.eval()
    for p in params:
        p.requires_grad_(False)
    return TorchBackend.load(module, device=backend.device, schema=backend.schema)


def distill(
    student: Any,
    inputs: dict[str, np.ndarray],
    target: np.ndarray,
    labels: np.ndarray | None,
    kind: str,
    hyper: dict[str, Any],
    seed: int,
    progress: bool | None,
) -> Any:
    """Train a copy of ``student`` (nn.Module or torch backend) on a teacher's ``target`` (see compress.distill)."""
    torch = require("torch", feature="torch distillation", extra="torch")
    if isinstance(student, Backend):
        student = TorchBackend.of(student).module
    fn = torch.nn.functional
    torch.manual_seed(seed)
    net = copy.deepcopy(student).train()
    opt = torch.optim.Adam(net.parameters(), lr=hyper["learning_rate"])
    t, alpha = hyper["temperature"], hyper["alpha"]
    xs = [torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]
    teacher = torch.from_numpy(log_target(target, kind))
    ys = torch.from_numpy(labels.astype(np.int64)) if labels is not None and kind != "mse" else None

    def step(idx: np.ndarray) -> float:
        i = torch.from_numpy(idx)
        out = net(*(x[i] for x in xs))
        if kind == "mse":
            loss = fn.mse_loss(out.reshape(teacher[i].shape), teacher[i])
        else:
            soft = fn.kl_div(
                fn.log_softmax(out / t, dim=-1), fn.log_softmax(teacher[i] / t, dim=-1), log_target=True,
                reduction="batchmean",
            )  # fmt: skip
            loss = alpha * t * t * soft
            if ys is not None and alpha < 1.0:
                loss = loss + (1.0 - alpha) * fn.cross_entropy(out, ys[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    run_steps(target.shape[0], hyper, seed, progress, step)
    net.eval()
    if kind == "probabilities":
        # A hook, not a wrapper: forward() keeps its signature (input names) and torch.export traces it.
        net.register_forward_hook(_softmax_output)
    return net


def _softmax_output(module: Any, args: Any, out: Any) -> Any:
    torch = require("torch", feature="torch distillation", extra="torch")
    return torch.softmax(out, dim=-1)
