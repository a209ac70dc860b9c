"""Scale-out on Ray: Ray Serve replicas speaking the V2 API, and distributed batch prediction with Ray Data.

Needs the ``[ray]`` extra (``pip install 'aimass[ray]'``); importing this package imports no Ray.
With ``RAY_ADDRESS`` set, everything runs on that cluster; otherwise a local Ray starts.

Example:
    >>> from aimass.scale import batch_predict, deploy
    >>> svc = deploy({"mlp": "mlp.onnx"}, num_replicas=2)                           # doctest: +SKIP
    >>> batch_predict("mlp.onnx", "rows.parquet", "predictions/", batch_size=1024)  # doctest: +SKIP
"""

from __future__ import annotations

from aimass.scale.batch import batch_predict
from aimass.scale.bundle import Bundle, bundle
from aimass.scale.cluster import connect
from aimass.scale.deploy import Service, deploy, serve

__all__ = ["Bundle", "Service", "batch_predict", "bundle", "connect", "deploy", "serve"]
