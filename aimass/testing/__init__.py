"""Test support for backends: the conformance suite every aimass backend passes, for third parties too.

Shipped with aimass the way fsspec ships its abstract file-system tests: a package that registers
its own backend (:func:`aimass.backends.register`) subclasses :class:`BackendConformance` in its
test suite, gives it :class:`Case` objects, and pytest runs every test of the contract on each.
This module needs pytest (a test-time dependency, not one of aimass's); ``import aimass`` never
imports it.

Example::

    from aimass import Model
    from aimass.testing import BackendConformance, Case

    class TestMyBackend(BackendConformance):
        cases = [Case("mine", lambda tmp: Model.load(make_model(tmp / "m.mine")), "mylib",
                      reference=run_mylib_directly)]
"""

from __future__ import annotations

try:
    import pytest  # noqa: F401  (imported here first so that a missing pytest gets the message below)
except ImportError as e:  # pragma: no cover - pytest is installed wherever tests run
    raise ImportError("aimass.testing needs pytest: pip install pytest") from e

from aimass.testing.conformance import Arrays, BackendConformance, Case, run_in_threads

__all__ = ["Arrays", "BackendConformance", "Case", "run_in_threads"]
