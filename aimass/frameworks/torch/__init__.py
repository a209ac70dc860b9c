"""PyTorch: the backend, int8/fp16/bf16 quantizers, pruners, the ONNX exporter and the trainer.

* ``backend.py``: :class:`~aimass.frameworks.torch.backend.TorchBackend` (``nn.Module``, ``.pt2``, TorchScript);
* ``quantize.py``, ``prune.py``: what ``compress()`` finds for torch models;
* ``export_onnx.py``: ``convert("onnx")``; ``train.py``: ``update()`` and ``distill()``.
"""

from aimass import tempfiles

# torch's export and quantization load its compiler, which creates an empty cache directory in
# TMPDIR (torchinductor_<user>); removed at exit when it is new and still empty.
tempfiles.claim("torchinductor_*", directory=True)
