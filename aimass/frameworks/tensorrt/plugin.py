"""What aimass offers for TensorRT: the backend for serialized engines (``.engine``/``.plan``)."""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="tensorrt",
    backends={"tensorrt": "aimass.frameworks.tensorrt.backend:TensorRTBackend"},
    detection_rank={"tensorrt": 130},
)
