"""What aimass offers for MXNet 1.9: the backend (Gluon blocks, exported symbol/params pairs)."""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="mxnet",
    backends={"mxnet": "aimass.frameworks.mxnet.backend:MXNetBackend"},
    detection_rank={"mxnet": 90},
)
