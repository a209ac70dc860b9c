"""``aimass compress | convert``: write a compressed or converted package and print its measured report.

``<model>`` is anything ``Model.load`` takes (``--trust-code`` for a package holding Python code).
``--data`` (rows as .json, .npy, .npz or .csv) drives calibration and the drift measurement;
``--labels`` adds the metric before/after; ``--output`` (``-o``) is the package written.

Example (shell)::

    aimass compress model.onnx --method int8 --data rows.npy --labels y.npy --max-drop 0.01 --output q/
    aimass convert clf.json --to onnx --output clf-onnx/ --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import numpy as np
import typer

from aimass.cli.model_options import DataOption, OutputOption, TrustCodeOption, load_model, renamed
from aimass.cli.output import USER_ERROR, echo_json, read_input
from aimass.errors import CompressionRejected

__all__ = ["register"]

# The former name of --output, hidden from the help.
FormerOut = Annotated[Path | None, typer.Option("--out", hidden=True, help="former --output")]


def _output(output: Path | None, out: Path | None) -> Path:
    path = renamed(output, out, new="--output", old="--out")
    if path is None:
        raise typer.BadParameter("the package directory to write", param_hint="'--output'")
    return path


def _report_json(report: Any) -> dict[str, Any]:
    data: dict[str, Any] = report.model_dump(mode="json")
    data["size_ratio"] = report.size_ratio
    data["metric_drop"] = report.metric_drop
    return data


def _finish(result: Any, out: Path, overwrite: bool, as_json: bool) -> None:
    path = result.save(out, overwrite=overwrite)
    if as_json:
        echo_json({"package": str(path), "backend": result.backend_name, "report": _report_json(result.report)})
        return
    typer.echo(result.report.text())
    typer.echo(f"wrote {path}")


def compress(
    model: Annotated[str, typer.Argument(help="model file, package directory, URL or store reference")],
    output: OutputOption = None,
    method: Annotated[str, typer.Option("--method", "-m", help="int8, int8-static, fp16, bf16, prune, ...")] = "int8",
    data: DataOption = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="labels as .json, .npy or .csv")] = None,
    max_drop: Annotated[float | None, typer.Option("--max-drop", help="refuse a larger metric drop")] = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing package"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    trust_code: TrustCodeOption = False,
    out: FormerOut = None,
) -> None:
    """Compress a model, print the measured report, and save the result as a package."""
    out = _output(output, out)
    m = load_model(model, trust_code=trust_code)
    rows = read_input(data, m.schema.input_names) if data is not None else None
    y = np.asarray(read_input(labels, ["labels"])).reshape(-1) if labels is not None else None
    try:
        result = m.compress(method, data=rows, labels=y, max_drop=max_drop)
    except CompressionRejected as e:
        _rejected(e, as_json)
    _finish(result, out, overwrite, as_json)


def _rejected(error: CompressionRejected, as_json: bool) -> NoReturn:
    """Say why on one line, then the report as the table a kept result prints (the error handler joins lines)."""
    from aimass.compress import Report

    reason = str(error).splitlines()[0]
    typer.echo(f"error: {reason}", err=True)
    if isinstance(error.report, Report):
        if as_json:
            echo_json({"rejected": reason, "report": _report_json(error.report)})
        else:
            typer.echo(error.report.text(), err=True)
    raise typer.Exit(USER_ERROR)


def convert(
    model: Annotated[str, typer.Argument(help="model file, package directory, URL or store reference")],
    output: OutputOption = None,
    to: Annotated[str, typer.Option("--to", help="onnx or tflite")] = "onnx",
    data: DataOption = None,
    atol: Annotated[float | None, typer.Option("--atol", help="absolute tolerance (default 1e-4)")] = None,
    rtol: Annotated[float | None, typer.Option("--rtol", help="tolerance relative to max |output|")] = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing package"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
    trust_code: TrustCodeOption = False,
    out: FormerOut = None,
) -> None:
    """Convert a model, check it numerically against the source, and save it as a package."""
    out = _output(output, out)
    m = load_model(model, trust_code=trust_code)
    rows = read_input(data, m.schema.input_names) if data is not None else None
    _finish(m.convert(to, data=rows, atol=atol, rtol=rtol), out, overwrite, as_json)


def register(app: typer.Typer) -> None:
    app.command("compress")(compress)
    app.command("convert")(convert)
