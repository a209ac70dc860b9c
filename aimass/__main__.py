"""``python -m aimass``: the ``aimass`` command line (the same as the ``aimass`` console script)."""

from __future__ import annotations

from aimass.cli import main

if __name__ == "__main__":
    main()
