"""``aimass scale``: deploy models to Ray Serve replicas, and predict datasets on Ray Data.

One verb each: ``aimass serve`` runs a server here, ``aimass scale deploy`` deploys the same server
(the same options, :class:`aimass.cli.options.ServerOptions`, plus replicas and autoscaling) to Ray
Serve, ``aimass scale predict`` predicts a dataset on Ray Data (``aimass.scale.batch_predict``).

Example (shell)::

    aimass scale deploy mlp.onnx fraud=pkg/fraud --replicas 2 --port 8000
    aimass scale deploy mlp.onnx --min-replicas 1 --max-replicas 4 --target-ongoing-requests 8
    aimass scale predict mlp.onnx rows.parquet predictions/ --batch-size 1024 --actors 2
    aimass scale config /models/fraud --replicas 4 -o serve.yaml   # for `serve deploy` or a KubeRay RayService
    RAY_ADDRESS=ray://head:10001 aimass scale deploy mlp.onnx --replicas 8   # an existing cluster
"""

from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from aimass.cli.options import DeployOptions, ServerOptions, with_options

__all__ = ["config", "deploy", "deploy_until_stopped", "model_sources", "predict", "register", "scale_app"]

scale_app = typer.Typer(
    help="On Ray: deploy models to Ray Serve replicas, predict datasets with Ray Data.", no_args_is_help=True
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


@scale_app.command("deploy")
@with_options
def deploy(
    sources: Annotated[list[str], typer.Argument(help="models: file, package, or NAME=PATH")],
    server: ServerOptions,
    ray: DeployOptions,
) -> None:
    """Deploy models to Ray Serve replicas with the V2 API of aimass serve (RAY_ADDRESS picks a cluster).

    --host and --port are those of Ray Serve's HTTP proxy; --max-batch-size applies per replica.
    """
    deploy_until_stopped(
        model_sources(sources), settings=server.settings(), model_options=server.model_options(), **ray.scaling()
    )


@scale_app.command("config")
@with_options
def config(
    sources: Annotated[list[str], typer.Argument(help="models: path, library reference or V2 URL, or NAME=SOURCE")],
    server: ServerOptions,
    ray: DeployOptions,
    output: Annotated[str, typer.Option("--output", "-o", help="file to write (.yaml, or .json)")] = "serve.yaml",
    rayservice: Annotated[
        str, typer.Option(help="write a KubeRay RayService of this name around the Serve config")
    ] = "",
    image: Annotated[str, typer.Option(help="the RayService's container image (aimass and the models in it)")] = "",
    workers: Annotated[int, typer.Option(help="the RayService's worker pods")] = 1,
) -> None:
    """Write the Ray Serve config file of this deployment, for `serve deploy` or as a KubeRay RayService."""
    from aimass.scale.config import rayservice as service_manifest
    from aimass.scale.config import serve_config, write_config

    if rayservice and not image:
        raise typer.BadParameter("a RayService needs the image its pods run", param_hint="'--image'")
    # The file's address is every interface (a cluster's pods) unless --host names one; the
    # replicas' allowed Host headers follow it, as for `aimass serve --host`.
    server = dataclasses.replace(server, host=server.host if server.host != "127.0.0.1" else "0.0.0.0")
    host = server.host
    doc = serve_config(
        model_sources(sources),
        settings=server.settings(),
        model_options=server.model_options(),
        host=host,
        port=server.port,
        **ray.scaling(),
    )
    if rayservice:
        doc = service_manifest(doc, name=rayservice, image=image, workers=workers)
    typer.echo(f"wrote {write_config(output, doc)}")


@scale_app.command("serve", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve_moved() -> None:
    """The former ``aimass scale serve``: it is ``aimass scale deploy`` now."""
    raise ValueError("`aimass scale serve` is now `aimass scale deploy` (same arguments)")


def deploy_until_stopped(models: dict[str, str], **options: Any) -> None:
    """Deploy with :func:`aimass.scale.deploy`, print the URL, block until Ctrl-C/SIGTERM, then delete the app."""
    from aimass import scale
    from aimass.scale.ingress import describe

    svc = scale.deploy(models, **options)
    auto = options.get("autoscaling")
    scaling = (
        f"autoscaling {auto['min_replicas']}..{auto['max_replicas']}"
        if auto
        else f"{options.get('num_replicas', 1)} replica(s)"
    )
    typer.echo(f"aimass on Ray Serve at {svc.url}/v2 ({scaling}); Ctrl-C stops it")
    typer.echo(f"ingress: {svc.ingress}: {describe(svc.ingress)}; {svc.num_cpus:g} CPU per replica")
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
    num_cpus: Annotated[
        float | None, typer.Option(help="CPUs each actor reserves (default: a share that fits the cluster)")
    ] = None,
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
