"""``aimass info | predict | bench``: what a model is, what it answers, how fast.

``<model>`` is anything ``Model.load`` takes: a file, a package directory, a URL, or a library
reference (``store://fraud@production``, ``fraud:3``).

Example (shell)::

    aimass info fraud:3
    aimass predict model.onnx --data rows.csv --json
    aimass bench store://fraud@production --batch-size 1,32 --seconds 1
    aimass predict shout-pkg/ --data rows.json --trust-code   # a package holding Python code
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from aimass.cli.model_options import DataOption, TrustCodeOption, load_model, renamed
from aimass.cli.output import echo_json, json_text, read_input, table

__all__ = ["register"]


def info(
    model: str = typer.Argument(..., help="model file, package directory, URL or store reference"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
    trust_code: TrustCodeOption = False,
) -> None:
    """Show a model's backend, device and schema."""
    m = load_model(model, trust_code=trust_code)
    if as_json:
        echo_json({"name": m.name, "backend": m.backend_name, "device": m.device, "schema": m.schema.model_dump()})
        return
    typer.echo(f"name     {m.name}\nbackend  {m.backend_name}\ndevice   {m.device}")
    for kind, specs in (("input ", m.schema.inputs), ("output", m.schema.outputs)):
        for t in specs:
            typer.echo(f"{kind}   {t.name:<20} {t.describe()}")


def predict(
    model: Annotated[str, typer.Argument(help="model file, package directory, URL or store reference")],
    data: DataOption = None,
    output_file: Annotated[Path | None, typer.Option("--output", "-o", help="write outputs to .json or .npz")] = None,
    batch_size: int = typer.Option(256, "--batch-size", help="rows per model call"),
    as_json: bool = typer.Option(False, "--json", help="print outputs as one line of JSON"),
    trust_code: TrustCodeOption = False,
    input_file: Annotated[Path | None, typer.Option("--input", "-i", hidden=True, help="former --data")] = None,
) -> None:
    """Run a model on the rows of a file (--data); prints a table of outputs (or JSON: output name -> array)."""
    rows_file = renamed(data, input_file, new="--data", old="--input")
    if rows_file is None:
        raise typer.BadParameter("the rows to predict: a .json, .npy, .npz or .csv file", param_hint="'--data'")
    m = load_model(model, trust_code=trust_code)
    outputs = m.predict_batch(read_input(rows_file, m.schema.input_names), batch_size=batch_size)
    if output_file is not None:
        if output_file.suffix == ".npz":
            np.savez(output_file, **outputs)
        else:
            output_file.write_text(json_text(outputs, compact=True), encoding="utf-8")
    if as_json:  # the document --output out.json writes: one line, not one number per line
        echo_json(outputs, compact=True)
        return
    n = next(iter(outputs.values())).shape[0] if outputs else 0
    shown = min(n, 20)
    rows: list[dict[str, Any]] = []
    for i in range(shown):
        row: dict[str, Any] = {"row": i}
        for name, value in outputs.items():
            row[name] = _short(value[i])
        rows.append(row)
    typer.echo(table(rows))
    if n > shown:
        typer.echo(f"... {n - shown} more rows (use --json or --output for all)")


def _short(value: Any) -> str:
    a = np.asarray(value)
    if a.ndim == 0:
        return f"{a.item():.4g}" if a.dtype.kind == "f" else str(a.item())
    flat = [f"{v:.4g}" if a.dtype.kind == "f" else str(v) for v in a.reshape(-1)[:6]]
    return "[" + ", ".join(flat) + (", ...]" if a.size > 6 else "]")


def bench(
    model: str = typer.Argument(..., help="model file, package directory, URL or store reference"),
    batch_size: str = typer.Option("1,8,64", "--batch-size", help="rows per model call: comma-separated sizes"),
    seconds: float = typer.Option(1.0, "--seconds", help="time spent per batch size"),
    as_json: bool = typer.Option(False, "--json", help="print JSON for scripts"),
    trust_code: TrustCodeOption = False,
    batch: Annotated[str | None, typer.Option("--batch", hidden=True, help="former --batch-size")] = None,
) -> None:
    """Latency and throughput on synthetic inputs from the schema, one row per batch size."""
    from tqdm.auto import tqdm

    from aimass.measure import time_calls

    batches = renamed(None, batch, new="--batch-size", old="--batch") or batch_size
    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--batch-size must be comma-separated integers, got {batches!r}") from None
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"--batch-size sizes must be >= 1, got {batches!r}")
    m = load_model(model, trust_code=trust_code)
    results = []
    # On a terminal only (disable=None): a log gets the table, not one line per batch size.
    for size in tqdm(sizes, desc="bench", unit="batch size", disable=True if len(sizes) < 2 or as_json else None):
        x = m.schema.example(batch=size)
        m.predict(x)  # warm-up
        times = time_calls(lambda: m.predict(x), seconds=seconds, min_calls=3)  # noqa: B023 (called at once)
        ms = times * 1e3
        total = float(np.sum(times))
        results.append(
            {
                "batch": size,
                "calls": len(times),
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
                "rows_per_s": size * len(times) / total if total > 0 else float("inf"),
            }
        )
    if as_json:
        echo_json({"model": m.name, "backend": m.backend_name, "device": m.device, "results": results})
        return
    typer.echo(f"{m.name} ({m.backend_name}, {m.device})")
    typer.echo(table(results))


def register(app: typer.Typer) -> None:
    app.command("info")(info)
    app.command("predict")(predict)
    app.command("bench")(bench)
