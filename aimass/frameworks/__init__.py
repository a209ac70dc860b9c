"""One folder per framework: its backend and only what that framework has.

Each ``aimass/frameworks/<name>/`` holds everything aimass knows about one framework: the
backend (``backend.py``) and, where the framework has them, its exporters (``export*.py``),
trainer (``train.py``), quantizers and pruners, and one manifest (``plugin.py``) that declares them
all as dotted paths. :mod:`aimass.plugins` finds the manifests from these folders (and from installed
distributions' ``aimass.frameworks`` entry points) and builds every table from them; nothing
outside the folder names it, except the pyproject extra. The folders never import each other (an
import-linter contract over ``aimass.frameworks.*``). Nothing here imports a framework at import
time. See docs/architecture.md.

Example:
    >>> from aimass.backends import get_backend
    >>> get_backend("sklearn").framework
    'scikit-learn'
"""
