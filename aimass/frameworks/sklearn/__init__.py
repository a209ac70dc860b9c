"""scikit-learn: estimators and ``Pipeline``s, saved with skops (never pickle).

* ``backend.py``: :class:`~aimass.frameworks.sklearn.backend.SklearnBackend` (registered as ``"sklearn"``);
* ``export.py``: ``convert("onnx")`` through skl2onnx;
* ``train.py``: ``update()`` through ``partial_fit``.

Importing this package imports neither scikit-learn nor skops; ``pip install 'aimass[sklearn]'``.
"""
