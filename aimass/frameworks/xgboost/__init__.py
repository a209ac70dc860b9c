"""XGBoost: the backend (``Booster``, sklearn wrappers, ``.json``/``.ubj``), the ONNX exporter, the trainer."""
