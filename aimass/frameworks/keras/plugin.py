"""What aimass offers for Keras 3 and TensorFlow: three backends, TFLite int8/fp16, exporters, trainers.

SavedModels run on the ``tensorflow`` backend and share the Keras tools (tf_keras students are
detected as ``tensorflow`` and train through Keras too).
"""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="keras",
    backends={
        "keras": "aimass.frameworks.keras.backend:KerasBackend",
        "tensorflow": "aimass.frameworks.keras.backend:SavedModelBackend",
        "tflite": "aimass.frameworks.keras.tflite:TFLiteBackend",
    },
    # keras before tensorflow: Keras 3 models also derive from TensorFlow's trackable classes.
    detection_rank={"keras": 60, "tensorflow": 70, "tflite": 80},
    compressors={
        ("keras", "int8"): "aimass.frameworks.keras.export_tflite:int8",
        ("keras", "fp16"): "aimass.frameworks.keras.export_tflite:fp16",
        ("tensorflow", "int8"): "aimass.frameworks.keras.export_tflite:int8",
        ("tensorflow", "fp16"): "aimass.frameworks.keras.export_tflite:fp16",
    },
    exporters={
        ("keras", "onnx"): "aimass.frameworks.keras.export_onnx:keras_to_onnx",
        ("tensorflow", "onnx"): "aimass.frameworks.keras.export_onnx:keras_to_onnx",
        ("keras", "tflite"): "aimass.frameworks.keras.export_tflite:keras_to_tflite",
        ("tensorflow", "tflite"): "aimass.frameworks.keras.export_tflite:keras_to_tflite",
    },
    trainers={"keras": "aimass.frameworks.keras.train:train"},
    distillers={
        "keras": "aimass.frameworks.keras.train:distill",
        "tensorflow": "aimass.frameworks.keras.train:distill",
    },
    convert_hints={"tflite": " (no maintained torch/onnx -> TFLite converter installs beside torch here)"},
)
