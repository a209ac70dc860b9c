"""MXNet specifics beyond the conformance suite: the numpy alias restore, blocks, exported pairs, errors."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import DeviceError, Model, ModelLoadError
from aimass.frameworks.mxnet.backend import NUMPY_ALIASES, MXNetBackend, restore_numpy_aliases

if importlib.util.find_spec("mxnet") is None:
    pytest.skip("mxnet not installed", allow_module_level=True)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def mx() -> Any:
    from aimass.frameworks.mxnet.backend import import_mxnet

    return import_mxnet()


@pytest.fixture(scope="module")
def block(mx: Any) -> Any:
    return models.mxnet_mlp()


@pytest.mark.skipif(np.lib.NumpyVersion(np.__version__) < "1.24.0", reason="numpy < 1.24 still has the aliases")
def test_mxnet_does_not_import_without_the_aliases() -> None:
    # The reason the restore exists: if this starts passing, a fixed mxnet no longer needs it.
    proc = _python("import mxnet")
    assert proc.returncode != 0
    assert "AttributeError: module 'numpy' has no attribute" in proc.stderr


def test_alias_restore_is_confined_to_loading_an_mxnet_model() -> None:
    proc = _python(
        f"""
        import json, sys, types, warnings
        import numpy as np
        warnings.simplefilter("error")  # restoring must not trip numpy's deprecation warnings
        before = set(vars(np))
        import aimass, aimass.frameworks.mxnet.backend
        from aimass import Model
        from aimass.backends import detect
        detect("m-symbol.json")
        untouched = set(vars(np)) == before and "mxnet" not in sys.modules
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        import models
        warnings.simplefilter("default")
        model = Model.load(models.mxnet_mlp(), example_input=models.dataset(4)[0])
        # Importing mxnet also imports numpy submodules (numpy._core ...): count only non-module names.
        added = sorted(n for n in set(vars(np)) - before if not isinstance(getattr(np, n), types.ModuleType))
        print(json.dumps({{"untouched": untouched, "added": added,
                          "builtins": all(getattr(np, n) is getattr(__builtins__, n) for n in added),
                          "out": model.predict(models.dataset(2)[0])["output"].shape}}))
        """
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["untouched"], "importing aimass or detecting a file must not touch numpy or import mxnet"
    assert report["added"] == sorted(NUMPY_ALIASES)  # all six are missing from numpy 1.26
    assert report["builtins"]
    assert report["out"] == [2, 3]


def test_restore_sets_only_missing_names(mx: Any) -> None:
    assert restore_numpy_aliases() == []  # already restored in this process: nothing more to do
    assert np.int is int and np.bool is bool  # type: ignore[attr-defined]


def test_block_is_not_changed_and_outputs_match(mx: Any, block: Any) -> None:
    x = models.dataset(16, seed=3)[0]
    m = Model.load(block, example_input={"data": x})
    assert str(m.schema) == "(data: FP32 [-1, 4]) -> (output: FP32 [-1, 3])"
    assert not block._active, "the user's block must not be hybridized behind their back"
    np.testing.assert_allclose(m.predict(x)["output"], block(mx.nd.array(x)).asnumpy(), rtol=1e-6, atol=1e-6)


def test_multi_input_multi_output_block(mx: Any) -> None:
    class Mix(mx.gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.dense = mx.gluon.nn.Dense(2, in_units=3)

        def hybrid_forward(self, F: Any, a: Any, b: Any) -> Any:
            return self.dense(a) + b, F.sum(a, axis=1)

    net = Mix()
    net.initialize(mx.init.Xavier())
    a, b = np.ones((4, 3), np.float32), np.full((4, 2), 0.5, np.float32)
    m = Model.load(net, example_input={"a": a, "b": b})
    assert m.schema.input_names == ["a", "b"]
    assert m.schema.output_names == ["output_0", "output_1"]
    out = m.predict({"b": b, "a": a})
    raw = net(mx.nd.array(a), mx.nd.array(b))
    np.testing.assert_allclose(out["output_0"], raw[0].asnumpy(), rtol=1e-6)
    np.testing.assert_allclose(out["output_1"], np.full(4, 3.0, np.float32))


def test_exported_pair_needs_a_shape_and_finds_its_params(mx: Any, tmp_path: Path) -> None:
    symbol = models.mxnet_exported(tmp_path / "mlp")
    with pytest.raises(ModelLoadError, match="does not record its input shapes: pass example_input"):
        Model.load(symbol)
    # The params file with the highest epoch wins.
    (tmp_path / "mlp-0000.params").rename(tmp_path / "mlp-0007.params")
    x = models.dataset(5)[0]
    m = Model.load(symbol, example_input=x)
    assert m.backend_name == "mxnet"
    assert m.schema.input_names == ["data"]
    net = models.mxnet_mlp()  # same seed, same training: the block the pair was exported from
    np.testing.assert_allclose(m.predict(x)["output"], net(mx.nd.array(x)).asnumpy(), rtol=1e-5, atol=1e-6)
    (tmp_path / "mlp-0007.params").unlink()
    with pytest.raises(ModelLoadError, match=r"no mlp-NNNN.params beside 'mlp-symbol.json'"):
        Model.load(symbol, example_input=x)


def test_schema_names_must_match_the_symbol(mx: Any, tmp_path: Path) -> None:
    symbol = models.mxnet_exported(tmp_path / "mlp")
    with pytest.raises(ModelLoadError, match=r"symbol's inputs are \['data'\]; the schema names \['features'\]"):
        Model.load(symbol, example_input={"features": models.dataset(2)[0]})


def test_plain_block_and_other_objects_are_refused(mx: Any) -> None:
    class Eager(mx.gluon.Block):
        def forward(self, x: Any) -> Any:
            return x * 2

    with pytest.raises(ModelLoadError, match="a Gluon Block, not a HybridBlock"):
        Model.load(Eager(), example_input=np.zeros((1, 2), np.float32))
    with pytest.raises(ModelLoadError, match="needs a Gluon HybridBlock or a -symbol.json"):
        MXNetBackend.load(object())


def test_cuda_without_gpu_is_a_device_error(mx: Any, block: Any) -> None:
    if mx.context.num_gpus():
        pytest.skip("MXNet sees a GPU")
    # Model.load checks CUDA for every backend first; the backend's own check covers direct use.
    with pytest.raises(DeviceError, match=r"device 'cuda:0': MXNet sees 0 GPU"):
        MXNetBackend.load(block, device="cuda:0", example_input=models.dataset(2)[0])


def test_missing_mxnet_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from aimass import BackendUnavailable

    monkeypatch.setitem(sys.modules, "mxnet", None)  # as if not installed
    with pytest.raises(BackendUnavailable, match=r"mxnet backend needs mxnet: pip install 'aimass\[mxnet\]'"):
        MXNetBackend.load("missing-symbol.json")


def test_a_package_reads_only_the_params_its_manifest_lists(mx: Any, tmp_path: Path) -> None:
    # A params file dropped into a package later, with a higher epoch, used to win the glob and
    # change every prediction with no error: inside a package only listed (checksummed) files count.
    x = models.dataset(8)[0]
    Model.load(models.mxnet_mlp(), example_input=x).save(tmp_path / "pkg")
    expected = Model.load(tmp_path / "pkg").predict(x)["output"]
    saved = mx.nd.load(str(tmp_path / "pkg" / "model-0000.params"))
    mx.nd.save(str(tmp_path / "pkg" / "model-0001.params"), {k: v * 2 + 1 for k, v in saved.items()})
    np.testing.assert_array_equal(Model.load(tmp_path / "pkg").predict(x)["output"], expected)
    # Outside a package the exported pair still takes the highest epoch beside the symbol, as
    # documented, and that file does change the predictions.
    (tmp_path / "pkg" / "aimass.json").unlink()
    loose = Model.load(tmp_path / "pkg" / "model-symbol.json", example_input=x)
    assert not np.allclose(loose.predict(x)["output"], expected)
