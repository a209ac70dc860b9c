"""The remote backend against the peer V2 servers (MLServer 1.7.1, Triton 2.51 via pytriton 0.7.0).

Marked ``peer``: the peers live in their own virtual environments under ``benchmarks/.peers/``
(created by ``benchmarks/serve_throughput.py``); without them these tests are skipped.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aimass import Model, ModelNotFound, RemoteError, Schema, SchemaError, TensorSpec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import serve_throughput as bench  # noqa: E402

pytestmark = [pytest.mark.peer, pytest.mark.slow]


def _peer(name: str) -> None:
    if not (bench.PEERS / name / "bin" / "python").exists():
        pytest.skip(f"peer environment benchmarks/.peers/{name} not installed (run benchmarks/serve_throughput.py)")


@pytest.fixture(scope="module")
def reference() -> Iterator[tuple[Model, dict[str, Any], Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        repo, coef = bench.build_logreg_onnx(Path(tmp))
        yield Model.load(repo / "logreg" / "1"), coef, Path(tmp)


def _started(server: bench.Server) -> None:
    """Wait for the peer; a peer that cannot start on this machine skips the test, with its log's end.

    The peer's start-up runs none of our code (it serves its own model), so a failure there says
    nothing about aimass; everything after it, our client against the running peer, is tested.
    """
    try:
        server.wait()
    except bench.ServerNotReady as e:
        server.stop()
        pytest.skip(f"peer {server.name} could not start here: {e}")


def _rows() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)


def test_against_mlserver(reference: tuple[Model, dict[str, Any], Path]) -> None:
    _peer("mlserver")
    local, _, work = reference
    server = bench.mlserver_server(work, parallel_workers=0)
    try:
        _started(server)
        base = f"http://127.0.0.1:{server.port}/v2/models"
        remote = Model.load(f"{base}/logreg")
        assert remote.schema.input_names == ["input"] and not remote.backend.binary_supported  # type: ignore[attr-defined]
        got = remote.predict(_rows())["predict_proba"]
        np.testing.assert_allclose(got, local.predict(_rows())["probabilities"], atol=1e-5)
        with pytest.raises(ModelNotFound):
            Model.load(f"{base}/ghost")
        # A wrong client-side schema lets a bad tensor reach the server: its refusal comes back typed.
        wrong = Schema(inputs=[TensorSpec(name="input", dtype="FP32", shape=[-1, 5])], outputs=[])
        with pytest.raises((SchemaError, RemoteError)):
            Model.load(f"{base}/logreg", schema=wrong).predict(np.zeros((1, 5), np.float32))
        np.testing.assert_allclose(remote.predict(_rows())["predict_proba"], got)  # still serving
    finally:
        server.stop()


def test_against_triton(reference: tuple[Model, dict[str, Any], Path]) -> None:
    _peer("pytriton")
    local, coef, work = reference
    server = bench.triton_server(coef, work)
    try:
        _started(server)
        base = f"http://127.0.0.1:{server.port}/v2/models"
        for threshold in (None, 0):  # JSON and binary tensors
            remote = Model.load(f"{base}/logreg", options={"binary_threshold": threshold})
            assert remote.schema.inputs[0].shape == [-1, 4]
            got = remote.predict(_rows())["probabilities"]
            np.testing.assert_allclose(got, local.predict(_rows())["probabilities"], atol=1e-5)
        assert remote.backend.binary_supported  # type: ignore[attr-defined]
        with pytest.raises(ModelNotFound):
            Model.load(f"{base}/ghost")
    finally:
        server.stop()
