"""ONNX on onnxruntime: the backend, graph surgery (renaming to a schema) and int8/fp16 quantizers.

* ``backend.py``: :class:`~aimass.frameworks.onnx.backend.OnnxBackend` (registered as ``"onnx"``);
* ``graph.py``: :func:`~aimass.frameworks.onnx.graph.align`, used on every exporter's result;
* ``quantize.py``: dynamic and static int8 (onnxruntime), fp16 (onnxconverter-common).
"""

from aimass import tempfiles

# onnxruntime writes a telemetry session file, TMPDIR/.ses, when it is imported; removed at exit
# when it was not there before.
tempfiles.claim(".ses", directory=False)
