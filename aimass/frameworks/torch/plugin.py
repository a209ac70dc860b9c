"""What aimass offers for PyTorch: the backend, quantizers and pruners, the ONNX exporter, trainers, students."""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="torch",
    backends={"torch": "aimass.frameworks.torch.backend:TorchBackend"},
    detection_rank={"torch": 30},  # after transformers: its models are torch Modules too
    compressors={
        ("torch", "int8"): "aimass.frameworks.torch.quantize:int8",
        ("torch", "fp16"): "aimass.frameworks.torch.quantize:fp16",
        ("torch", "bf16"): "aimass.frameworks.torch.quantize:bf16",
        ("torch", "prune"): "aimass.frameworks.torch.prune:unstructured",
        ("torch", "prune-structured"): "aimass.frameworks.torch.prune:structured",
    },
    exporters={("torch", "onnx"): "aimass.frameworks.torch.export_onnx:torch_to_onnx"},
    trainers={"torch": "aimass.frameworks.torch.train:train"},
    distillers={"torch": "aimass.frameworks.torch.train:distill"},
    shrinkers={"torch": "aimass.frameworks.torch.student:fewer_layers"},
)
