"""What aimass offers for ONNX models on onnxruntime: the backend, quantizers, the importer of exports, fusion.

Every exporter to ``"onnx"`` returns an ``onnx.ModelProto`` that :func:`~aimass.frameworks.onnx.graph.load_aligned`
loads with the source's tensor names; ``optimize=True`` fuses the graph before any int8 step.
"""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="onnx",
    backends={"onnx": "aimass.frameworks.onnx.backend:OnnxBackend"},
    detection_rank={"onnx": 10},
    compressors={
        ("onnx", "int8"): "aimass.frameworks.onnx.quantize:dynamic_int8",
        ("onnx", "int8-static"): "aimass.frameworks.onnx.quantize:static_int8",
        ("onnx", "fp16"): "aimass.frameworks.onnx.quantize:fp16",
    },
    importers={"onnx": "aimass.frameworks.onnx.graph:load_aligned"},
    optimizers={"onnx": "aimass.frameworks.onnx.optimize:fused_backend"},
)
