"""The TensorRT backend.

On a machine without TensorRT or a GPU: detection by suffix without importing anything, the typed
errors (BackendUnavailable naming the extra, DeviceError), and the pure parts of engine building
(optimisation profiles, option validation, the engine cache key, type mapping). Tests marked
``gpu`` build and run real engines; they also need the ``tensorrt`` package.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import BackendUnavailable, DeviceError, DType, Model, ModelLoadError, SchemaError
from aimass.backends import detect, get_backend
from aimass.device import cuda_device_count
from aimass.frameworks.tensorrt.backend import BuildOptions, engine_cache_path, profile_shapes, tensor_dtype

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def test_registered_and_detected_by_suffix_without_importing_frameworks() -> None:
    code = (
        "import sys\n"
        "from aimass.backends import detect\n"
        "print(detect('m.engine').name, detect('M.PLAN').name, detect('m.onnx').name)\n"
        "print(sorted(m for m in ('tensorrt', 'torch', 'onnxruntime') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["tensorrt tensorrt onnx", "[]"]
    klass = get_backend("tensorrt")
    assert klass is detect("model.engine")
    assert klass.extra == "tensorrt" and klass.suffixes == (".engine", ".plan")


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed")
def test_without_tensorrt_loading_names_the_extra(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine, never read")
    with pytest.raises(
        BackendUnavailable, match=r"the tensorrt backend needs tensorrt: pip install 'aimass\[tensorrt\]'"
    ):
        Model.load(engine)
    onnx_path = models.onnx_mlp(tmp_path / "mlp.onnx")
    with pytest.raises(BackendUnavailable, match=r"aimass\[tensorrt\]") as info:
        Model.load(onnx_path, backend="tensorrt")
    assert info.value.extra == "tensorrt"
    assert not list(tmp_path.glob("mlp.*.engine"))  # nothing was built or cached


@pytest.mark.skipif(cuda_device_count() > 0, reason="a CUDA device is visible")
def test_on_cuda_without_a_gpu_says_no_device_is_visible(tmp_path: Path) -> None:
    engine = tmp_path / "m.plan"
    engine.write_bytes(b"never read")
    with pytest.raises(DeviceError, match="device 'cuda': no CUDA device is visible"):
        Model.load(engine, device="cuda")


# -- building: profiles, options, cache key ------------------------------------------------------


def test_profile_for_a_dynamic_batch_axis() -> None:
    build = BuildOptions(batch=(1, 8, 32))
    assert profile_shapes("x", [-1, 4], build) == ((1, 4), (8, 4), (32, 4))
    assert profile_shapes("x", [2, 4], build) == ((2, 4), (2, 4), (2, 4))  # static input


def test_profile_for_other_dynamic_axes_needs_explicit_shapes() -> None:
    with pytest.raises(ModelLoadError, match=r"input 'ids' has shape \[-1, -1\].*'shapes'"):
        profile_shapes("ids", [-1, -1], BuildOptions())
    build = BuildOptions.parse({"shapes": {"ids": [(1, 8), (16, 128), (64, 512)]}})
    assert profile_shapes("ids", [-1, -1], build) == ((1, 8), (16, 128), (64, 512))
    with pytest.raises(ModelLoadError, match=r"does not fit input 'ids' of shape \[-1, 7\]"):
        profile_shapes("ids", [-1, 7], build)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch": (8, 4, 16)}, "option batch="),
        ({"batch": 4}, "option batch="),
        ({"batch": (0, 1, 2)}, "option batch="),
        ({"shapes": {"x": [(1, 4), (8, 4)]}}, r"option shapes\['x'\]"),
        ({"shapes": {"x": [(1, 4), (8, 4), (4, 4)]}}, "min <= opt <= max"),
        ({"shapes": {"x": [(1, 4), (8,), (16, 4)]}}, "one rank"),
    ],
)
def test_bad_build_options_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        BuildOptions.parse(options)


def test_build_options_defaults_and_parse() -> None:
    build = BuildOptions.parse({"fp16": True, "batch": [2, 4, 8], "workspace": 1 << 30, "output": "device"})
    assert build == BuildOptions(fp16=True, batch=(2, 4, 8), workspace=1 << 30)
    assert BuildOptions.parse({}) == BuildOptions()
    assert BuildOptions().batch == (1, 64, 256)  # predict_batch's default batch_size (256) fits


def test_engine_cache_is_next_to_the_model_and_keyed_by_gpu_version_options_and_bytes() -> None:
    onnx_path = Path("models/mlp.onnx")
    base = engine_cache_path(onnx_path, b"model", "NVIDIA H100 80GB HBM3", "10.9.0.34", BuildOptions())
    assert base.parent == onnx_path.parent
    assert base.name.startswith("mlp.NVIDIA-H100-80GB-HBM3.trt10.9.0.34.") and base.suffix == ".engine"
    assert base == engine_cache_path(onnx_path, b"model", "NVIDIA H100 80GB HBM3", "10.9.0.34", BuildOptions())
    variants = [
        engine_cache_path(onnx_path, b"model", "NVIDIA A100-SXM4-40GB", "10.9.0.34", BuildOptions()),
        engine_cache_path(onnx_path, b"model", "NVIDIA H100 80GB HBM3", "10.10.0.31", BuildOptions()),
        engine_cache_path(onnx_path, b"model", "NVIDIA H100 80GB HBM3", "10.9.0.34", BuildOptions(fp16=True)),
        engine_cache_path(onnx_path, b"other", "NVIDIA H100 80GB HBM3", "10.9.0.34", BuildOptions()),
        engine_cache_path(onnx_path, b"model", "NVIDIA H100 80GB HBM3", "10.9.0.34", BuildOptions(batch=(1, 1, 8))),
    ]
    assert len({base, *variants}) == 6


def test_tensor_types() -> None:
    assert tensor_dtype("FLOAT", "x") is DType.FP32
    assert tensor_dtype("HALF", "x") is DType.FP16
    assert tensor_dtype("INT64", "x") is DType.INT64
    with pytest.raises(ModelLoadError, match="tensor 'y' has type BF16"):
        tensor_dtype("BF16", "y")


# -- on a GPU with TensorRT ----------------------------------------------------------------------

needs_trt = pytest.mark.skipif(not HAS_TRT, reason="tensorrt is not installed")


@pytest.mark.gpu
@needs_trt
def test_gpu_build_from_onnx_matches_onnxruntime_and_caches(tmp_path: Path) -> None:
    onnx_path = models.onnx_mlp(tmp_path / "mlp.onnx", hidden=32)
    x, _ = models.dataset(16)
    want = Model.load(onnx_path).predict(x)["y"]
    start = time.perf_counter()
    m = Model.load(onnx_path, backend="tensorrt", device="cuda", options={"batch": (1, 8, 32)})
    built_s = time.perf_counter() - start
    assert m.device == "cuda:0" and m.backend_name == "tensorrt"
    assert m.schema.inputs[0].shape == [-1, 4] and m.schema.outputs[0].shape == [-1, 3]
    np.testing.assert_allclose(m.predict(x)["y"], want, rtol=1e-3, atol=1e-3)
    (cached,) = tmp_path.glob("mlp.*.engine")
    stamp = cached.stat().st_mtime_ns
    again = Model.load(onnx_path, backend="tensorrt", device="cuda", options={"batch": (1, 8, 32)})
    assert cached.stat().st_mtime_ns == stamp, "the cached engine was rebuilt"
    np.testing.assert_allclose(again.predict(x)["y"], want, rtol=1e-3, atol=1e-3)
    with pytest.raises(SchemaError, match=r"input 'x': shape \[64, 4\] is outside the engine's optimisation profile"):
        m.predict(np.zeros((64, 4), np.float32))
    print(f"engine built in {built_s:.1f} s")


@pytest.mark.gpu
@needs_trt
def test_gpu_engine_file_package_device_io_and_fp16(tmp_path: Path) -> None:
    import torch

    onnx_path = models.onnx_mlp(tmp_path / "mlp.onnx", hidden=32)
    x, _ = models.dataset(8)
    want = Model.load(onnx_path).predict(x)["y"]
    m = Model.load(onnx_path, backend="tensorrt", device="cuda", options={"cache": False})
    assert not list(tmp_path.glob("mlp.*.engine"))
    engine = tmp_path / "mlp.engine"
    engine.write_bytes(m.backend.engine_bytes)  # type: ignore[attr-defined]
    from_file = Model.load(engine)
    np.testing.assert_allclose(from_file.predict(x)["y"], want, rtol=1e-3, atol=1e-3)
    reloaded = Model.load(m.save(tmp_path / "pkg"))
    np.testing.assert_allclose(reloaded.predict(x)["y"], want, rtol=1e-3, atol=1e-3)
    on_device = Model.load(engine, options={"output": "device"})
    out = on_device.predict(torch.from_numpy(x).cuda())["y"]
    assert isinstance(out, torch.Tensor) and out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=1e-3, atol=1e-3)
    half = Model.load(onnx_path, backend="tensorrt", device="cuda", options={"fp16": True, "cache": False})
    np.testing.assert_allclose(half.predict(x)["y"], want, rtol=0.05, atol=0.05)
    with pytest.raises(DeviceError, match="CUDA devices only"):
        m.to("cpu")
    with pytest.raises(ModelLoadError, match="QuantizeLinear"):
        Model.load(onnx_path, backend="tensorrt", device="cuda", options={"int8": True, "cache": False})
