"""The dynamic batcher on a real ONNX model: merging, splitting, limits, failure isolation."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import models
import numpy as np
import pytest
import serving

from aimass import Model
from aimass.errors import PredictionError
from aimass.server.batching import Batcher


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("batching") / "mlp.onnx"))


class Recorder:
    """Wraps a backend's run and records the row count of every call."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.calls: list[int] = []

    def __call__(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls.append(len(next(iter(inputs.values()))))
        return self.model.backend.run(inputs)


def _rows(n: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)}


def test_concurrent_requests_merge_and_each_gets_its_rows(mlp: Model) -> None:
    rec = Recorder(mlp)
    batcher = Batcher(rec, max_batch_size=16, max_queue_delay=0.05)
    requests = [_rows(1 + i % 3, i) for i in range(20)]

    async def run() -> list[dict[str, np.ndarray]]:
        return list(await asyncio.gather(*(batcher.submit(r) for r in requests)))

    results = asyncio.run(run())
    for req, out in zip(requests, results, strict=True):
        np.testing.assert_allclose(out["y"], mlp.predict(req)["y"], rtol=1e-6, atol=1e-6)
    assert sum(rec.calls) == sum(len(r["x"]) for r in requests)
    assert max(rec.calls) <= 16 and len(rec.calls) <= 5, rec.calls


def test_zero_delay_runs_a_lone_request_at_once(mlp: Model) -> None:
    rec = Recorder(mlp)
    batcher = Batcher(rec, max_batch_size=64, max_queue_delay=0.0)

    async def one() -> dict[str, np.ndarray]:
        return await asyncio.wait_for(batcher.submit(_rows(2, 0)), timeout=5)

    assert asyncio.run(one())["y"].shape == (2, 3)
    assert rec.calls == [2]


def test_inline_calls_still_merge_concurrent_requests(mlp: Model) -> None:
    # A tiny model runs on the event loop once its calls prove short; requests that arrive together
    # must still merge (run at once, each would end before the next one is read).
    rec = Recorder(mlp)
    batcher = Batcher(rec, max_batch_size=64, max_queue_delay=0.0, inline_below=1.0)

    async def run() -> list[dict[str, np.ndarray]]:
        for seed in range(batcher.placement.warmup):  # one at a time: proves the calls short
            await batcher.submit(_rows(1, seed))
        assert batcher.placement.inline
        rec.calls.clear()
        return list(await asyncio.gather(*(batcher.submit(_rows(1, i)) for i in range(32))))

    results = asyncio.run(run())
    for i, out in enumerate(results):
        np.testing.assert_allclose(out["y"], mlp.predict(_rows(1, i))["y"], rtol=1e-6, atol=1e-6)
    assert sum(rec.calls) == 32 and len(rec.calls) <= 2, rec.calls


def test_oversized_request_runs_alone_and_different_shapes_do_not_merge() -> None:
    calls: list[tuple[int, ...]] = []

    def double(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(inputs["x"].shape)
        return {"y": inputs["x"] * 2}

    batcher = Batcher(double, max_batch_size=4, max_queue_delay=0.02)

    async def run() -> list[dict[str, np.ndarray]]:
        reqs = [np.ones((10, 2)), np.ones((1, 3)), np.ones((1, 2)), np.ones((1, 3))]
        return list(await asyncio.gather(*(batcher.submit({"x": r}) for r in reqs)))

    out = asyncio.run(run())
    assert [o["y"].shape for o in out] == [(10, 2), (1, 3), (1, 2), (1, 3)]
    assert sorted(calls) == sorted([(10, 2), (2, 3), (1, 2)])


def test_a_failing_request_does_not_fail_its_neighbours(tmp_path: Path) -> None:
    model = Model.load(serving.onnx_reshape_fails(tmp_path / "f.onnx"))
    batcher = Batcher(model.backend.run, max_batch_size=16, max_queue_delay=0.05)

    async def run() -> list[object]:
        reqs = [np.ones((3, 4), np.float32), np.ones((1, 4), np.float32), np.ones((6, 4), np.float32)]
        return list(await asyncio.gather(*(batcher.submit({"x": r}) for r in reqs), return_exceptions=True))

    good, bad, good2 = asyncio.run(run())
    assert isinstance(good, dict) and good["y"].shape == (4, 3)
    assert isinstance(bad, PredictionError) and "cannot be reshaped" in str(bad)
    assert isinstance(good2, dict) and good2["y"].shape == (8, 3)


@pytest.mark.parametrize("n", [3, 4])
def test_outputs_without_batch_axis_are_refused_when_merged(n: int) -> None:
    batcher = Batcher(lambda d: {"total": np.array(d["x"].sum())}, max_batch_size=8, max_queue_delay=0.05)

    async def run() -> list[object]:
        return list(await asyncio.gather(*(batcher.submit({"x": np.ones((1, 2))}) for _ in range(n))))

    # Merged, the call is refused; each request then runs alone and gets its own (unsplit) answer
    # (equal halves failing alike must not pass for an input-independent failure).
    assert [float(o["total"]) for o in asyncio.run(run())] == [2.0] * n  # type: ignore[index]


def test_batcher_follows_the_event_loop(mlp: Model) -> None:
    batcher = Batcher(mlp.backend.run, max_batch_size=8)
    for seed in range(2):  # two asyncio.run calls: two loops, one after the other
        out = asyncio.run(batcher.submit(_rows(1, seed)))
        np.testing.assert_array_equal(out["y"], mlp.predict(_rows(1, seed))["y"])


def test_observer_sees_rows_waits_and_compute(mlp: Model) -> None:
    seen: list[tuple[int, int, float]] = []
    batcher = Batcher(
        mlp.backend.run, max_batch_size=8, max_queue_delay=0.05, observer=lambda r, w, c: seen.append((r, len(w), c))
    )

    async def run() -> None:
        await asyncio.gather(*(batcher.submit(_rows(2, i)) for i in range(4)))

    asyncio.run(run())
    assert seen and sum(r for r, _, _ in seen) == 8 and sum(n for _, n, _ in seen) == 4
    assert all(c >= 0 for _, _, c in seen)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue_delay": -1}, "max_queue_delay"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_bad_knobs(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Batcher(lambda d: d, **kwargs)  # type: ignore[arg-type]


def _gather_16(batcher: Batcher, requests: list[dict[str, np.ndarray]]) -> list[object]:
    async def run() -> list[object]:
        return list(await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True))

    return asyncio.run(run())


