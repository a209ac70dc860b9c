"""One folder per framework: its backend and only what that framework has.

Each ``aimass/frameworks/<name>/`` holds everything aimass knows about one framework: the
backend (``backend.py``) and, where the framework has them, its exporters (``export*.py``),
trainer (``train.py``), quantizers and pruners. Code outside the folder refers to it only through
registry lines: :data:`aimass.backends.BACKENDS`, :data:`aimass.compress.methods.COMPRESSORS`,
:data:`aimass.convert.EXPORTERS`, :data:`aimass.update.TRAINERS` and the pyproject extra. The
folders never import each other (an import-linter contract). Nothing here imports a framework at
import time. See docs/architecture.md.

Example:
    >>> from aimass.backends import get_backend
    >>> get_backend("sklearn").framework
    'scikit-learn'
"""
