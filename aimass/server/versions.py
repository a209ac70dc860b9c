"""The order of a model's versions, the one rule the repository and the dashboard both sort by.

Numeric versions sort by number, after every non-numeric name (``"2" < "10"``, ``"canary" < "1"``),
so the last version is the newest number, as Triton picks it.

Example:
    >>> sorted(["10", "2", "canary"], key=version_key)
    ['canary', '2', '10']
"""

from __future__ import annotations

__all__ = ["version_key"]


def version_key(version: str) -> tuple[int, int, str]:
    """Sort key of a version name: numbers by value, after names.

    Example:
        >>> max(["1", "12", "3"], key=version_key)
        '12'
    """
    return (1, int(version), "") if version.isdigit() else (0, 0, version)
