"""Text in, token ids out: a fast (Rust) tokenizer read from ``tokenizer.json``.

:class:`TextEncoder` holds a ``tokenizers.Tokenizer`` with the truncation and padding the model
was configured with; it is built from a transformers ``PreTrainedTokenizerFast`` or from the
``tokenizer.json`` file such a tokenizer saves (pure data: loading it runs no code).

Example:
    >>> enc = TextEncoder.from_file("pkg/tokenizer.json", pad_token="[PAD]", max_length=128)  # doctest: +SKIP
    >>> ids, mask, _ = enc.encode(["a friendly post"])                                        # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aimass.dependencies import require_framework
from aimass.errors import ModelLoadError

__all__ = ["PADDING", "TextEncoder"]

PADDING = ("longest", "max_length")


def _tokenizers() -> Any:
    return require_framework("tokenizers", backend="transformers", extra="transformers")


class TextEncoder:
    """A fast tokenizer with fixed truncation and padding; ``encode`` is safe to call from many threads.

    ``padding="longest"`` pads each batch to its longest text, ``"max_length"`` to ``max_length``.

    Example:
        >>> enc = TextEncoder.from_pretrained(tok, max_length=64)   # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        pad_token: str | None,
        max_length: int,
        truncation: bool = True,
        padding: str = "longest",
    ) -> None:
        if padding not in PADDING:
            raise ModelLoadError(f"option padding={padding!r}: use one of {list(PADDING)}")
        if max_length < 2:
            raise ModelLoadError(f"option max_length={max_length}: must be at least 2")
        self.tokenizer = tokenizer
        self.pad_token = pad_token
        self.max_length = int(max_length)
        self.truncation = bool(truncation)
        self.padding = padding
        self.pad_id = 0
        if pad_token is not None:
            pad_id = tokenizer.token_to_id(pad_token)
            if pad_id is None:
                raise ModelLoadError(f"the tokenizer's pad token {pad_token!r} is not in its vocabulary")
            self.pad_id = int(pad_id)
        # The settings live on the Rust object; set them once here, never while encode() may run.
        if self.truncation:
            tokenizer.enable_truncation(self.max_length)
        else:
            tokenizer.no_truncation()
        length = self.max_length if padding == "max_length" else None
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token=pad_token or "[PAD]", length=length)
        # The same tokenizer without padding, for token batching: each text's own tokens, padded
        # later with the rows it is batched with (pad()).
        self.unpadded = _tokenizers().Tokenizer.from_str(tokenizer.to_str())
        self.unpadded.no_padding()

    @classmethod
    def from_pretrained(cls, tokenizer: Any, **settings: Any) -> TextEncoder:
        """From a transformers fast tokenizer (its Rust tokenizer is copied, the original is untouched)."""
        tk = _tokenizers()
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ModelLoadError(
                f"{type(tokenizer).__name__} is not a fast tokenizer: aimass serves text models with a fast "
                "(Rust) tokenizer, saved as tokenizer.json; load one with "
                "AutoTokenizer.from_pretrained(..., use_fast=True)"
            )
        pad = settings.pop("pad_token", getattr(tokenizer, "pad_token", None))
        max_length = settings.pop("max_length", None) or _sane_length(getattr(tokenizer, "model_max_length", None))
        return cls(tk.Tokenizer.from_str(backend.to_str()), pad_token=pad, max_length=max_length or 512, **settings)

    @classmethod
    def from_file(cls, path: Path, **settings: Any) -> TextEncoder:
        """From a ``tokenizer.json`` file (data only: reading it runs no code)."""
        tk = _tokenizers()
        try:
            tokenizer = tk.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust parser reports malformed files as plain Exceptions
            raise ModelLoadError(f"{path.name!r} is not a tokenizer file tokenizers can read: {e}") from e
        return cls(tokenizer, **settings)

    def settings(self) -> dict[str, Any]:
        """What a package records to rebuild this encoder from its ``tokenizer.json``."""
        return {
            "pad_token": self.pad_token,
            "max_length": self.max_length,
            "truncation": self.truncation,
            "padding": self.padding,
        }

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    def encode(self, batch: list[str]) -> tuple[np.ndarray, np.ndarray, list[Any]]:
        """``(input_ids, attention_mask, encodings)``: int64 arrays ``[batch, tokens]`` and the Rust encodings."""
        encodings = self.tokenizer.encode_batch(batch)
        if not encodings:
            empty = np.zeros((0, 0), dtype=np.int64)
            return empty, empty, []
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask, encodings

    def encode_rows(self, batch: list[str]) -> list[Any]:
        """Each text's encoding, truncated but not padded: its own tokens only (for token batching).

        Example:
            >>> [len(e.ids) for e in enc.encode_rows(["hi", "a longer text"])]   # doctest: +SKIP
            [3, 5]
        """
        return list(self.unpadded.encode_batch(batch))

    def pad(self, encodings: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)`` of unpadded ``encodings``, padded as :meth:`encode` pads (right side).

        Example:
            >>> ids, mask = enc.pad(enc.encode_rows(["hi", "a longer text"]))   # doctest: +SKIP
        """
        longest = max((len(e.ids) for e in encodings), default=0)
        width = self.max_length if self.padding == "max_length" else longest
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            n = len(e.ids)
            ids[i, :n] = e.ids
            mask[i, :n] = e.attention_mask
        return ids, mask


def _sane_length(value: Any) -> int | None:
    # transformers uses a huge sentinel (int(1e30)) for "no limit recorded".
    return int(value) if isinstance(value, int) and 0 < value <= 1_000_000 else None
