"""One folder per framework: its backend and only what that framework has.

Each ``aimass/frameworks/<name>/`` holds everything aimass knows about one framework: the
backend (``backend.py``) and, where the framework has them, its exporters (``export.py``),
trainers (``train.py``) and quantizers. Code outside the folder refers to it only through
registry lines: :data:`aimass.backends.BACKENDS`, :data:`aimass.convert.SUPPORTED`, the
``update`` dispatch and the pyproject extra. Nothing here imports a framework at import time.

Example:
    >>> from aimass.backends import get_backend
    >>> get_backend("sklearn").framework
    'scikit-learn'
"""
