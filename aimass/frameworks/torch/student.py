"""A shallower student from a transformer teacher: keep every other layer, then train it to match the teacher.

``compress(m, "distill", layers=3, data=tokens)`` reaches :func:`fewer_layers` through
this folder's manifest (``shrinkers`` in ``plugin.py``). The teacher's stack of layers is found as the longest
``nn.ModuleList`` of identical blocks (``bert.encoder.layer``, ``transformer.h`` ...); the student
is a copy holding ``layers`` of them, evenly spaced from the first (6 -> 3 keeps 0, 2, 4), so it
starts from the teacher's own weights. It is then trained on the caller's unlabelled inputs to
reproduce the teacher's output (mean squared error plus cosine distance, Adam).

Example:
    >>> small = m.compress("distill", layers=3, data=tokens, epochs=3)   # doctest: +SKIP
    >>> print(small.report)                                              # doctest: +SKIP
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from aimass.backends.base import Derived
from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.frameworks.torch.backend import TorchBackend
from aimass.training import run_steps

__all__ = ["fewer_layers", "layer_stack"]


def _torch() -> Any:
    return require("torch", feature="torch distillation", extra="torch")


def layer_stack(module: Any) -> tuple[str, Any]:
    """``(dotted name, nn.ModuleList)`` of the longest list of identical blocks in ``module``.

    Example:
        >>> layer_stack(bert_encoder)[0]   # doctest: +SKIP
        'bert.encoder.layer'
    """
    torch = _torch()
    best: tuple[str, Any] | None = None
    for name, child in module.named_modules():
        blocks = isinstance(child, torch.nn.ModuleList) and len(child) > 1 and len({type(m) for m in child}) == 1
        if blocks and (best is None or len(child) > len(best[1])):
            best = (name, child)
    if best is None:
        raise UnsupportedOperation(
            "distill with layers= needs a transformer: a module holding its blocks in an nn.ModuleList"
        )
    return best


def _set_stack(module: Any, name: str, stack: Any) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, attr, stack)


def fewer_layers(
    backend: TorchBackend,
    *,
    layers: int,
    inputs: dict[str, np.ndarray],
    target: np.ndarray,
    output: str,
    epochs: int = 3,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    seed: int = 0,
    progress: bool | None = None,
) -> Derived:
    """The student: ``layers`` of the teacher's blocks, trained to reproduce ``target`` (the teacher's ``output``)."""
    torch = _torch()
    teacher = TorchBackend.of(backend).module
    if not isinstance(teacher, torch.nn.Module):
        raise UnsupportedOperation(f"distill with layers= needs an nn.Module, got {type(teacher).__name__}")
    name, stack = layer_stack(teacher)
    total = len(stack)
    if not 1 <= layers < total:
        raise ValueError(f"layers must be between 1 and {total - 1} (the teacher has {total}), got {layers}")
    keep = sorted({round(i * total / layers) for i in range(layers)})
    student = copy.deepcopy(teacher)
    _set_stack(student, name, torch.nn.ModuleList([copy.deepcopy(stack[i]) for i in keep]))
    for m in student.modules():
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "num_hidden_layers"):
            config = copy.deepcopy(config)
            config.num_hidden_layers = layers
            m.config = config
    torch.manual_seed(seed)
    # Trained in eval mode: dropout would add noise to a target that has none (the teacher's outputs).
    student.eval()
    for p in student.parameters():
        p.requires_grad_(p.is_floating_point())
    names = backend.schema.input_names
    xs = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names]
    ys = torch.from_numpy(target.astype(np.float32))
    opt = torch.optim.AdamW([p for p in student.parameters() if p.is_floating_point()], lr=learning_rate)
    fn = torch.nn.functional

    def step(idx: np.ndarray) -> float:
        i = torch.from_numpy(idx)
        out = student(*(x[i] for x in xs))
        if isinstance(out, dict):
            out = out[output]
        elif isinstance(out, (tuple, list)):
            out = out[0]
        want = ys[i].reshape(out.shape)
        flat, ref = out.reshape(len(idx), -1), want.reshape(len(idx), -1)
        loss = fn.mse_loss(out, want) + (1 - fn.cosine_similarity(flat, ref, dim=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    run_steps(len(target), {"epochs": epochs, "batch_size": batch_size}, seed, progress, step, desc="distill")
    for p in student.parameters():
        p.requires_grad_(False)
    settings = {
        "layers": f"{layers} of {total}",
        "kept_layers": keep,
        "stack": name,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "rows": len(target),
    }
    notes = [f"student initialised from teacher layers {keep} of {name}, trained to match {output!r}"]
    return Derived(TorchBackend.load(student, device=backend.device, schema=backend.schema), settings, notes)
