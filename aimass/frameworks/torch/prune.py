"""Pruning of torch modules: unstructured magnitude pruning, and structured neuron pruning that shrinks layers.

* ``prune`` (unstructured): zeroes the ``amount`` smallest-magnitude weights of every
  ``nn.Linear``/``nn.Conv*d`` (``torch.nn.utils.prune.l1_unstructured``, made permanent). Dense
  storage keeps every zero, so file size and latency do not change; the report shows that.
* ``prune-structured``: removes the ``amount`` least important hidden neurons between two
  ``nn.Linear`` layers joined only by element-wise ops (ReLU, GELU, dropout ...), rebuilding both
  layers smaller: rows of the first, input columns of the second. Size and latency drop.
  Importance of neuron ``j`` is ``||W1[j, :]|| * ||W2[:, j]||``. Pairs are found by tracing
  ``forward`` with ``torch.fx``.

Example:
    >>> p = compress(m, "prune-structured", amount=0.5)   # doctest: +SKIP
"""

from __future__ import annotations

import operator
from typing import Any

from aimass.backends.base import Derived, no_unknown_options
from aimass.dependencies import require
from aimass.errors import UnsupportedOperation
from aimass.frameworks.torch.backend import TorchBackend
from aimass.frameworks.torch.quantize import module_copy, rewrap

__all__ = ["structured", "unstructured"]

# Element-wise ops a hidden neuron may pass through between two Linear layers (neuron j stays neuron j).
_ELEMENTWISE_FUNCTIONS = {
    "relu", "relu_", "gelu", "silu", "tanh", "sigmoid", "leaky_relu", "elu", "selu", "mish", "hardswish", "dropout",
}  # fmt: skip
_ELEMENTWISE_MODULES = (
    "ReLU", "GELU", "SiLU", "Tanh", "Sigmoid", "LeakyReLU", "ELU", "SELU", "Mish", "Hardswish", "Dropout", "Identity",
)  # fmt: skip


def _torch() -> Any:
    return require("torch", feature="torch pruning", extra="torch")


def _amount(amount: float) -> float:
    if not 0.0 < amount < 1.0:
        raise ValueError(f"amount must be between 0 and 1 (a fraction), got {amount}")
    return amount


def unstructured(backend: TorchBackend, *, data: Any = None, amount: float = 0.5, **unknown: Any) -> Derived:
    """``prune``: zero the ``amount`` smallest-magnitude weights of every Linear/Conv layer."""
    no_unknown_options(unknown)
    return _unstructured(backend, _amount(amount))


def structured(backend: TorchBackend, *, data: Any = None, amount: float = 0.5, **unknown: Any) -> Derived:
    """``prune-structured``: remove the ``amount`` least important neurons between Linear pairs."""
    no_unknown_options(unknown)
    return _structured(backend, _amount(amount))


def _unstructured(backend: TorchBackend, amount: float) -> Derived:
    torch = _torch()
    tprune = require("torch.nn.utils.prune", feature="torch pruning", extra="torch")
    module = module_copy(backend)
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))]
    if not layers:
        raise UnsupportedOperation("this torch module has no Linear/Conv layers to prune")
    total = zeros = 0
    for layer in layers:
        tprune.l1_unstructured(layer, name="weight", amount=amount)
        tprune.remove(layer, "weight")  # permanent: the mask is folded into a plain weight tensor
        total += layer.weight.numel()
        zeros += int((layer.weight == 0).sum())
    settings = {"amount": amount, "layers": len(layers), "weight_sparsity": round(zeros / total, 4)}
    notes = [
        "unstructured pruning zeroes weights inside dense tensors: size and latency stay the same "
        "unless a sparse format or sparse kernels are used"
    ]
    return Derived(rewrap(module, backend), settings, notes)


def _linear_pairs(module: Any) -> list[tuple[str, str]]:
    """``(first, second)`` qualified names of Linear layers joined only by element-wise ops."""
    torch = _torch()
    try:
        graph = torch.fx.symbolic_trace(module).graph
    except Exception as e:  # fx cannot trace data-dependent control flow
        raise UnsupportedOperation(
            f"structured pruning traces forward() with torch.fx, which failed ({type(e).__name__}: {e})"
        ) from e
    modules = dict(module.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def is_linear(node: Any) -> bool:
        return node.op == "call_module" and isinstance(modules.get(node.target), torch.nn.Linear)

    def elementwise(node: Any) -> bool:
        if node.op == "call_module":
            return type(modules.get(node.target)).__name__ in _ELEMENTWISE_MODULES
        if node.op in ("call_function", "call_method"):
            name = getattr(node.target, "__name__", str(node.target))
            return name in _ELEMENTWISE_FUNCTIONS and node.target is not operator.getitem
        return False

    pairs = []
    for node in graph.nodes:
        if not is_linear(node) or calls[node.target] != 1:
            continue
        cur = node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            if is_linear(nxt) and calls[nxt.target] == 1 and nxt.args[0] is cur:
                pairs.append((node.target, nxt.target))
                break
            if not elementwise(nxt) or nxt.args[0] is not cur:
                break
            cur = nxt
    return pairs


def _structured(backend: TorchBackend, amount: float) -> Derived:
    torch = _torch()
    module = module_copy(backend)
    pairs = _linear_pairs(module)
    if not pairs:
        raise UnsupportedOperation(
            "structured pruning found no pair of nn.Linear layers joined by element-wise ops only; "
            "use method='prune' (unstructured) instead"
        )
    shrunk = []
    # Pairs come in graph order; in a chain a->b->c, b is rebuilt twice, so always read current layers.
    for first_name, second_name in pairs:
        first, second = module.get_submodule(first_name), module.get_submodule(second_name)
        width = first.out_features
        keep_n = max(1, round(width * (1.0 - amount)))
        with torch.no_grad():
            score = first.weight.norm(dim=1) * second.weight.norm(dim=0)
            keep = torch.sort(torch.topk(score, keep_n).indices).values
            new_first = torch.nn.Linear(first.in_features, keep_n, bias=first.bias is not None)
            new_first.weight.copy_(first.weight[keep])
            if first.bias is not None:
                new_first.bias.copy_(first.bias[keep])
            new_second = torch.nn.Linear(keep_n, second.out_features, bias=second.bias is not None)
            new_second.weight.copy_(second.weight[:, keep])
            if second.bias is not None:
                new_second.bias.copy_(second.bias)
        _set(module, first_name, new_first.to(first.weight.dtype))
        _set(module, second_name, new_second.to(second.weight.dtype))
        shrunk.append(f"{first_name}: {width} -> {keep_n} neurons")
    settings = {"amount": amount, "importance": "||W1 row|| * ||W2 column||", "layers": "; ".join(shrunk)}
    return Derived(rewrap(module.eval(), backend), settings)


def _set(root: Any, qualified: str, value: Any) -> None:
    parent, _, attr = qualified.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, value)
