"""Threads per model call: the plan from cores and instances, applied to ONNX, torch and text models."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import models
import numpy as np
import pytest
from cases import text_tokenizer, tiny_bert

from aimass import Model
from aimass.backends.threads import thread_limit
from aimass.frameworks.onnx.backend import OnnxBackend
from aimass.frameworks.transformers.backend import TextBackend
from aimass.server.compute import plan_compute
from aimass.server.metrics import Metrics
from aimass.server.served import BatchingConfig, ServedModel
from aimass.server.settings import ServerSettings


def served(model: Model, threads: int) -> ServedModel:
    return ServedModel(
        "m",
        "1",
        model,
        batching=BatchingConfig(threads_per_call=threads),
        executor=ThreadPoolExecutor(1),
        metrics=Metrics().model("m", "1"),
    )


def test_plan_shares_the_cores_between_calls() -> None:
    assert plan_compute(instances=2, cores=2).threads == 1
    assert plan_compute(instances=2, cores=16).threads == 8
    assert plan_compute(instances=4, cores=2).threads == 1
    assert plan_compute(instances=2, call_threads=3, cores=2).threads == 3
    assert "2 cores" in plan_compute(instances=2, cores=2).describe()
    config = BatchingConfig.from_settings(ServerSettings(instances=1, call_threads=0))
    assert config.threads_per_call == plan_compute(1).threads


def test_onnx_calls_get_their_threads_and_an_explicit_choice_stands(tmp_path: Path) -> None:
    path = models.onnx_mlp(tmp_path / "mlp.onnx")
    model = Model.load(path)
    s = served(model, 1)
    session = OnnxBackend.of(s.model).session
    assert session.get_session_options().intra_op_num_threads == 1
    assert OnnxBackend.of(model).session.get_session_options().intra_op_num_threads == 0  # the original is untouched
    x = np.ones((3, 4), np.float32)
    np.testing.assert_array_equal(s.model.predict(x)["y"], model.predict(x)["y"])
    chosen = Model.load(path, options={"session_options": {"intra_op_num_threads": 2}})
    assert served(chosen, 1).model is chosen


def test_text_and_torch_models_limit_their_network(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tok = text_tokenizer()
    model = Model.load(tiny_bert("encode", len(tok), seed=4), tokenizer=tok)
    before = torch.get_num_threads()
    try:
        assert thread_limit(model.backend) is not None
        served(model, 1)
        assert torch.get_num_threads() == 1  # torch keeps one setting per process
        onnx = model.convert("onnx", data=["a text"], repeats=0)
        limited = served(onnx, 1).model
        network = TextBackend.of(limited).network
        assert OnnxBackend.of(network).session.get_session_options().intra_op_num_threads == 1
        texts = ["you are kind", "thanks for your help and all of it"]
        np.testing.assert_allclose(limited.predict(texts)["embedding"], onnx.predict(texts)["embedding"], atol=1e-6)
    finally:
        torch.set_num_threads(before)


def test_the_server_limits_what_it_loads_and_serves_handed_models_as_they_are(tmp_path: Path) -> None:
    from aimass.server import create_app

    path = models.onnx_mlp(tmp_path / "mlp.onnx")
    handed = Model.load(path)
    app = create_app({"handed": handed, "loaded": path}, instances=2, call_threads=1, dashboard=False)
    loaded = app.repository.get("loaded", None).model
    assert OnnxBackend.of(loaded).session.get_session_options().intra_op_num_threads == 1
    assert app.repository.get("handed", None).model is handed
