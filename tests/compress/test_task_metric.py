"""Task metrics users judge: recall@k of nearest neighbours for embeddings, before and after compression."""

from __future__ import annotations

import numpy as np
import pytest

from aimass.measure import recall_at_k, score_outputs


def _brute_recall(e: np.ndarray, y: np.ndarray, k: int) -> float:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    hits = []
    for i in range(len(e)):
        if (y == y[i]).sum() < 2:
            continue
        sims = [(float(e[i] @ e[j]), j) for j in range(len(e)) if j != i]
        top = [j for _, j in sorted(sims, reverse=True)[:k]]
        hits.append(any(y[j] == y[i] for j in top))
    return float(np.mean(hits))


def test_recall_at_k_matches_its_definition() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((8, 16))
    y = rng.integers(0, 8, size=60)
    e = centres[y] + 0.9 * rng.standard_normal((60, 16))
    for k in (1, 3, 10):
        assert recall_at_k(e, y, k) == pytest.approx(_brute_recall(e, y, k))
    with pytest.raises(ValueError, match="shared by at least two rows"):
        recall_at_k(e[:3], np.array([0, 1, 2]), 1)


def test_group_labels_of_embeddings_score_recall_not_accuracy() -> None:
    e = np.random.default_rng(1).standard_normal((20, 4)).astype(np.float32)
    groups = np.repeat(np.arange(10) + 100, 2)  # labels larger than the width: not class columns
    name, value, higher = score_outputs({"e": e}, groups)
    assert name == "recall@10" and higher and value == pytest.approx(_brute_recall(e, groups, 10))
    name, _, _ = score_outputs({"e": e}, groups % 4, metric="recall@3")
    assert name == "recall@3"
    assert score_outputs({"e": e}, groups % 4)[0] == "accuracy"  # small integers read as classes by default
    with pytest.raises(ValueError, match="metric must be"):
        score_outputs({"e": e}, groups, metric="f1")


def test_compress_reports_recall_before_and_after() -> None:
    torch = pytest.importorskip("torch")
    from aimass import Model

    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    groups = np.repeat(np.arange(20), 3)  # 20 groups of 3 near-duplicates (paraphrases of one sentence)
    x = (rng.standard_normal((20, 8))[groups] + 0.3 * rng.standard_normal((60, 8))).astype(np.float32)
    m = Model.load(torch.nn.Sequential(torch.nn.Linear(8, 16)).eval(), example_input={"input": x[:2]})
    q = m.compress("fp16", data=x, labels=groups, metric="recall@1", repeats=0)
    r = q.report
    assert r.metric == "recall@1" and r.higher_is_better
    assert r.metric_before == pytest.approx(recall_at_k(m.predict(x)["output"], groups, 1))
    assert r.metric_after == pytest.approx(recall_at_k(q.predict(x)["output"], groups, 1))
