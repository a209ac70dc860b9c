"""Conversion to ONNX and TFLite: loaded back through aimass, same names, checked numerically, loud when off."""

from __future__ import annotations

from pathlib import Path

import models
import numpy as np
import pytest

from aimass import ConversionError, Model, UnsupportedOperation
from aimass.compress.report import Report
from aimass.convert import convert
from aimass.convert.check import check
from aimass.measure import Drift
from aimass.package import verify

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return models.dataset(64, seed=11)[0]


def _saved_size(model: Model, path: Path) -> int:
    pkg = model.save(path)
    return sum((pkg / a.path).stat().st_size for a in verify(pkg).artifacts)


def _assert_report_is_real(source: Model, converted: Model, x: np.ndarray, tmp_path: Path) -> None:
    """Schema is a drop-in swap; every output's error and tolerance in the report are recomputed here."""
    assert [(t.name, t.dtype) for t in converted.schema.inputs] == [(t.name, t.dtype) for t in source.schema.inputs]
    assert [(t.name, t.dtype) for t in converted.schema.outputs] == [(t.name, t.dtype) for t in source.schema.outputs]
    a, b = source.predict(x), converted.predict(x)
    r = converted.report
    assert r.operation == "convert" and r.backend_before == source.backend_name
    assert [d.output for d in r.drift] == source.schema.output_names
    for d in r.drift:
        assert b[d.output].shape == a[d.output].shape and b[d.output].dtype == a[d.output].dtype
        err = float(np.max(np.abs(a[d.output].astype(np.float64) - b[d.output].astype(np.float64))))
        assert d.max_abs_error == pytest.approx(err, rel=1e-6, abs=1e-12)
        if a[d.output].dtype.kind == "f":
            assert d.tolerance == pytest.approx(r.atol + r.rtol * float(np.abs(a[d.output]).max()))
        else:
            assert d.tolerance == 0.0
        assert d.max_abs_error <= d.tolerance
    assert r.size_after == _saved_size(converted, tmp_path / "c")
    assert r.size_before == _saved_size(source, tmp_path / "s")


def test_torch_to_onnx_with_dynamic_batch(x: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    source = Model.load(models.torch_mlp(), example_input={"x": x[:4]})
    o = source.convert("onnx", data=x, repeats=2)
    assert o.backend_name == "onnx" and source.backend_name == "torch"
    assert o.schema.inputs[0].shape[0] == -1
    _assert_report_is_real(source, o, x, tmp_path)
    for n in (1, 7):  # the batch axis stays dynamic
        np.testing.assert_allclose(o.predict(x[:n])["output"], source.predict(x[:n])["output"], atol=1e-5)
    # Saved and reloaded, it is a plain onnx package.
    reloaded = Model.load(o.save(tmp_path / "pkg"))
    np.testing.assert_array_equal(reloaded.predict(x)["output"], o.predict(x)["output"])


@pytest.mark.parametrize("builder", ["xgb_classifier", "xgb_binary", "xgb_regressor"])
def test_xgboost_to_onnx_keeps_names_and_shapes(builder: str, x: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    pytest.importorskip("onnxmltools")
    source = Model.load(getattr(models, builder)())
    o = convert(source, "onnx", data=x, repeats=0)
    assert o.schema.output_names == source.schema.output_names  # "variable" renamed to "prediction"
    assert [t.shape for t in o.schema.outputs] == [t.shape for t in source.schema.outputs]
    _assert_report_is_real(source, o, x, tmp_path)


def test_keras_to_onnx_and_tflite(x: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    pytest.importorskip("ai_edge_litert")
    source = Model.load(models.keras_mlp())
    o = source.convert("onnx", data=x, repeats=0)
    assert o.backend_name == "onnx"
    _assert_report_is_real(source, o, x, tmp_path / "onnx")
    t = source.convert("tflite", data=x, repeats=2)
    assert t.backend_name == "tflite"
    _assert_report_is_real(source, t, x, tmp_path / "tflite")
    assert t.report.size_after == len(t.backend.model_bytes)


def test_savedmodel_to_tflite(x: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    source = Model.load(models.keras_savedmodel(tmp_path / "sm"))
    t = source.convert("tflite", data=x, repeats=0)
    _assert_report_is_real(source, t, x, tmp_path / "t")


def test_outputs_that_differ_fail_loudly_with_the_report(x: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")

    class Noisy(torch.nn.Module):
        """Adds fresh noise on every call: torch and onnxruntime draw different numbers."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.rand_like(x)

    source = Model.load(Noisy(), example_input={"x": x[:4]})
    with pytest.raises(ConversionError, match="differ from the source") as info:
        source.convert("onnx", data=x, repeats=0)
    report = info.value.report
    assert report is not None and not report.drift[0].passed
    assert report.drift[0].max_abs_error > report.drift[0].tolerance
    # Tolerance is the caller's to set: a loose one lets the same conversion through.
    ok = source.convert("onnx", data=x, repeats=0, atol=1.0)
    # max |source output| is itself random here: between max |x| and max |x| + 1.
    assert (
        1.0 + 1e-3 * float(np.abs(x).max()) <= ok.report.drift[0].tolerance <= 1.0 + 1e-3 * float(np.abs(x).max() + 1)
    )


def test_check_names_every_output_over_tolerance() -> None:
    report = Report(
        operation="convert",
        method="onnx",
        backend_before="torch",
        backend_after="onnx",
        size_before=10,
        size_after=5,
        drift=[
            Drift(output="a", max_abs_error=0.5, mean_abs_error=0.1, tolerance=0.1),
            Drift(output="b", max_abs_error=0.0, mean_abs_error=0.0, tolerance=0.1),
        ],
    )
    with pytest.raises(ConversionError, match=r"'a': max abs error 0.5 > tolerance 0.1") as info:
        check(report)
    assert "'b'" not in str(info.value).splitlines()[0] and info.value.report is report


def test_unsupported_pairs_say_what_is_supported(tmp_path: Path) -> None:
    onnx_model = Model.load(models.onnx_mlp(tmp_path / "m.onnx"))
    with pytest.raises(UnsupportedOperation, match="already runs on the onnx backend"):
        onnx_model.convert("onnx")
    with pytest.raises(UnsupportedOperation, match=r"no maintained torch/onnx -> TFLite converter.*torch -> onnx"):
        onnx_model.convert("tflite")
    pytest.importorskip("xgboost")
    with pytest.raises(UnsupportedOperation, match="supported: "):
        Model.load(models.xgb_binary()).convert("tflite")


@pytest.mark.filterwarnings("ignore:`torch.jit.(script|load)` is deprecated:DeprecationWarning")
def test_exported_programs_convert_and_torchscript_fails_loudly(x: np.ndarray, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    program = torch.export.export(
        models.torch_mlp(), (torch.from_numpy(x[:4]),), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    torch.export.save(program, str(tmp_path / "mlp.pt2"))
    source = Model.load(tmp_path / "mlp.pt2")
    _assert_report_is_real(source, source.convert("onnx", data=x, repeats=0), x, tmp_path / "pt2")
    torch.jit.script(models.torch_mlp()).save(str(tmp_path / "mlp.ts"))
    scripted = Model.load(tmp_path / "mlp.ts", example_input=x[:4], trust_code=True)
    with pytest.raises(ConversionError, match=r"torch\.onnx\.export failed"):
        scripted.convert("onnx", repeats=0)
