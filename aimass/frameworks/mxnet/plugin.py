"""What aimass offers for MXNet 1.9: the backend (Gluon blocks, exported symbol/params pairs).

Example:
    >>> PLUGIN.backends["mxnet"]
    'aimass.frameworks.mxnet.backend:MXNetBackend'
"""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

__all__ = ["PLUGIN"]

PLUGIN = FrameworkPlugin(
    name="mxnet",
    backends={"mxnet": "aimass.frameworks.mxnet.backend:MXNetBackend"},
    detection_rank={"mxnet": 90},
)
