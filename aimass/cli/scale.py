"""``aimass scale``: serve models on Ray Serve replicas, and batch-predict datasets on Ray Data.

Example (shell)::

    aimass scale serve mlp.onnx fraud=pkg/fraud --replicas 2 --port 8000
    aimass scale serve mlp.onnx --min-replicas 1 --max-replicas 4 --target-ongoing-requests 8
    aimass scale predict mlp.onnx rows.parquet predictions/ --batch-size 1024 --actors 2
    RAY_ADDRESS=ray://head:10001 aimass scale serve mlp.onnx --replicas 8   # an existing cluster
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from aimass.cli.serve import parse_duration, parse_options, server_token

__all__ = ["model_sources", "register", "run_on_ray", "scale_app"]

scale_app = typer.Typer(
    help="Scale out on Ray: Ray Serve replicas and Ray Data batch prediction.", no_args_is_help=True
)


def model_sources(sources: list[str]) -> dict[str, str]:
    """``["mlp.onnx", "fraud=pkg/fraud"]`` -> ``{"mlp": "mlp.onnx", "fraud": "pkg/fraud"}``.

    Example:
        >>> model_sources(["mlp.onnx", "fraud=pkg/fraud"])
        {'mlp': 'mlp.onnx', 'fraud': 'pkg/fraud'}
    """
    out: dict[str, str] = {}
    for src in sources:
        name, sep, path = src.partition("=")
        if sep:
            out[name] = path
        else:
            p = Path(src)
            out[p.stem if p.suffix else p.name] = src
    return out


@scale_app.command("serve")
def serve(
    sources: Annotated[list[str], typer.Argument(help="models: file, package, or NAME=PATH")],
    replicas: Annotated[int, typer.Option(help="fixed number of replicas (without --max-replicas)")] = 1,
    min_replicas: Annotated[int, typer.Option(help="autoscaling: fewest replicas")] = 1,
    max_replicas: Annotated[int, typer.Option(help="autoscaling: most replicas; > 0 turns autoscaling on")] = 0,
    target_ongoing_requests: Annotated[
        float, typer.Option(help="autoscaling: requests in flight per replica that Ray Serve aims for")
    ] = 2.0,
    upscale_delay: Annotated[str, typer.Option(help="autoscaling: load must last this long before scaling up")] = "30s",
    downscale_delay: Annotated[
        str, typer.Option(help="autoscaling: idleness must last this long before scaling down")
    ] = "600s",
    host: Annotated[str, typer.Option(help="Ray Serve HTTP proxy interface")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Ray Serve HTTP proxy port")] = 8000,
    max_batch_size: Annotated[int, typer.Option(help="rows per merged model call in each replica; 0: off")] = 64,
    max_queue_delay: Annotated[str, typer.Option(help="how long a request may wait for a batch: 500us, 2ms")] = "0",
    max_ongoing_requests: Annotated[int, typer.Option(help="requests Ray Serve sends one replica at once")] = 64,
    num_cpus: Annotated[float, typer.Option(help="CPUs each replica reserves on the cluster")] = 1.0,
    auth_token: Annotated[
        str,
        typer.Option(envvar="AIMASS_SERVER_TOKEN", callback=server_token, help="require 'Authorization: Bearer TOKEN'"),
    ] = "",
    option: Annotated[list[str] | None, typer.Option(help="backend option KEY=JSON, dotted keys nest")] = None,
) -> None:
    """Serve models on Ray Serve replicas with the V2 API of ``aimass serve`` (RAY_ADDRESS picks a cluster)."""
    autoscaling: dict[str, Any] | None = None
    if max_replicas > 0:
        autoscaling = {
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "target_ongoing_requests": target_ongoing_requests,
            "upscale_delay_s": parse_duration(upscale_delay),
            "downscale_delay_s": parse_duration(downscale_delay),
        }
    run_on_ray(
        model_sources(sources),
        num_replicas=1 if autoscaling else replicas,
        autoscaling=autoscaling,
        host=host,
        port=port,
        max_batch_size=max_batch_size,
        max_queue_delay=parse_duration(max_queue_delay),
        max_ongoing_requests=max_ongoing_requests,
        num_cpus=num_cpus,
        auth_token=auth_token or None,
        model_options=parse_options(option or []),
    )


def run_on_ray(models: dict[str, str], **options: Any) -> None:
    """Deploy with :func:`aimass.scale.serve`, print the URL, block until Ctrl-C/SIGTERM, then delete the app.

    Shared by ``aimass scale serve`` and ``aimass serve --ray``.
    """
    from aimass.scale import serve as scale_serve

    svc = scale_serve(models, **options)
    auto = options.get("autoscaling")
    scaling = (
        f"autoscaling {auto['min_replicas']}..{auto['max_replicas']}"
        if auto
        else f"{options.get('num_replicas', 1)} replica(s)"
    )
    typer.echo(f"aimass on Ray Serve at {svc.url}/v2 ({scaling}); Ctrl-C stops it")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        svc.shutdown()  # this application only: a shared cluster's other Serve apps keep running


@scale_app.command("predict")
def predict(
    model: Annotated[str, typer.Argument(help="model file, package, library reference or V2 URL")],
    data: Annotated[str, typer.Argument(help="Parquet, CSV or .npy file or directory")],
    output: Annotated[str, typer.Argument(help="output directory (Parquet)")],
    batch_size: Annotated[int, typer.Option(help="rows per model call")] = 1024,
    actors: Annotated[int, typer.Option(help="actors in the pool, each loading the model once")] = 1,
    num_cpus: Annotated[float, typer.Option(help="CPUs each actor reserves")] = 1.0,
    column: Annotated[
        list[str] | None, typer.Option(help="INPUT=COL1,COL2,...: stack these columns into one input; repeatable")
    ] = None,
    keep: Annotated[str, typer.Option(help="input columns to keep: all, none, or COL1,COL2")] = "all",
    progress: Annotated[bool, typer.Option(help="show Ray Data's progress")] = True,
) -> None:
    """Predict every row of a dataset on Ray Data and write Parquet (RAY_ADDRESS picks a cluster)."""
    from aimass.scale import batch_predict

    columns: dict[str, list[str]] = {}
    for item in column or []:
        name, sep, cols = item.partition("=")
        if not sep or not cols:
            raise typer.BadParameter(f"{item!r}: use INPUT=COL1,COL2,...")
        columns[name] = cols.split(",")
    keep_columns: bool | list[str] = True if keep == "all" else False if keep == "none" else keep.split(",")
    out = batch_predict(
        model,
        data,
        output,
        batch_size=batch_size,
        actors=actors,
        num_cpus=num_cpus,
        columns=columns or None,
        keep_columns=keep_columns,
        progress=progress,
    )
    typer.echo(f"predictions written to {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(scale_app, name="scale")
