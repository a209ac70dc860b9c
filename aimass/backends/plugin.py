"""aimass's own backends that belong to no framework: Python models, compositions, remote models.

Their ranks put them where detection needs them: a :class:`~aimass.PythonModel` subclass may also
derive from a framework's class (a torch Module, say), so ``python`` is tried first; compositions
are loaded from packages and never detected; remote URLs are matched by scheme.
"""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="aimass",
    backends={
        "python": "aimass.python_model:PythonBackend",
        "compose": "aimass.compose:ComposedBackend",
        "remote": "aimass.backends.remote:RemoteBackend",
        "grpc": "aimass.backends.remote_grpc:GrpcRemoteBackend",  # grpc:// and grpcs:// model URLs
    },
    detection_rank={"python": 0, "compose": 50, "remote": 110, "grpc": 120},
)
