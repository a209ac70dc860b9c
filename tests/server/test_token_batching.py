"""Token-aware batching of text models: order kept, padding waste bounded, answers equal to unbatched, one tokenization.

Tiny BERTs built in the test (tests/backends/cases.py) behind a real ServedModel and its Batcher;
requests of 1 to 8 texts of 1 to 40 words run concurrently and each answer is compared with the
model run on that request alone.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from cases import text_tokenizer, tiny_bert

from aimass import Model
from aimass.backends.tokens import TokenRows, token_batching
from aimass.errors import SchemaError
from aimass.frameworks.transformers.backend import TextBackend
from aimass.server.metrics import Metrics
from aimass.server.served import BatchingConfig, ServedModel
from aimass.server.token_batching import REQUEST_TOKENS, TokenMerging, plan_calls

pytest.importorskip("transformers")

WORDS = ["you", "are", "wonderful", "and", "kind", "i", "hate", "thanks", "for", "your", "help", "shut", "up"]
WORDS += ["what", "a", "stupid", "day", "zebra"]


def texts(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` texts of 1 to 40 words: lengths as varied as real sentences."""
    return [" ".join(rng.choice(WORDS, int(rng.integers(1, 41)))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> Any:
    return text_tokenizer()


@pytest.fixture(scope="module")
def encoder(tok: Any) -> Model:
    return Model.load(tiny_bert("encode", len(tok), seed=4), tokenizer=tok)


def served(model: Model, **batching: Any) -> ServedModel:
    return ServedModel(
        "m",
        "1",
        model,
        batching=BatchingConfig(**{"max_queue_delay": 0.005, **batching}),
        executor=ThreadPoolExecutor(2),
        metrics=Metrics().model("m", "1"),
    )


async def concurrently(s: ServedModel, requests: list[list[str]]) -> list[dict[str, np.ndarray]]:
    return list(await asyncio.gather(*(s.infer({"text": np.array(r, dtype=object)}) for r in requests)))


def test_plan_bounds_padding_and_tokens_and_covers_every_row() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        lengths = np.sort(rng.integers(1, 200, int(rng.integers(1, 80))))
        bound, limit = float(rng.choice([0.0, 0.1, 0.25, 0.5])), int(rng.choice([64, 512, 8192]))
        calls = plan_calls(lengths, max_padding=bound, max_tokens=limit)
        assert [a for a, _ in calls] == [0, *(b for _, b in calls[:-1])] and calls[-1][1] == len(lengths)
        for a, b in calls:
            padded, real = (b - a) * lengths[b - 1], lengths[a:b].sum()
            if b - a > 1:  # a call of one row pads nothing; only it may exceed the token limit
                assert padded - real <= bound * padded + 1e-9
                assert padded <= limit


def test_merged_answers_equal_unbatched_in_request_order(encoder: Model) -> None:
    rng = np.random.default_rng(1)
    requests = [texts(rng, int(rng.integers(1, 9))) for _ in range(24)]
    s = served(encoder)
    assert token_batching(encoder.backend) is not None and s.merging is not None
    got = asyncio.run(concurrently(s, requests))
    assert s.merging.calls < 24 * 4.5  # requests did merge (24 requests of 4.5 texts on average)
    for request, answer in zip(requests, got, strict=True):
        alone = encoder.predict(request)["embedding"]
        assert answer["embedding"].shape == alone.shape
        np.testing.assert_allclose(answer["embedding"], alone, atol=1e-5)
        cosine = (answer["embedding"] * alone).sum(axis=1)
        assert cosine.min() >= 0.9999


def test_padding_waste_is_bounded_and_below_plain_merging(encoder: Model) -> None:
    rng = np.random.default_rng(2)
    requests = [texts(rng, 1) for _ in range(48)]
    s = served(encoder, max_queue_delay=0.02)
    asyncio.run(concurrently(s, requests))
    merging = s.merging
    assert merging is not None
    waste = 1 - merging.real_tokens / merging.padded_tokens
    assert waste <= 0.25 + 1e-9
    # Plain merging pads every text to the longest of its batch: far more padding on these lengths.
    lengths = np.array([len(TextBackend.of(encoder).encoder.encode_rows(r)[0].ids) for r in requests])
    assert 1 - lengths.sum() / (lengths.max() * len(lengths)) > 2 * waste


def test_batch_limits_count_tokens(encoder: Model) -> None:
    rng = np.random.default_rng(3)
    requests = [texts(rng, 2) for _ in range(16)]
    s = served(encoder, max_batch_tokens=96)
    seen: list[int] = []
    run = s.batcher.fn if s.batcher else None
    assert run is not None

    def recording(rows: TokenRows) -> dict[str, np.ndarray]:
        seen.append(len(rows) * int(rows.lengths.max()))
        return run(rows)

    s.batcher.fn = recording  # type: ignore[union-attr]
    got = asyncio.run(concurrently(s, requests))
    single = [len(TextBackend.of(encoder).encoder.encode_rows([t])[0].ids) for r in requests for t in r]
    assert all(p <= 96 or p == max(single) for p in seen)  # only a lone row over the limit may pass it
    for request, answer in zip(requests, got, strict=True):
        np.testing.assert_allclose(answer["embedding"], encoder.predict(request)["embedding"], atol=1e-5)


class Counting:
    """A tokenizer that counts the texts it encodes (delegates to the real Rust tokenizer)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.texts = inner, 0

    def encode_batch(self, batch: list[str]) -> Any:
        self.texts += len(batch)
        return self.inner.encode_batch(batch)


def test_the_tokenizer_runs_once_per_text_and_counts_tokens(tok: Any) -> None:
    model = Model.load(tiny_bert("encode", len(tok), seed=4), tokenizer=tok)
    enc = TextBackend.of(model).encoder
    padded, unpadded = Counting(enc.tokenizer), Counting(enc.unpadded)
    enc.tokenizer, enc.unpadded = padded, unpadded
    rng = np.random.default_rng(4)
    requests = [texts(rng, int(rng.integers(1, 5))) for _ in range(12)]
    s = served(model)

    async def counted() -> list[int]:
        async def one(r: list[str]) -> int:
            REQUEST_TOKENS.set([0])
            await s.infer({"text": np.array(r, dtype=object)})
            box = REQUEST_TOKENS.get()
            assert box is not None
            return box[0]

        return list(await asyncio.gather(*(one(r) for r in requests)))

    tokens = asyncio.run(counted())
    assert unpadded.texts == sum(len(r) for r in requests) and padded.texts == 0
    assert tokens == [sum(len(e.ids) for e in unpadded.inner.encode_batch(r)) for r in requests]


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_classifiers_and_token_labels_merge_correctly(tok: Any, task: str) -> None:
    labels = ("O", "B-X", "I-X") if task == "tag" else ("friendly", "toxic")
    model = Model.load(tiny_bert(task, len(tok), labels=labels, seed=5), tokenizer=tok)
    rng = np.random.default_rng(5)
    requests = [texts(rng, int(rng.integers(1, 4))) for _ in range(10)]
    got = asyncio.run(concurrently(served(model), requests))
    for request, answer in zip(requests, got, strict=True):
        alone = model.predict(request)
        for name, want in alone.items():
            have = answer[name]
            if task == "tag":  # per-token outputs: as wide as the widest merged row, padded with ""
                assert (have[:, want.shape[1] :] == "").all()
                have = have[:, : want.shape[1]]
            if want.dtype == object:
                assert have.tolist() == want.tolist()
            else:
                np.testing.assert_allclose(have, want, atol=1e-5)


def test_overlong_text_without_truncation_is_a_schema_error(tok: Any) -> None:
    model = Model.load(
        tiny_bert("encode", len(tok), seed=4), tokenizer=tok, options={"truncation": False, "max_length": 8}
    )
    s = served(model)
    with pytest.raises(SchemaError, match="more than max_length 8"):
        asyncio.run(concurrently(s, [["a short one"], [" ".join(["kind"] * 20)]]))


def test_padding_to_max_length_still_answers_as_unbatched(tok: Any) -> None:
    net = tiny_bert("encode", len(tok), seed=4)
    model = Model.load(net, tokenizer=tok, options={"padding": "max_length", "max_length": 48})
    rng = np.random.default_rng(6)
    requests = [texts(rng, 3) for _ in range(6)]
    for request, answer in zip(requests, asyncio.run(concurrently(served(model), requests)), strict=True):
        np.testing.assert_allclose(answer["embedding"], model.predict(request)["embedding"], atol=1e-5)


def test_token_merging_knobs_are_checked() -> None:
    with pytest.raises(ValueError, match="max_batch_tokens"):
        TokenMerging(max_tokens=0)
    with pytest.raises(ValueError, match="max_padding"):
        TokenMerging(max_padding=1.0)