def test_a_model_failing_for_every_input_is_not_rerun_per_request() -> None:
    calls: list[int] = []

    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        raise PredictionError("device lost")

    # A long queue delay: all 16 requests merge into one call.
    batcher = Batcher(broken, max_batch_size=64, max_queue_delay=0.2)
    results = _gather_16(batcher, [_rows(1, i) for i in range(16)])
    assert calls[0] == 16, calls
    assert len(calls) <= 4, calls  # the merged call, one per half, one request alone: not 1 + 16
    assert all(isinstance(r, PredictionError) and str(r) == "device lost" for r in results), results


def test_halves_that_fail_alike_are_still_split_when_requests_succeed_alone(mlp: Model) -> None:
    # The model takes rows in multiples of 3 only, and says so by the merged size: halves of equal
    # size fail with the same message, yet each 3-row request succeeds alone.
    def threes(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(inputs["x"])
        if n % 3:
            raise PredictionError(f"cannot reshape {n} rows into threes")
        return mlp.backend.run(inputs)

    batcher = Batcher(threes, max_batch_size=64, max_queue_delay=0.2)
    sizes = [3, 2, 3, 2]  # merged 10; halves [3, 2] and [3, 2] fail alike
    requests = [_rows(n, i) for i, n in enumerate(sizes)]
    results = _gather_16(batcher, requests)
    for n, req, out in zip(sizes, requests, results, strict=True):
        if n == 3:
            assert isinstance(out, dict), out
            np.testing.assert_allclose(out["y"], mlp.predict(req)["y"], rtol=1e-6, atol=1e-6)
        else:
            assert isinstance(out, PredictionError) and str(out) == "cannot reshape 2 rows into threes"


def test_one_bad_request_among_16_is_found_by_bisection(mlp: Model) -> None:
    calls: list[int] = []
    bad_value = 1e6

    def picky(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        if (inputs["x"] == bad_value).any():
            raise PredictionError("input out of range")
        return mlp.backend.run(inputs)

    batcher = Batcher(picky, max_batch_size=64, max_queue_delay=0.2)
    requests = [_rows(1, i) for i in range(16)]
    requests[11] = {"x": np.full((1, 4), bad_value, np.float32)}
    results = _gather_16(batcher, requests)
    assert calls[0] == 16, calls
    assert len(calls) <= 2 * 4 + 1, calls  # O(log N), not 1 + 16
    for i, (req, out) in enumerate(zip(requests, results, strict=True)):
        if i == 11:
            assert isinstance(out, PredictionError) and str(out) == "input out of range"
        else:
            assert isinstance(out, dict), (i, out)
            np.testing.assert_allclose(out["y"], mlp.predict(req)["y"], rtol=1e-6, atol=1e-6)


def test_the_merged_call_error_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise PredictionError("kernel exploded")

    batcher = Batcher(broken, max_batch_size=64, max_queue_delay=0.2)
    with caplog.at_level(logging.WARNING, logger="aimass.batching"):
        _gather_16(batcher, [_rows(1, i) for i in range(16)])
    merged = [r for r in caplog.records if r.name == "aimass.batching" and "kernel exploded" in r.getMessage()]
    assert merged, caplog.records
    assert "16 requests" in merged[0].getMessage()
