"""The transformer path end to end on a tiny BERT (2 layers, 64 hidden): torch -> ONNX -> dynamic int8."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from compress_checks import assert_drift_is_real, saved_size

from aimass import Model

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")


def _tiny_encoder() -> Any:
    return models.bert_sentence_encoder(
        vocab_size=1000,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
    )


def _tokens(n: int, seq: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = (np.arange(seq)[None, :] < rng.integers(4, seq + 1, size=n)[:, None]).astype(np.int64)
    return {"input_ids": rng.integers(1, 1000, size=(n, seq), dtype=np.int64) * mask, "attention_mask": mask}


@pytest.mark.slow
def test_tiny_bert_to_onnx_then_int8(tmp_path: Path) -> None:
    data = _tokens(48)
    source = Model.load(_tiny_encoder(), example_input=_tokens(2, seed=1))
    onnx_model = source.convert("onnx", data=data, repeats=0)
    assert onnx_model.schema.input_names == ["input_ids", "attention_mask"]
    assert onnx_model.report.max_abs_error < 1e-4
    q = onnx_model.compress("int8", data=data, repeats=2)
    r = q.report
    assert r.size_before == saved_size(onnx_model, tmp_path / "f") and r.size_after == saved_size(q, tmp_path / "q")
    assert r.size_ratio > 2.5  # int8 MatMul weights and int8 embedding tables
    assert_drift_is_real(onnx_model, q, data, "output")
    assert r.drift[0].cosine > 0.99
    assert q.predict(_tokens(1, seed=5))["output"].shape == (1, 64)  # batch 1 still runs
