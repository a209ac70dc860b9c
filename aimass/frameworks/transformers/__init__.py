"""Hugging Face text models with no code: a fast tokenizer, a network and a task head as one backend.

``backend.py`` holds :class:`~aimass.frameworks.transformers.backend.TextBackend` (registered as
``"transformers"``), ``tokenizer.py`` the fast tokenizer and the text checks, ``tasks.py`` what
each task makes of the network's output, ``network.py`` the transformers model as a network,
``export_onnx.py`` the ONNX export (tokenizer kept) and ``compress.py`` compression of the
network by its own backend's tool. Nothing here imports transformers, tokenizers or torch at
import time. See docs/text-models.md.

Example:
    >>> from aimass.backends import get_backend
    >>> get_backend("transformers").extra
    'transformers'
"""

from aimass import tempfiles

# The network runs on torch, whose export loads its compiler: an empty torchinductor_<user> in
# TMPDIR, removed at exit when it is new and still empty.
tempfiles.claim("torchinductor_*", directory=True)
