"""Options of the commands that load a model, declared once so that each word means one thing.

``info``, ``predict``, ``bench``, ``compress``, ``convert`` and ``store publish`` load a model: each
takes ``--trust-code`` (a package that holds Python code loads only with it, as in ``aimass
serve``). Rows a command reads are ``--data``, what it writes is ``--output`` (``-o``), rows per
model call are ``--batch-size``. A former name (``predict --input``, ``bench --batch``,
``compress --out``, ``ui --token``) still works, hidden from the help, with a warning naming the
new one: :func:`renamed`.

Example:
    >>> renamed("rows.csv", None, new="--data", old="--input")
    'rows.csv'
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

__all__ = ["DataOption", "OutputOption", "TrustCodeOption", "load_model", "renamed"]

T = TypeVar("T")

TrustCodeOption = Annotated[
    bool,
    typer.Option(
        "--trust-code",
        help="load packages that hold Python code (PythonModel), which runs: only from sources you trust",
    ),
]
DataOption = Annotated[Path | None, typer.Option("--data", help="rows as .json, .npy, .npz or .csv")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="package directory to write")]


def renamed(value: T | None, former: T | None, *, new: str, old: str) -> T | None:
    """``value``, or the former flag's value with a warning on stderr (both given: a user error).

    Example:
        >>> renamed(None, None, new="--data", old="--input") is None
        True
    """
    if former is None:
        return value
    if value is not None:
        raise typer.BadParameter(f"{old} is the former name of {new}: give {new} only", param_hint=f"'{new}'")
    typer.echo(f"warning: {old} is deprecated: use {new}", err=True)
    return former


def load_model(source: str, *, trust_code: bool) -> Any:
    """``Model.load`` for a command: ``trust_code`` from ``--trust-code``.

    Example:
        >>> load_model("model.onnx", trust_code=False)   # doctest: +SKIP
    """
    from aimass import Model

    return Model.load(source, trust_code=trust_code)
