"""TensorRT engines on CUDA (``.engine``/``.plan``), with torch CUDA tensors as buffers."""
