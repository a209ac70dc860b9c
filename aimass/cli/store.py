"""``aimass store list | show | publish | alias | rm | pull``: the model library from the shell.

The library is ``--root`` or ``$AIMASS_STORE`` (default ``~/.aimass/models``); it may be an
``s3://`` URL. Tables by default, ``--json`` for scripts; exit code 2 for user errors (unknown
model, failed gate ...), 1 for failures.

Example (shell)::

    aimass store publish model.onnx fraud --metric accuracy=0.97 --tag owner=risk
    aimass store alias fraud production 3 --gate accuracy=">=0.9"
    aimass store alias fraud production 3=0.9 4=0.1        # a canary
    aimass store list
    aimass store show fraud@production --json
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from aimass.cli.model_options import TrustCodeOption, load_model
from aimass.cli.output import echo_json, table

if TYPE_CHECKING:
    from aimass.store import Ref, Store, VersionInfo

__all__ = ["register"]

store_app = typer.Typer(
    help="The model library: versions, aliases, gates (local directory or s3://).", no_args_is_help=True
)

ROOT = typer.Option(None, "--root", envvar="AIMASS_STORE", help="library root (directory or s3:// URL)")
JSON = typer.Option(False, "--json", help="print JSON for scripts")


def _library(root: str | None) -> Store:
    """The library at ``root``; a local ``--root``/``$AIMASS_STORE`` that does not exist is a user error.

    (A typo would otherwise read as an empty library. The default root, before anything is
    published, is empty rather than missing.)
    """
    from aimass.errors import StoreError
    from aimass.store import Store
    from aimass.store.drivers import LocalDriver

    lib = Store(root)
    driver = lib.driver
    if root is not None and isinstance(driver, LocalDriver) and not driver.root.is_dir():
        raise StoreError(f"no model library at {root!r}: the directory does not exist (check --root or $AIMASS_STORE)")
    return lib


def _ref(text: str) -> Ref:
    """``fraud``, ``fraud:3``, ``fraud@production``, ``store://fraud/3``: the library's grammar (no ``fraud/3``)."""
    from aimass.store import to_ref

    return to_ref(text)


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} {item!r} must look like key=value")
        out[key.strip()] = value.strip()
    return out


@store_app.command("list")
def list_(
    name: str | None = typer.Argument(None, help="only this model"), root: str | None = ROOT, as_json: bool = JSON
) -> None:
    """Every version of every model (or of one), with aliases and metrics."""
    from aimass.store import Listing

    lib = _library(root)
    listing = lib.listing(name)
    if as_json:
        typer.echo(listing.to_json())
    elif not len(listing):
        typer.echo(f"the library at {lib.root} is empty")
    else:
        # The table keeps to the columns of the plain listing; `show` and --json have every detail.
        typer.echo(str(Listing([{**r, "metrics": _metric_summary(r["metrics"])} for r in listing])))


def _metric_summary(metrics: dict[str, float]) -> dict[str, float]:
    keep = [k for k in metrics if not k.startswith(("latency", "throughput"))][:4]
    return {k: metrics[k] for k in keep}


@store_app.command("show")
def show(
    ref: str = typer.Argument(..., help="fraud, fraud@production or fraud:3 (default: latest)"),
    root: str | None = ROOT,
    as_json: bool = JSON,
    events: int = typer.Option(10, "--events", help="the model's last N policy decisions (0: none)"),
) -> None:
    """One version: schema, size, metrics (evaluation results), tags, aliases, gates, and the model's events."""
    from aimass.store.events import read_events

    lib = _library(root)
    parsed = _ref(ref)
    # An alias split between versions (a canary) shows every version with its weight; resolving it
    # would draw one of them at random.
    weights = lib.alias(parsed.name, parsed.alias) if parsed.alias is not None else {}
    if len(weights) > 1:
        total = sum(weights.values())
        infos = [lib.info(parsed.name, v) for v in sorted(weights)]
    else:
        infos = [lib.info(parsed.name, lib.resolve(parsed.name, parsed.selector))]
    gates = lib.gates(parsed.name)
    # The timeline of decisions monitoring policies took (aimass.store.events), newest last.
    timeline = read_events(lib, parsed.name)[-events:] if events > 0 else []
    more = {"gates": gates, "events": [e.model_dump() for e in timeline]}
    if as_json:
        if len(infos) == 1:
            echo_json({**infos[0].to_dict(), **more})
        else:
            versions = [{**i.to_dict(), "weight": weights[i.version] / total} for i in infos]
            echo_json({"name": parsed.name, "alias": parsed.alias, "versions": versions, **more})
        return
    if len(infos) > 1:
        split = ", ".join(f"version {i.version} ({weights[i.version] / total:.0%})" for i in infos)
        typer.echo(f"{parsed.name}@{parsed.alias} -> {split}")
    for n, info in enumerate(infos):
        if n:
            typer.echo("")
        _show_version(info)
    for alias, gate in gates.items():
        typer.echo(f"gate     {alias}: " + ", ".join(f"{k} {v}" for k, v in gate.items()))
    for e in timeline:
        version = f" v{e.version}" if e.version is not None else ""
        mode = " (dry run)" if e.dry_run else ""
        typer.echo(f"event    {e.time[:19].replace('T', ' ')} {e.kind} {e.action}{version}{mode}: {e.reason}")


