"""Compressing a text model: its network is compressed by the network's own tool, the tokenizer stays.

``compress()`` finds :func:`compress_network` through this folder's manifest (``wrapped`` in ``plugin.py``) and hands
it the lookup of the network backend's tool (e.g. onnxruntime's dynamic int8 for a network on
the onnx backend). The caller's ``data`` (texts) is tokenized into the network's inputs first, so
calibration and the recipe choice see real token ids.

Example:
    >>> q = Model.load(bert, tokenizer=tok).convert("onnx").compress("int8", data=posts)   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aimass.backends.base import Backend, Derived
from aimass.frameworks.transformers.backend import TextBackend

__all__ = ["compress_network"]


def compress_network(
    backend: TextBackend, tool_for: Callable[[Backend], Callable[..., Derived]], *, data: Any = None, **options: Any
) -> Derived:
    """Compress the network with ``tool_for(network)``; the result keeps this model's tokenizer and head."""
    text = TextBackend.of(backend)
    feed = None
    if data is not None:
        feed, _ = text.encode(text.schema.coerce(data)["text"])
    result = tool_for(text.network)(text.network, data=feed, **options)
    notes = [
        f"compressed the {text.network.name} network; tokenizer and {text.task.name} head unchanged",
        *result.notes,
    ]
    return Derived(text.with_network(result.backend), result.settings, notes)
