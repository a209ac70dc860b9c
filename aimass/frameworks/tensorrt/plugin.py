"""What aimass offers for TensorRT: the backend for serialized engines (``.engine``/``.plan``).

Example:
    >>> PLUGIN.backends["tensorrt"]
    'aimass.frameworks.tensorrt.backend:TensorRTBackend'
"""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

__all__ = ["PLUGIN"]

PLUGIN = FrameworkPlugin(
    name="tensorrt",
    backends={"tensorrt": "aimass.frameworks.tensorrt.backend:TensorRTBackend"},
    detection_rank={"tensorrt": 130},
)
