"""The backend contract: every case in ``cases.CASES`` must pass every test here, unchanged.

The tests themselves ship with aimass (:class:`aimass.testing.BackendConformance`) so that a
backend registered by a third party can run them too; this module feeds them the repository's cases.
"""

from __future__ import annotations

from cases import CASES

from aimass.testing import BackendConformance


class TestConformance(BackendConformance):
    cases = CASES
