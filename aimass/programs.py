"""Model files that are programs: inspected against an allow-list before any framework reads them.

Every model format is either **data** (safetensors, ONNX with its external data inside the package,
skops with listed types, XGBoost JSON/UBJ, TFLite builtin ops, tokenizer JSON) or a **program**
(TorchScript, ``torch.export`` archives such as ``.pt2``, SavedModel): a file that names the
operators a framework will run, some of which read or write files, open sockets or start
processes. Loading a program is only safe when every operator it names is pure computation.

This module is the one policy for programs. A framework's folder holds the inspector that lists a
file's operators without running it, and a reviewed allow-list (``allowed_ops.txt``, one operator
per line, ``#`` comments); :func:`check_program` compares them and refuses the file with
:class:`~aimass.errors.UnsafeProgram`, naming the file and the operators, unless the caller trusts
it (``trust_code=True``). An allow-list, not a deny-list: an operator nobody reviewed is refused.

Example:
    >>> allowed = frozenset({"aten::linear", "aten::relu"})
    >>> check_program("m.pt2", "torch.export archive", ["aten::linear", "aten::relu"], allowed, trusted=False)
    >>> check_program("m.pt2", "torch.export archive", ["aten::from_file"], allowed, trusted=True)
    >>> check_program("m.pt2", "torch.export archive", ["aten::from_file"], allowed, trusted=False)
    Traceback (most recent call last):
    ...
    aimass.errors.UnsafeProgram: m.pt2: this torch.export archive is a program and names operators ...
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

from aimass.errors import UnsafeProgram

__all__ = ["allow_list", "check_program"]


@cache
def allow_list(path: str | Path) -> frozenset[str]:
    """The operators listed in a reviewed allow-list file (one a line; blank lines and ``#`` comments ignored)."""
    names: set[str] = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            names.add(name)
    return frozenset(names)


def check_program(
    file: str,
    kind: str,
    operators: Iterable[str],
    allowed: frozenset[str],
    *,
    trusted: bool,
    detail: str = "",
) -> None:
    """Refuse ``file`` (a ``kind`` of program) if it names an operator not in ``allowed``, unless ``trusted``.

    ``file`` is the name shown to the user (a package-relative name, never an absolute path).
    """
    if trusted:
        return
    unknown = sorted(set(operators) - allowed)
    if unknown:
        raise UnsafeProgram(file, kind, unknown, detail=detail)
