"""Devices: the "no CUDA device" error for every backend, device-tensor inputs, output placement.

Without a GPU these tests check what a CPU machine can observe: the typed errors, the DLPack and
IOBinding code paths run on CPU tensors, autocast/compile on the CPU, and that the plain CPU path
is left unchanged. Tests marked ``gpu`` run the CUDA paths and are skipped when no GPU is visible.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import DeviceError, Model, ModelLoadError, SchemaError
from aimass.device import (
    DeviceInputs,
    check_device,
    cuda_device_count,
    device_tensor_dtype,
    input_validator,
    is_device_tensor,
    output_on_device,
    synchronize_producer,
)
from aimass.schema import Schema, TensorSpec

torch = pytest.importorskip("torch")

no_cuda = pytest.mark.skipif(cuda_device_count() > 0, reason="a CUDA device is visible")


# -- which devices exist -------------------------------------------------------------------------


def test_cpu_and_bad_device_strings() -> None:
    assert check_device("cpu") == ("cpu", 0)
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        check_device("tpu")
    with pytest.raises(DeviceError, match="index after ':' must be an integer"):
        check_device("cuda:x")


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", pytest.param("gpu", id="alias"), "cuda:3"])
def test_cuda_without_a_gpu_says_no_device_is_visible(device: str) -> None:
    with pytest.raises(DeviceError, match=rf"device '{device}': no CUDA device is visible \(.+\)"):
        check_device(device)


def test_empty_cuda_visible_devices_is_named_in_the_error() -> None:
    # Holds with or without a GPU: the driver hides every device when the variable is empty.
    code = (
        "from aimass.device import check_device\n"
        "try:\n    check_device('cuda')\nexcept Exception as e:\n    print(type(e).__name__, e)\n"
    )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("DeviceError device 'cuda': no CUDA device is visible"), out
    assert "CUDA_VISIBLE_DEVICES is set to an empty value" in out


def _onnx(tmp: Path) -> Model:
    return Model.load(models.onnx_mlp(tmp / "mlp.onnx"))


def _torch(tmp: Path) -> Model:
    return Model.load(models.torch_mlp(), example_input={"x": models.dataset(4)[0]})


def _xgboost(tmp: Path) -> Model:
    return Model.load(models.xgb_classifier())


def _keras(tmp: Path) -> Model:
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras not installed")
    return Model.load(models.keras_mlp())


def _mxnet(tmp: Path) -> Model:
    if importlib.util.find_spec("mxnet") is None:  # not importorskip: mxnet needs aimass's numpy shim first
        pytest.skip("mxnet not installed")
    return Model.load(models.mxnet_mlp(), example_input={"data": models.dataset(4)[0]})


BUILDERS: dict[str, Callable[[Path], Model]] = {
    "onnx": _onnx,
    "torch": _torch,
    "xgboost": _xgboost,
    "keras": _keras,
    "mxnet": _mxnet,
}


@no_cuda
@pytest.mark.parametrize("backend", list(BUILDERS))
def test_to_cuda_without_a_gpu_raises_for_every_backend(backend: str, tmp_path: Path) -> None:
    model = BUILDERS[backend](tmp_path)
    x = model.schema.example(batch=3)
    before = model.predict(x)
    with pytest.raises(DeviceError, match=r"device 'cuda': no CUDA device is visible"):
        model.to("cuda")
    with pytest.raises(DeviceError, match=r"device 'cuda:0': no CUDA device is visible"):
        model.to("cuda:0")
    after = model.predict(x)  # the CPU model is untouched
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


@no_cuda
def test_load_on_cuda_without_a_gpu_raises(tmp_path: Path) -> None:
    path = models.onnx_mlp(tmp_path / "mlp.onnx")
    with pytest.raises(DeviceError, match="no CUDA device is visible"):
        Model.load(path, device="cuda")
    with pytest.raises(DeviceError, match="no CUDA device is visible"):
        Model.load(models.xgb_classifier(), device="cuda:0")  # xgboost alone would fall back to the CPU


# -- options -------------------------------------------------------------------------------------


def test_output_option() -> None:
    assert output_on_device({"output": "device"}) is True
    assert output_on_device({"output": "numpy"}) is False
    assert output_on_device({}) is False
    with pytest.raises(ModelLoadError, match="option output='gpu'"):
        output_on_device({"output": "gpu"})


# -- device tensors: validated, kept where they are ----------------------------------------------

SCHEMA = Schema(
    inputs=[
        TensorSpec(name="x", dtype="FP32", shape=[-1, 4]),
        TensorSpec(name="scale", dtype="INT64", shape=[-1, 1]),
    ]
)


def test_device_tensor_detection_and_dtype() -> None:
    t = torch.zeros(2, 4)
    assert is_device_tensor(t, "cpu")
    assert not is_device_tensor(t, "cuda", 0)
    assert not is_device_tensor(np.zeros(2), "cpu")
    assert device_tensor_dtype(torch.zeros(1, dtype=torch.int64)) == np.dtype(np.int64)
    with pytest.raises(SchemaError, match="bfloat16"):
        device_tensor_dtype(torch.zeros(1, dtype=torch.bfloat16))
    synchronize_producer(t)  # a host tensor: nothing to wait for, no error


def test_device_inputs_keep_tensors_without_copy_and_coerce_the_rest() -> None:
    validate = DeviceInputs(SCHEMA, "cpu")
    x = torch.randn(3, 4)
    out = validate({"x": x, "scale": [[1], [2], [3]]})
    assert out["x"] is x  # the very tensor, no copy
    assert isinstance(out["scale"], np.ndarray) and out["scale"].dtype == np.int64
    # float64 -> float32 happens on the tensor's own device, as on the host
    cast = validate({"x": x.double(), "scale": np.ones((3, 1), np.int64)})["x"]
    assert isinstance(cast, torch.Tensor) and cast.dtype == torch.float32
    torch.testing.assert_close(cast, x)
    # numpy-only input takes Schema's own path
    plain = validate({"x": np.zeros((2, 4), np.float32), "scale": np.ones((2, 1), np.int64)})
    assert all(isinstance(v, np.ndarray) for v in plain.values())


def test_device_inputs_errors_name_tensor_expected_and_actual() -> None:
    validate = DeviceInputs(SCHEMA, "cpu")
    scale = np.ones((3, 1), np.int64)
    with pytest.raises(SchemaError) as info:
        validate({"x": torch.zeros(3, 5), "scale": scale})
    assert str(info.value) == "input 'x': expected FP32 shape [-1, 4], got float32 shape [3, 5] (cpu tensor)"
    assert info.value.tensor == "x"
    with pytest.raises(
        SchemaError, match=r"input 'scale': expected INT64 shape \[-1, 1\], got float32 .*float -> float"
    ):
        validate({"x": torch.zeros(3, 4), "scale": torch.zeros(3, 1)})
    with pytest.raises(SchemaError, match="missing input 'scale'"):
        validate({"x": torch.zeros(3, 4)})
    with pytest.raises(SchemaError, match="unexpected input 'extra'"):
        validate({"x": torch.zeros(3, 4), "scale": scale, "extra": torch.zeros(1)})


def test_cpu_models_keep_the_plain_validator_and_run(tmp_path: Path) -> None:
    from aimass.frameworks.onnx.backend import OnnxBackend
    from aimass.frameworks.torch.backend import TorchBackend

    onnx_model = _onnx(tmp_path)
    torch_model = _torch(tmp_path)
    for m in (onnx_model, torch_model):
        assert input_validator(m.backend) is m.schema.validator()
    assert onnx_model.backend.run.__func__ is OnnxBackend._run_direct  # type: ignore[attr-defined]
    assert torch_model.backend.run.__func__ is TorchBackend.run  # type: ignore[attr-defined]


# -- onnxruntime: IOBinding and device outputs, run on the CPU -----------------------------------


def test_onnx_io_binding_and_device_output_match_plain_run(tmp_path: Path) -> None:
    path = models.onnx_mlp(tmp_path / "mlp.onnx")
    x, _ = models.dataset(6)
    expected = Model.load(path).predict(x)["y"]
    bound = Model.load(path, options={"io_binding": True})
    np.testing.assert_array_equal(bound.predict(x)["y"], expected)
    on_device = Model.load(path, options={"output": "device"})
    value = on_device.predict(x)["y"]
    assert not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__")  # an OrtValue
    np.testing.assert_array_equal(torch.from_dlpack(value).numpy(), expected)
    # a DLPack tensor handed to the backend is bound as it is
    direct = on_device.backend.run({"x": torch.from_numpy(x)})["y"]
    np.testing.assert_array_equal(torch.from_dlpack(direct).numpy(), expected)


def test_onnx_two_inputs_through_io_binding(tmp_path: Path) -> None:
    path = models.onnx_two_inputs(tmp_path / "two.onnx")
    m = Model.load(path, options={"io_binding": True})
    inputs = m.schema.example(batch=3)
    inputs["scale"] = np.arange(3, dtype=np.int64).reshape(3, 1)
    np.testing.assert_array_equal(m.predict(inputs)["y"], inputs["x"] * inputs["scale"])


# -- torch: autocast, compile, device outputs, run on the CPU ------------------------------------


@pytest.fixture(scope="module")
def torch_net() -> object:
    return models.torch_mlp(hidden=32)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_torch_autocast_outputs_keep_schema_dtype(torch_net: object, amp: str) -> None:
    x, _ = models.dataset(16)
    plain = Model.load(torch_net, example_input={"x": x})
    fast = Model.load(torch_net, example_input={"x": x}, options={"autocast": amp})
    got, want = fast.predict(x)["output"], plain.predict(x)["output"]
    assert got.dtype == np.float32 and fast.schema == plain.schema
    assert not np.array_equal(got, want)  # it did run in reduced precision ...
    np.testing.assert_allclose(got, want, atol=0.15, rtol=0.05)  # ... close to fp32


def test_torch_bad_autocast_is_refused(torch_net: object) -> None:
    with pytest.raises(ModelLoadError, match="option autocast='int4'"):
        Model.load(torch_net, example_input={"x": models.dataset(2)[0]}, options={"autocast": "int4"})


def test_torch_compile_flag_and_device_output(torch_net: object) -> None:
    x, _ = models.dataset(5)
    want = Model.load(torch_net, example_input={"x": x}).predict(x)["output"]
    compiled = Model.load(torch_net, example_input={"x": x}, options={"compile": {"backend": "eager"}})
    assert type(compiled.backend._forward).__name__ == "OptimizedModule"
    np.testing.assert_allclose(compiled.predict(x)["output"], want, rtol=1e-6, atol=1e-6)
    kept = Model.load(torch_net, example_input={"x": x}, options={"output": "device"}).predict(x)["output"]
    assert isinstance(kept, torch.Tensor) and kept.device.type == "cpu"
    np.testing.assert_array_equal(kept.numpy(), want)


# -- on a GPU ------------------------------------------------------------------------------------

ort_cuda = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None
    or "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers(),
    reason="onnxruntime without CUDAExecutionProvider",
)


@pytest.mark.gpu
def test_gpu_torch_to_cuda_matches_cpu_and_leaves_the_cpu_model_alone(torch_net: object) -> None:
    x, _ = models.dataset(8)
    cpu = Model.load(torch_net, example_input={"x": x})
    want = cpu.predict(x)["output"]
    gpu = cpu.to("cuda")
    assert gpu.device == "cuda"
    np.testing.assert_allclose(gpu.predict(x)["output"], want, rtol=1e-4, atol=1e-4)
    assert next(cpu.backend.module.parameters()).device.type == "cpu"  # to() copied, did not move
    np.testing.assert_array_equal(cpu.predict(x)["output"], want)
    xt = torch.from_numpy(x).cuda()
    # Model.load(module, device="cuda") moves the module it is given: give it copies
    kept = Model.load(copy.deepcopy(torch_net), example_input={"x": x}, device="cuda", options={"output": "device"})
    out = kept.predict(xt)["output"]
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=1e-4, atol=1e-4)
    half = Model.load(copy.deepcopy(torch_net), example_input={"x": x}, device="cuda", options={"autocast": "fp16"})
    np.testing.assert_allclose(half.predict(xt)["output"], want, atol=0.05, rtol=0.05)


@pytest.mark.gpu
@ort_cuda
def test_gpu_onnx_binds_cuda_tensors_in_place(tmp_path: Path) -> None:
    path = models.onnx_mlp(tmp_path / "mlp.onnx")
    x, _ = models.dataset(8)
    want = Model.load(path).predict(x)["y"]
    gpu = Model.load(path, device="cuda", options={"tensorrt": False})
    assert gpu.backend.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(gpu.predict(x)["y"], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gpu.predict(torch.from_numpy(x).cuda())["y"], want, rtol=1e-4, atol=1e-4)
    kept = Model.load(path, device="cuda", options={"output": "device", "tensorrt": False}).predict(x)["y"]
    t = torch.from_dlpack(kept)
    assert t.is_cuda
    np.testing.assert_allclose(t.cpu().numpy(), want, rtol=1e-4, atol=1e-4)
