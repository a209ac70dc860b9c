"""PyTorch: the backend, int8/fp16/bf16 quantizers, pruners, the ONNX exporter and the trainer.

* ``backend.py``: :class:`~aimass.frameworks.torch.backend.TorchBackend` (``nn.Module``, ``.pt2``, TorchScript);
* ``quantize.py``, ``prune.py``: what ``compress()`` finds for torch models;
* ``export_onnx.py``: ``convert("onnx")``; ``train.py``: ``update()`` and ``distill()``.
"""
