"""What aimass offers for Hugging Face text models: the backend, the ONNX export, compression of the network.

A text model holds a network on another backend (torch or onnx): ``compress()`` hands that network
to its own backend's compressor (``wrapped``), and the tokenizer and head stay.
"""

from __future__ import annotations

from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="transformers",
    backends={"transformers": "aimass.frameworks.transformers.backend:TextBackend"},
    # Before torch: transformers models are torch Modules too; also save_pretrained directories.
    detection_rank={"transformers": 20},
    # A text model stays a text model: its network moves to onnxruntime, the tokenizer stays.
    exporters={("transformers", "onnx"): "aimass.frameworks.transformers.export_onnx:text_to_onnx"},
    wrapped={"transformers": "aimass.frameworks.transformers.compress:compress_network"},
)