def _show_version(info: VersionInfo) -> None:
    typer.echo(f"{info.name} version {info.version}  ({info.backend}, {info.framework})")
    aliases = ", ".join(a if w >= 1 else f"{a} ({w:.0%})" for a, w in info.aliases.items()) or "-"
    typer.echo(f"created  {info.created[:19].replace('T', ' ')}\nsize     {info.size} bytes\naliases  {aliases}")
    typer.echo(f"schema   {info.schema}\nprofile  {'recorded' if info.has_profile else 'none'}")
    if info.tags:
        typer.echo("tags     " + " ".join(f"{k}={v}" for k, v in info.tags.items()))
    if info.metrics:
        typer.echo(table([{"metric": k, "value": v} for k, v in info.metrics.items()]))


@store_app.command("publish")
def publish(
    model: str = typer.Argument(..., help="model file, package directory or store reference to publish"),
    name: str = typer.Argument(..., help="model name in the library"),
    # No -m: it is compress's --method (one meaning per short option).
    metric: Annotated[list[str] | None, typer.Option("--metric", help="metric=value recorded with it")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="key=value tag")] = None,
    gate: Annotated[
        list[str] | None, typer.Option("--gate", help="metric=condition to hold, e.g. accuracy='>=0.9'")
    ] = None,
    alias: str | None = typer.Option(None, "--alias", help="move this alias to the new version"),
    root: str | None = ROOT,
    as_json: bool = JSON,
    trust_code: TrustCodeOption = False,
) -> None:
    """Publish a model as the next version of NAME."""
    from aimass.store import Store

    metrics = {k: float(v) for k, v in _pairs(metric, "--metric").items()}
    m = load_model(model, trust_code=trust_code)
    lib = Store(root)
    version = lib.publish(m, name, metrics=metrics, tags=_pairs(tag, "--tag"), gate=_pairs(gate, "--gate"), alias=alias)
    if as_json:
        echo_json({"name": name, "version": version, "alias": alias})
    else:
        typer.echo(f"published {name} version {version}" + (f" as {alias}" if alias else ""))


@store_app.command("alias")
def alias(
    name: str = typer.Argument(..., help="model name"),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="alias, e.g. production"),
    targets: Annotated[
        list[str] | None, typer.Argument(help="VERSION, or VERSION=WEIGHT ... (a canary); none: show")
    ] = None,
    gate: Annotated[list[str] | None, typer.Option("--gate", help="metric=condition every target must pass")] = None,
    set_gate: bool = typer.Option(False, "--store-gate", help="also store --gate for later moves of the alias"),
    delete: bool = typer.Option(False, "--delete", help="remove the alias"),
    root: str | None = ROOT,
    as_json: bool = JSON,
) -> None:
    """Point an alias at a version (or split it by weight), show it, or delete it."""
    lib = _library(root)
    gates = _pairs(gate, "--gate")
    if delete:
        lib.remove_alias(name, alias_name)
        typer.echo(f"removed alias {alias_name} of {name}")
        return
    if set_gate:
        lib.set_gate(name, alias_name, gates or None)
    if targets:
        if len(targets) == 1 and "=" not in targets[0]:
            target: int | dict[int, float] = int(targets[0])
        else:
            target = {int(k): float(v) for k, v in _pairs(targets, "target").items()}
        lib.set_alias(name, alias_name, target, gate=gates or None)
    weights = lib.alias(name, alias_name)
    if as_json:
        echo_json({"name": name, "alias": alias_name, "versions": {str(v): w for v, w in weights.items()}})
    else:
        total = sum(weights.values())
        typer.echo(f"{name}@{alias_name} -> " + ", ".join(f"{v} ({w / total:.0%})" for v, w in weights.items()))


@store_app.command("rm")
def rm(
    ref: str = typer.Argument(..., help="fraud:3 (one version) or fraud (every version)"),
    force: bool = typer.Option(False, "--force", help="also when aliases point at it"),
    root: str | None = ROOT,
) -> None:
    """Delete a version, or a whole model."""
    parsed = _ref(ref)
    if parsed.alias is not None or (parsed.version is None and ref != parsed.name):
        raise ValueError(f"rm takes a version number (fraud:3) or a bare name (every version), not {ref!r}")
    _library(root).remove(parsed.name, parsed.version, force=force)
    typer.echo(f"removed {ref}")


@store_app.command("pull")
def pull(
    ref: str = typer.Argument(..., help="fraud, fraud@production or fraud:3"),
    root: str | None = ROOT,
    as_json: bool = JSON,
) -> None:
    """Download a version into the local cache (verifying checksums) and print its path."""
    lib = _library(root)
    parsed = _ref(ref)
    version = lib.resolve(parsed.name, parsed.selector)
    path = lib.path(parsed.name, version)
    if as_json:
        echo_json({"name": parsed.name, "version": version, "path": str(path)})
    else:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
