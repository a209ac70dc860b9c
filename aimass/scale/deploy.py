"""aimass models as a Ray Serve deployment that speaks the same V2 HTTP API as ``aimass serve``.

Each replica runs our own ASGI app (:func:`aimass.server.create_app`): the same codec, the same
errors and status codes, the same dynamic batcher and ``/metrics``. Ray Serve adds what one
process cannot: replicas on every node of a cluster, its ingress (HAProxy, or its Python proxy)
spreading requests over them, healing after a lost node, and autoscaling on ongoing requests.
Models reach replicas as package bytes (:mod:`aimass.scale.bundle`), never as pickled objects.

Autoscaling takes Ray Serve's ``AutoscalingConfig`` keys: ``min_replicas``, ``max_replicas``,
``target_ongoing_requests`` (per replica, default 2), ``upscale_delay_s`` (30),
``downscale_delay_s`` (600), ``metrics_interval_s``, ``look_back_period_s`` and the rest.

Ingress: Ray Serve's high-throughput path by default (HAProxy in front of replicas that listen
themselves, where the installed Ray has it; see :mod:`aimass.scale.ingress`): ``deploy`` logs the
mode that runs and ``Service.ingress`` names it. Placement: replicas the cluster cannot place raise
:class:`~aimass.errors.PlacementError` at once, naming the CPUs asked for and free; left to aimass
(``num_cpus=None``), each replica reserves a share of a CPU that fits (:mod:`aimass.scale.placement`).

Each replica's app takes the same :class:`~aimass.server.ServerSettings` as ``aimass serve``
(``deploy(models, settings=...)`` or its fields as keywords); ``host``/``port`` are Serve's proxy.
Deploying is :func:`deploy` (``aimass scale deploy``); running a server in this process is
:func:`aimass.server.serve` (``aimass serve``). ``serve``, the former name, still works with a
DeprecationWarning.

Example:
    >>> from aimass.scale import deploy
    >>> svc = deploy({"mlp": "mlp.onnx"}, autoscaling={"min_replicas": 1, "max_replicas": 4})  # doctest: +SKIP
    >>> Model.load(f"{svc.url}/v2/models/mlp").predict(rows)                                   # doctest: +SKIP
    >>> svc.scale(num_replicas=2); svc.shutdown()                                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

from aimass.errors import ModelLoadError, PlacementError
from aimass.scale.bundle import ModelSource, bundle, load_source
from aimass.scale.cluster import connect, local_cluster, ray_module
from aimass.scale.ingress import choose_ingress, describe, ingress_env, replica_urls, running_ingress
from aimass.scale.placement import cluster_cpus, fit_cpus
from aimass.server.settings import ServerSettings, build_settings

__all__ = [
    "DEFAULT_MAX_ONGOING_REQUESTS",
    "DEFAULT_READY_TIMEOUT",
    "ModelServer",
    "Service",
    "build_app",
    "deploy",
    "serve",
]

logger = logging.getLogger("aimass.scale")

# Ray Serve's own default (5) caps what one replica's batcher can merge; 64 lets a replica batch.
DEFAULT_MAX_ONGOING_REQUESTS = 64
#: Seconds a deployment or a change of scale may take to run before it is deleted and refused.
DEFAULT_READY_TIMEOUT = 120.0


class ModelServer:
    """One replica: loads the models once, then serves them with :func:`aimass.server.create_app`.

    Ray Serve wraps this class with ``serve.ingress()``; it calls ``__serve_build_asgi_app__``
    after ``__init__`` on each replica.
    """

    def __init__(
        self,
        sources: Mapping[str, ModelSource],
        settings: ServerSettings,
        model_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.models = {name: load_source(src, model_options) for name, src in sources.items()}
        self.settings = settings

    def __serve_build_asgi_app__(self) -> Any:
        from aimass.server import create_app

        return _strip_root_path(create_app(self.models, settings=self.settings))


def build_app(args: Mapping[str, Any]) -> Any:
    """The Ray Serve application a config file names (``import_path: aimass.scale.deploy:build_app``).

    ``args``: ``name``, ``models`` (name -> path, library reference or V2 URL, read where Serve
    builds the application), ``settings`` (:class:`~aimass.server.ServerSettings` fields) and
    ``model_options``. Replicas, autoscaling and CPUs are the file's deployment options.
    :func:`aimass.scale.config.serve_config` writes such a file.

    Example:
        >>> app = build_app({"name": "aimass", "models": {"mlp": "/models/mlp"}})   # doctest: +SKIP
    """
    rs = ray_module("ray.serve")
    name = str(args.get("name", "aimass"))
    options = args.get("model_options") or None
    sources = {n: bundle(src, name=n, options=options) for n, src in dict(args["models"]).items()}
    settings = ServerSettings(**dict(args.get("settings") or {}))
    deployment = rs.deployment(rs.ingress()(ModelServer), name=name, max_ongoing_requests=DEFAULT_MAX_ONGOING_REQUESTS)
    return deployment.bind(sources, settings, dict(options) if options else None)


def _strip_root_path(app: Any) -> Any:
    """Serve the app under a route prefix: Ray Serve keeps the prefix in ``path`` and names it in ``root_path``."""

    async def prefixed(scope: dict[str, Any], receive: Any, send: Any) -> None:
        root = scope.get("root_path", "")
        if root and scope.get("type") == "http" and scope["path"].startswith(root):
            scope = {**scope, "path": scope["path"][len(root) :] or "/"}
        await app(scope, receive, send)

    prefixed.app = app  # type: ignore[attr-defined]
    return prefixed


@dataclasses.dataclass
class Service:
    """A running Ray Serve application of aimass models: its URL, ingress, scaling and shutdown."""

    name: str
    url: str
    deployment: Any  # ray.serve Deployment (options applied)
    args: tuple[Any, ...]
    route_prefix: str
    ingress: str = "unknown"  # the ingress that runs: haproxy, direct, proxy (aimass.scale.ingress)
    num_cpus: float = 1.0  # CPUs each replica reserves
    fitted: bool = False  # num_cpus chosen by aimass to fit the cluster (scale() may lower it)
    ready_timeout: float = DEFAULT_READY_TIMEOUT

    def scale(self, num_replicas: int | None = None, *, autoscaling: Mapping[str, Any] | None = None) -> None:
        """Change the replica count, or switch to autoscaling, without dropping requests.

        Ray Serve applies a change of scale alone in place: running replicas keep serving while
        new ones start, and replicas that go away finish their requests first. A count the cluster
        cannot place raises :class:`~aimass.errors.PlacementError` at once, unless the CPUs per
        replica were left to aimass: then each replica gets a smaller share that fits; Ray Serve
        first replaces the running replicas a few at a time (each drains first), then adds more.

        Example:
            >>> svc.scale(2); svc.scale(autoscaling={"min_replicas": 1, "max_replicas": 4})   # doctest: +SKIP
        """
        if (num_replicas is None) == (autoscaling is None):
            raise ValueError("give num_replicas or autoscaling, not both")
        wanted = num_replicas if autoscaling is None else int(autoscaling.get("min_replicas", 1))
        if wanted:
            held = self.replicas() * self.num_cpus  # what this application holds now is its to reuse
            free, total = cluster_cpus(want=wanted * (1.0 if self.fitted else self.num_cpus) - held)
            free += held
            what = f"{wanted} replicas of {self.name!r}"
            share = fit_cpus(wanted, None if self.fitted else self.num_cpus, free=free, total=total, what=what)
            if share < self.num_cpus:
                # Two steps: replacing the replicas and adding more at once makes Ray Serve start the new
                # ones first, and the old ones then hold the CPUs the last new ones wait for, for ever.
                logger.info("%s: each replica now reserves %g CPU to fit %d on the cluster", self.name, share, wanted)
                options = {**(self.deployment.ray_actor_options or {}), "num_cpus": share}
                self.deployment = self.deployment.options(ray_actor_options=options)
                self.num_cpus = share
                _run_until_ready(self.deployment.bind(*self.args), self.name, self.route_prefix, self.ready_timeout)
        if autoscaling is not None:
            self.deployment = self.deployment.options(num_replicas="auto", autoscaling_config=dict(autoscaling))
        else:
            self.deployment = self.deployment.options(num_replicas=num_replicas, autoscaling_config=None)
        _run_until_ready(self.deployment.bind(*self.args), self.name, self.route_prefix, self.ready_timeout)

    def replicas(self) -> int:
        """Replicas running now."""
        rs = ray_module("ray.serve")
        app = rs.status().applications.get(self.name)
        if app is None:
            return 0
        dep = app.deployments.get(self.deployment.name)
        return 0 if dep is None else int(dep.replica_states.get("RUNNING", 0))

    def wait_replicas(self, count: int, timeout: float = 60.0) -> None:
        """Block until exactly ``count`` replicas run (TimeoutError after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while (now := self.replicas()) != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {now} replicas running after {timeout} s, expected {count}")
            time.sleep(0.2)

    def replica_urls(self) -> list[str]:
        """The replicas' own ``http://host:port`` when they listen themselves (direct ingress), else [].

        Example:
            >>> urls = svc.replica_urls()                                                      # doctest: +SKIP
            >>> Model.load(f"{urls[0]}/v2/models/mlp", options={"endpoints": urls[1:]})        # doctest: +SKIP
        """
        return replica_urls(self.name)

    def shutdown(self) -> None:
        """Delete this application (the Ray Serve instance and the cluster keep running)."""
        ray_module("ray.serve").delete(self.name)


def _run_until_ready(app: Any, name: str, route_prefix: str, timeout: float) -> None:
    """``serve.run`` that gives up: the application runs within ``timeout`` seconds, or it is deleted and refused.

    Ray Serve's own ``serve.run`` waits forever for replicas it cannot start (no CPUs, a model
    that fails to load on every try), logging every 30 s; here the caller gets Ray's reason.
    """
    rs = ray_module("ray.serve")
    run = getattr(rs.api, "_run", None)
    if run is None:  # a Ray without the non-blocking form: its blocking run
        rs.run(app, name=name, route_prefix=route_prefix)
        return
    run(app, _blocking=False, name=name, route_prefix=route_prefix)
    deadline = time.monotonic() + timeout
    while True:
        status = rs.status().applications.get(name)
        state = str(getattr(status, "status", ""))
        if state.endswith("RUNNING"):
            return
        failed = state.endswith("DEPLOY_FAILED") or state.endswith("UNHEALTHY")
        if failed or time.monotonic() > deadline:
            messages = [status.message] if status is not None and status.message else []
            if status is not None:
                messages += [d.message for d in status.deployments.values() if d.message]
            said = " ".join(messages)[:2000] or "nothing"
            rs.delete(name, _blocking=False)  # else Ray Serve keeps retrying in the background, silently
            if failed:
                raise ModelLoadError(f"Ray Serve could not deploy {name!r} ({state.rsplit('.', 1)[-1]}): {said}")
            raise PlacementError(f"Ray Serve did not run {name!r} within {timeout:g} s (deleted); it says: {said}")
        time.sleep(0.2)


def deploy(
    models: Mapping[str, Any],
    *,
    settings: ServerSettings | None = None,
    num_replicas: int = 1,
    autoscaling: Mapping[str, Any] | None = None,
    name: str = "aimass",
    route_prefix: str = "/",
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    num_cpus: float | None = None,
    ingress: str = "auto",
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    model_options: Mapping[str, Any] | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    init_options: Mapping[str, Any] | None = None,
    **knobs: Any,
) -> Service:
    """Deploy ``models`` (name -> ``Model``, file, package or V2 URL) on Ray Serve; returns a :class:`Service`.

    ``num_replicas`` fixes the replica count; ``autoscaling`` (Ray Serve ``AutoscalingConfig``
    keys, see the module docstring) lets Ray Serve choose it between ``min_replicas`` and
    ``max_replicas`` from the ongoing requests per replica; ``max_ongoing_requests`` is how many
    requests Ray Serve sends one replica at once. Each replica reserves ``num_cpus`` of the cluster:
    None fits them to the CPUs free (1 each at most, a share of one on a small cluster); a count
    the cluster cannot place raises :class:`~aimass.errors.PlacementError` before Ray is asked,
    and a deployment not running within ``ready_timeout`` seconds is deleted and refused.
    ``ingress``: ``auto`` (Ray's fastest the installed Ray has), ``haproxy``, ``direct`` or
    ``proxy`` (:mod:`aimass.scale.ingress`); it applies when this call starts Serve.
    Each replica's app takes ``settings`` (:class:`~aimass.server.ServerSettings`, with ``knobs``
    of the same names applied over it: ``max_batch_size``, ``max_queue_delay``, ``instances``,
    ``threads``, ``max_queue_size`` ...) exactly as ``aimass serve`` does; ``host``/``port``
    configure Ray Serve's HTTP proxy when this call starts Serve (an already running Serve instance
    keeps its own). ``auth_token`` None takes ``AIMASS_SERVER_TOKEN`` from this process, not the
    replicas'. Connects with ``init_options`` to ``RAY_ADDRESS`` or a new local cluster.

    Example:
        >>> svc = deploy({"mlp": Model.load("mlp.onnx")}, num_replicas=2, port=8000)   # doctest: +SKIP
        >>> svc.url
        'http://127.0.0.1:8000'
    """
    if not models:
        raise ValueError("deploy needs at least one model")
    if autoscaling is not None and num_replicas != 1:
        raise ValueError("give num_replicas or autoscaling, not both")
    replica = build_settings(settings, knobs, where="deploy")
    if replica.auth_token is None and os.environ.get("AIMASS_SERVER_TOKEN"):
        # Read here: the replicas run elsewhere, where this environment variable may not be set.
        replica = replica.model_copy(update={"auth_token": os.environ["AIMASS_SERVER_TOKEN"]})
    mode, note = choose_ingress(ingress)
    sources = {n: bundle(src, name=n, options=model_options) for n, src in models.items()}
    connect(**dict(init_options or {}))
    actor_options = dict(ray_actor_options or {})
    given = actor_options.get("num_cpus", num_cpus)
    bounds = dict(autoscaling or {})
    # Left to aimass, replicas are sized for the most of them; asked for, the fewest must fit.
    count = (
        num_replicas if autoscaling is None else int(bounds.get("max_replicas" if given is None else "min_replicas", 1))
    )
    free, total = cluster_cpus(want=count * (1.0 if given is None else given))
    share = (
        fit_cpus(count, given, free=free, total=total, what=f"{count} replicas of {name!r}") if count else given or 1.0
    )
    most = int(bounds.get("max_replicas", 1))
    if autoscaling is not None and most * share > free + 1e-9:
        logger.warning(
            "%s: autoscaling to %d replicas x %g CPU needs %g CPUs; %g are free now, so it stops at %d unless the "
            "cluster grows",
            name, most, share, most * share, free, int(free // share) if share else most,
        )  # fmt: skip
    actor_options["num_cpus"] = share
    rs = ray_module("ray.serve")
    scaling: dict[str, Any] = (
        {"num_replicas": "auto", "autoscaling_config": dict(autoscaling)}
        if autoscaling is not None
        else {"num_replicas": num_replicas}
    )
    deployment = rs.deployment(
        rs.ingress()(ModelServer),
        name=name,
        max_ongoing_requests=max_ongoing_requests,
        ray_actor_options=actor_options,
        **scaling,
    )
    _start_serve(rs, replica, mode)
    args = (sources, replica, dict(model_options) if model_options else None)
    _run_until_ready(deployment.bind(*args), name, route_prefix, ready_timeout)
    # A Serve instance started earlier keeps its own proxy address and ingress: report those in use.
    http = rs.context._get_global_client().http_config
    url = f"http://{http.host}:{http.port}{route_prefix.rstrip('/')}"
    running = running_ingress(name)
    if note:
        logger.warning("%s: %s", name, note)
    if running not in (mode, "unknown"):
        logger.warning("%s: asked for %s ingress; the running Serve instance uses %s (kept)", name, mode, running)
    logger.info("%s on Ray Serve at %s: %s ingress, %s", name, url, running, describe(running))
    return Service(
        name=name,
        url=url,
        deployment=deployment,
        args=args,
        route_prefix=route_prefix,
        ingress=running,
        num_cpus=share,
        fitted=given is None,
        ready_timeout=ready_timeout,
    )


def _start_serve(rs: Any, settings: ServerSettings, mode: str) -> None:
    """Start Serve with ``mode``'s environment for its controller (and so its proxies and replicas).

    A Serve instance already running on the cluster keeps its options: Ray ignores new ones.
    """
    http = {"host": settings.host, "port": settings.port}
    env = ingress_env(mode, local=local_cluster())
    try:
        rs.start(http_options=http, controller_options={"runtime_env": {"env_vars": env}} if env else None)
    except TypeError:  # a Ray before controller_options: its default ingress
        rs.start(http_options=http)


def serve(models: Mapping[str, Any], *, app_options: Mapping[str, Any] | None = None, **options: Any) -> Service:
    """The former name of :func:`deploy` (it deploys to Ray; it never runs a server here): deprecated.

    ``app_options`` (``create_app`` keywords) are settings given as keywords now.

    Example:
        >>> svc = serve({"mlp": "mlp.onnx"}, num_replicas=2)   # doctest: +SKIP
    """
    warnings.warn(
        "aimass.scale.serve is now aimass.scale.deploy (it deploys to Ray Serve; aimass.server.serve runs a "
        "server here); app_options are settings given as keywords",
        DeprecationWarning,
        stacklevel=2,
    )
    return deploy(models, **{**dict(app_options or {}), **options})
