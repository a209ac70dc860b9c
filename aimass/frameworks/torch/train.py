"""Torch training for ``update()``: fine-tuning a copy of the module, with a progress bar."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np

from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.frameworks.torch.backend import TorchBackend
from aimass.training import loss_kind, progress_bar

__all__ = ["train"]


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
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(params, lr=learning_rate or 1e-3)
    target = torch.from_numpy(y.astype(np.int64) if kind == "cross_entropy" else y.astype(np.float32)).to(device)
    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(device) for n in names]
    rows = target.shape[0]
    steps = -(-rows // batch_size)
    if hasattr(module, "train"):
        with contextlib.suppress(NotImplementedError):  # exported-program modules refuse train()/eval()
            module.train()
    with progress_bar(epochs * steps, desc, progress) as bar:
        for epoch in range(epochs):
            order = torch.randperm(rows, generator=generator).to(device)
            total = 0.0
            for start in range(0, rows, batch_size):
                idx = order[start : start + batch_size]
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
                total += float(value.detach()) * idx.shape[0]
                bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{total / rows:.4f}")
    if hasattr(module, "eval"):
        with contextlib.suppress(NotImplementedError):
            module.eval()
    for p in params:
        p.requires_grad_(False)
    return TorchBackend.load(module, device=backend.device, schema=backend.schema)
