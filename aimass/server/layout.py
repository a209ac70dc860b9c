"""Warnings about what a server is asked to serve: nothing at all, or a layout that is likely a mistake.

A repository is ``<repo>/<name>/<version>/`` (:mod:`aimass.server.sources`). Two mistakes serve
something other than what was meant, without any error: a directory with no package in it (the
server starts and serves nothing), and a model's own directory given as the repository (after
``q.save("moderation/1")``, ``aimass serve moderation/`` serves a model named ``"1"``).

Example:
    >>> layout_warnings("models/")   # doctest: +SKIP
    ["nothing to serve: 'models/' holds no model package (a repository is <repo>/<name>/<version>/)"]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aimass.package import is_package
from aimass.server.sources import Sources

__all__ = ["layout_warnings"]


def layout_warnings(root: str | os.PathLike[str] | None, models: Mapping[str, Any] | None = None) -> list[str]:
    """What looks wrong in serving the repository ``root`` (and ``models``): one sentence per problem.

    Paths are shown as given (the server's own terminal and log, never a client).

    Example:
        >>> layout_warnings(None, {"mlp": "mlp.onnx"})
        []
    """
    found = Sources(root, models).scan()
    if not found:
        where = f"{str(root)!r} holds no model package" if root is not None else "no model was given"
        return [f"nothing to serve: {where} (a repository is <repo>/<name>/<version>/, each version a package)"]
    if root is None or is_package(Path(root)):
        return []
    base = Path(root)
    numbered = sorted(n for n in found if n.isdigit() and is_package(base / n) and n not in (models or {}))
    if not numbered:
        return []
    shown = ", ".join(repr(n) for n in numbered)
    name = base.resolve().name or "model"
    return [
        f"{str(root)!r} holds packages directly in numbered directories ({shown}): they are served as models "
        f"named {shown}, not as versions of {name!r}. A repository is <repo>/<name>/<version>/: serve the "
        f"directory above {str(root)!r}, or one version as a model with `aimass serve {name}={base / numbered[-1]}`"
    ]
