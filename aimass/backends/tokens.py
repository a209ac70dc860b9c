"""Token batching: the capability of a backend whose rows are texts, tokenized once and batched by length.

A backend that implements :class:`TokenBatching` splits its work in two: :meth:`~TokenBatching.tokenize`
turns a request's validated inputs into :class:`TokenRows` (one item per row, with its token
count), and :meth:`~TokenBatching.run_tokens` runs any selection of such rows, padded to their
longest. The server tokenizes each request as it arrives (once per text), counts the tokens, and
its batcher (:mod:`aimass.server.token_batching`) merges requests by token count, sorts rows by
length and cuts calls where padding would waste too much. The capability is declared by the
backend's methods, never by its name: :func:`token_batching` is the one test.

Example:
    >>> rows = TokenRows(items=["a", "bb"], lengths=np.array([1, 2]))
    >>> TokenRows.concat([rows, rows.take(np.array([1]))]).lengths.tolist()
    [1, 2, 2]
    >>> token_batching(object()) is None
    True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["TokenBatching", "TokenRows", "token_batching"]


@dataclasses.dataclass(frozen=True)
class TokenRows:
    """Tokenized rows: ``items`` are the backend's own per-row objects, ``lengths`` their token counts.

    Example:
        >>> TokenRows(items=["x"], lengths=np.array([3])).tokens
        3
    """

    items: list[Any]
    lengths: np.ndarray  # int64 [rows]: real tokens of each row, special tokens included

    def __len__(self) -> int:
        return len(self.items)

    @property
    def tokens(self) -> int:
        """Real tokens of all rows (what padding is measured against; what OpenAI ``usage`` reports)."""
        return int(self.lengths.sum())

    def take(self, index: np.ndarray) -> TokenRows:
        """The rows at ``index``, in that order."""
        return TokenRows(items=[self.items[i] for i in index.tolist()], lengths=self.lengths[index])

    @staticmethod
    def concat(parts: Sequence[TokenRows]) -> TokenRows:
        """The rows of ``parts``, one after the other."""
        if len(parts) == 1:
            return parts[0]
        items = [item for part in parts for item in part.items]
        return TokenRows(items=items, lengths=np.concatenate([p.lengths for p in parts]))


@runtime_checkable
class TokenBatching(Protocol):
    """A backend that tokenizes at the edge and runs batches of token rows (the text backend does)."""

    def tokenize(self, inputs: dict[str, np.ndarray]) -> TokenRows:
        """A request's validated inputs as token rows (SchemaError when a text cannot be taken)."""
        ...

    def run_tokens(self, rows: TokenRows) -> dict[str, np.ndarray]:
        """The outputs of ``rows`` (any selection of rows from any requests), padded to their longest."""
        ...


def token_batching(backend: Any) -> TokenBatching | None:
    """``backend`` as a :class:`TokenBatching`, or None when it does not declare the capability.

    Example:
        >>> token_batching(Model.load(minilm_dir).backend) is not None   # doctest: +SKIP
        True
    """
    return backend if isinstance(backend, TokenBatching) else None
