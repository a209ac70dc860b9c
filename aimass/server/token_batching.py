"""Token-aware batching for text models: merged by token count, run sorted by length, padding waste bounded.

A text batch is padded to its longest text, so merging a 3-word and a 40-word sentence makes the
short one cost as much as the long one. For a backend with the token-batching capability
(:class:`aimass.backends.tokens.TokenBatching`), the server tokenizes each request once as it
arrives and merges requests with :class:`TokenMerging`:

* the batcher takes requests while their rows fit ``max_batch_size`` and their real tokens fit
  ``max_batch_tokens`` (a request larger than either runs alone);
* the merged rows are sorted by token count and cut, in that order, into model calls of at most
  ``max_batch_tokens`` padded tokens, where each call pads away at most ``max_padding`` of its
  padded tokens (a share; the first row of a call is always taken);
* each request gets its own rows back, in its own order, whatever call computed them.

Each call's real and padded tokens are counted (:attr:`TokenMerging.real_tokens`,
:attr:`TokenMerging.padded_tokens`), and :data:`REQUEST_TOKENS` lets a route learn how many tokens
its request had (the OpenAI routes report them as ``usage``) without tokenizing again.

Example:
    >>> plan_calls(np.array([3, 4, 4, 30, 32]), max_padding=0.25, max_tokens=8192)
    [(0, 3), (3, 5)]
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np

from aimass.backends.tokens import TokenRows

__all__ = ["DEFAULT_MAX_BATCH_TOKENS", "DEFAULT_MAX_PADDING", "REQUEST_TOKENS", "TokenMerging", "plan_calls"]

Outputs = dict[str, np.ndarray]

#: Padded tokens per model call (and real tokens per merged batch), as TEI's ``max_batch_tokens``.
DEFAULT_MAX_BATCH_TOKENS = 8192
#: The largest share of a call's padded tokens that may be padding (measured: docs/performance.md).
DEFAULT_MAX_PADDING = 0.25

#: Set by a route to a one-element list; the text models it calls add their requests' real tokens.
REQUEST_TOKENS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("aimass_request_tokens", default=None)


def plan_calls(lengths: np.ndarray, *, max_padding: float, max_tokens: int) -> list[tuple[int, int]]:
    """``[start, stop)`` slices of ``lengths`` (sorted ascending): the model calls of a merged batch.

    A row joins the current call unless the call would then be more than ``max_padding`` padding
    or over ``max_tokens`` padded tokens; then it starts the next call.

    Example:
        >>> plan_calls(np.array([5, 5, 6, 6]), max_padding=0.25, max_tokens=12)
        [(0, 2), (2, 4)]
    """
    calls: list[tuple[int, int]] = []
    start, real = 0, 0
    for i, n in enumerate(lengths.tolist()):
        padded = (i - start + 1) * n  # sorted: the row joining is the call's longest
        if i > start and (padded - real - n > max_padding * padded or padded > max_tokens):
            calls.append((start, i))
            start, real = i, 0
        real += n
    if len(lengths):
        calls.append((start, len(lengths)))
    return calls


class TokenMerging:
    """Merging of token rows (:class:`~aimass.server.batching.Merging`): by tokens, run sorted by length.

    Example:
        >>> merging = TokenMerging(max_tokens=8192, max_padding=0.25)
        >>> batcher = Batcher(backend.run_tokens, merging=merging, max_batch_cost=8192)   # doctest: +SKIP
    """

    def __init__(self, *, max_tokens: int = DEFAULT_MAX_BATCH_TOKENS, max_padding: float = DEFAULT_MAX_PADDING) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_tokens}")
        if not 0 <= max_padding < 1:
            raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
        self.max_tokens = max_tokens
        self.max_padding = max_padding
        self.real_tokens = 0  # tokens of the texts run so far
        self.padded_tokens = 0  # tokens the model computed for them, padding included
        self.calls = 0

    def measure(self, request: TokenRows) -> tuple[int, int, Hashable]:
        return len(request), request.tokens, "tokens"  # every text request merges with every other

    def run(self, fn: Callable[[TokenRows], Outputs], requests: list[TokenRows]) -> list[Outputs]:
        rows = TokenRows.concat(requests)
        order = np.argsort(rows.lengths, kind="stable")
        lengths = rows.lengths[order]
        calls = plan_calls(lengths, max_padding=self.max_padding, max_tokens=self.max_tokens)
        parts: list[tuple[np.ndarray, Outputs]] = []
        for start, stop in calls:
            index = order[start:stop]
            parts.append((index, fn(rows.take(index))))
            self.real_tokens += int(lengths[start:stop].sum())
            self.padded_tokens += int(lengths[stop - 1]) * (stop - start)
            self.calls += 1
        merged = _scatter(parts, len(rows))
        results: list[Outputs] = []
        start = 0
        for request in requests:
            stop = start + len(request)
            results.append({k: v[start:stop] for k, v in merged.items()})
            start = stop
        return results


def _scatter(parts: list[tuple[np.ndarray, Outputs]], total: int) -> Outputs:
    """Each call's outputs put back at its rows' places; per-token outputs padded to the widest call."""
    if len(parts) == 1 and np.array_equal(parts[0][0], np.arange(total)):
        return parts[0][1]
    out: Outputs = {}
    for name in parts[0][1]:
        arrays = [o[name] for _, o in parts]
        trailing = tuple(max(a.shape[d] for a in arrays) for d in range(1, arrays[0].ndim))
        first = arrays[0]
        fill: Any = "" if first.dtype == object else 0  # as the text backend pads per-token outputs
        merged = np.full((total, *trailing), fill, dtype=first.dtype)
        for (index, _), a in zip(parts, arrays, strict=True):
            merged[(index, *(slice(0, d) for d in a.shape[1:]))] = a
        out[name] = merged
    return out
