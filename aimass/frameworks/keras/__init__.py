"""Keras 3 / TensorFlow: Keras models, SavedModels, TFLite files, and the exporters between them.

* ``backend.py``: :class:`~aimass.frameworks.keras.backend.KerasBackend` and ``SavedModelBackend``;
* ``tflite.py``: :class:`~aimass.frameworks.keras.tflite.TFLiteBackend` (LiteRT);
* ``export_onnx.py`` (tf2onnx), ``export_tflite.py`` (TFLite converter, also int8/fp16 for ``compress()``);
* ``train.py``: ``update()`` and ``distill()``.
"""
