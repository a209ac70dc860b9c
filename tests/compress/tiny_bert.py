"""A tiny BERT sentence encoder with three token inputs, built from a config (no hub), and token batches for it."""

from __future__ import annotations

from typing import Any

import numpy as np

VOCAB = 500


def encoder(layers: int = 2, hidden: int = 32, heads: int = 2, seed: int = 0, init: float = 0.02) -> Any:
    """``(input_ids, attention_mask, token_type_ids) -> mean-pooled embedding``, as a user wraps a BERT.

    ``init`` is the weights' standard deviation: above BERT's 0.02, each layer changes its input
    more, as trained layers do (a random BERT's layers are nearly the identity).
    """
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        initializer_range=init,
    )
    bert = BertModel(config, add_pooling_layer=False).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    return Encoder().eval()


def tokens(n: int, seq: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Token batches like tokenized sentences: [CLS] first, padded tails of varied length, masks 0/1."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(seq)[None, :] < rng.integers(3, seq + 1, size=n)[:, None]).astype(np.int64)
    ids = rng.integers(5, VOCAB, size=(n, seq)).astype(np.int64) * mask
    ids[:, 0] = 2
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask)}
