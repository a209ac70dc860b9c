"""GPU: ``Model.predict`` on CUDA against the raw framework call, and CPU against GPU for a transformer.

Sections (each side interleaved round by round with its reference, medians and ratios printed by
``overhead.compare``):

1. torch MLP 256-1024-1024-256 on CUDA: numpy in/out, then CUDA tensors in/out (``output="device"``).
2. onnxruntime CUDA EP, same MLP: raw ``InferenceSession.run`` against ours (IOBinding).
3. TensorRT (when ``tensorrt`` is installed): the same ONNX file as an engine, fp32 and fp16.
4. The compression benchmark's sentence encoder (BERT 6 layers x 384, mean pooling; batch 8,
   sequence 128): CPU against CUDA, and CUDA with fp16 autocast.

Without a CUDA GPU it prints why and exits with status 2; nothing is measured.

Run:  .venv/bin/python benchmarks/gpu.py [--rounds 20] [--calls 200]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from compress import build_encoder, sentences  # the compression benchmark's encoder and inputs
from overhead import compare, onnx_mlp_large  # same timing method and model as the CPU overhead figures

from aimass import DeviceError, Model
from aimass.device import check_device


def _no_gpu(why: str) -> None:
    print(f"benchmarks/gpu.py needs a CUDA GPU and measured nothing: {why}", file=sys.stderr)
    sys.exit(2)


def torch_mlp_large() -> Any:
    """The 256-1024-1024-256 MLP of ``overhead.onnx_mlp_large`` as a torch module."""
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(256, 1024, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 1024, bias=False),
        torch.nn.ReLU(),
        torch.nn.Linear(1024, 256, bias=False),
    ).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    try:
        check_device("cuda")
    except DeviceError as e:
        _no_gpu(str(e))
    import torch

    if not torch.cuda.is_available():
        _no_gpu("the driver sees a GPU but this torch is a CPU build")
    dev = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name(0)}; CPU: {platform.processor() or platform.machine()}")
    print(f"torch {torch.__version__}, python {platform.python_version()}")
    timing = {"rounds": args.rounds, "calls": args.calls}

    def synced(fn: Any) -> Any:
        def call() -> None:
            fn()
            torch.cuda.synchronize()

        return call

    # 1. torch on CUDA
    x = np.random.default_rng(0).standard_normal((64, 256)).astype(np.float32)
    net = torch_mlp_large().to(dev)
    ours = Model.load(net, example_input={"input": x}, device="cuda")

    def raw_numpy() -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = net(torch.from_numpy(x).to(dev)).cpu().numpy()
            return out

    compare("torch MLP on CUDA, batch 64, numpy in/out", raw_numpy, lambda: ours.predict(x), **timing)
    xt = torch.from_numpy(x).to(dev)
    kept = Model.load(net, example_input={"input": x}, device="cuda", options={"output": "device"})

    def raw_device() -> None:
        with torch.inference_mode():
            net(xt)

    compare("torch MLP on CUDA, CUDA tensors in/out", synced(raw_device), synced(lambda: kept.predict(xt)), **timing)

    # 2. onnxruntime CUDA EP
    tmp = Path(tempfile.mkdtemp())
    onnx_path = onnx_mlp_large(tmp / "mlp.onnx")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        om = Model.load(onnx_path, device="cuda", options={"tensorrt": False})
        sess = ort.InferenceSession(str(onnx_path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        compare(
            "onnxruntime CUDA EP, batch 64, numpy in/out",
            lambda: sess.run(["y"], {"x": x}),
            lambda: om.predict(x),
            **timing,
        )
        okept = Model.load(onnx_path, device="cuda", options={"tensorrt": False, "output": "device"})

        def raw_bound() -> None:
            binding = sess.io_binding()
            binding.bind_ortvalue_input("x", ort.OrtValue.from_dlpack(xt))
            binding.bind_output("y", "cuda", 0)
            sess.run_with_iobinding(binding)

        compare(
            "onnxruntime CUDA EP, CUDA tensors in/out", synced(raw_bound), synced(lambda: okept.predict(xt)), **timing
        )
    else:
        print(f"onnxruntime: no CUDAExecutionProvider here ({ort.get_available_providers()}); skipped")

    # 3. TensorRT
    if importlib.util.find_spec("tensorrt") is not None:
        for opts, label in (({}, "fp32"), ({"fp16": True}, "fp16")):
            trt_model = Model.load(onnx_path, backend="tensorrt", device="cuda", options={**opts, "cache": False})
            compare(
                f"TensorRT {label} vs torch on CUDA, numpy in/out",
                raw_numpy,
                functools.partial(trt_model.predict, x),
                **timing,
            )
    else:
        print("tensorrt: not installed here; skipped")

    # 4. a small transformer, CPU against GPU
    encoder, batch = build_encoder(), sentences(8, 128)
    cpu_model = Model.load(encoder, example_input=batch)
    gpu_model = cpu_model.to("cuda")
    half = Model.load(encoder, example_input=batch, device="cuda", options={"autocast": "fp16"})
    slow = {"rounds": max(args.rounds // 2, 5), "calls": max(args.calls // 20, 5)}
    compare(
        "BERT 6x384, batch 8x128: CPU (ref) vs CUDA",
        lambda: cpu_model.predict(batch),
        lambda: gpu_model.predict(batch),
        **slow,
    )
    compare(
        "BERT 6x384, batch 8x128: CUDA (ref) vs CUDA fp16",
        lambda: gpu_model.predict(batch),
        lambda: half.predict(batch),
        **slow,
    )


if __name__ == "__main__":
    main()
