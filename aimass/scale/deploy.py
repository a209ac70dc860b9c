"""aimass models as a Ray Serve deployment that speaks the same V2 HTTP API as ``aimass serve``.

Each replica runs our own ASGI app (:func:`aimass.server.create_app`): the same codec, the same
errors and status codes, the same dynamic batcher and ``/metrics``. Ray Serve adds what one
process cannot: replicas on every node of a cluster, its HTTP proxy routing each request to the
less loaded of two sampled replicas (power of two choices), and autoscaling on ongoing requests.
Models reach replicas as package bytes (:mod:`aimass.scale.bundle`), never as pickled objects.

Autoscaling takes Ray Serve's ``AutoscalingConfig`` keys: ``min_replicas``, ``max_replicas``,
``target_ongoing_requests`` (per replica, default 2), ``upscale_delay_s`` (30),
``downscale_delay_s`` (600), ``metrics_interval_s``, ``look_back_period_s`` and the rest.

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
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

from aimass.scale.bundle import ModelSource, bundle, load_source
from aimass.scale.cluster import connect, ray_module
from aimass.server.settings import ServerSettings, build_settings

__all__ = ["DEFAULT_MAX_ONGOING_REQUESTS", "ModelServer", "Service", "deploy", "serve"]

# Ray Serve's own default (5) caps what one replica's batcher can merge; 64 lets a replica batch.
DEFAULT_MAX_ONGOING_REQUESTS = 64


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
    """A running Ray Serve application of aimass models: its URL, scaling and shutdown."""

    name: str
    url: str
    deployment: Any  # ray.serve Deployment (options applied)
    args: tuple[Any, ...]
    route_prefix: str

    def scale(self, num_replicas: int | None = None, *, autoscaling: Mapping[str, Any] | None = None) -> None:
        """Change the replica count, or switch to autoscaling, without dropping requests.

        Ray Serve applies a change of scale alone in place: running replicas keep serving while
        new ones start, and replicas that go away finish their requests first.

        Example:
            >>> svc.scale(2); svc.scale(autoscaling={"min_replicas": 1, "max_replicas": 4})   # doctest: +SKIP
        """
        rs = ray_module("ray.serve")
        if (num_replicas is None) == (autoscaling is None):
            raise ValueError("give num_replicas or autoscaling, not both")
        if autoscaling is not None:
            self.deployment = self.deployment.options(num_replicas="auto", autoscaling_config=dict(autoscaling))
        else:
            self.deployment = self.deployment.options(num_replicas=num_replicas, autoscaling_config=None)
        rs.run(self.deployment.bind(*self.args), name=self.name, route_prefix=self.route_prefix)

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

    def shutdown(self) -> None:
        """Delete this application (the Ray Serve instance and the cluster keep running)."""
        ray_module("ray.serve").delete(self.name)


def deploy(
    models: Mapping[str, Any],
    *,
    settings: ServerSettings | None = None,
    num_replicas: int = 1,
    autoscaling: Mapping[str, Any] | None = None,
    name: str = "aimass",
    route_prefix: str = "/",
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    num_cpus: float = 1.0,
    model_options: Mapping[str, Any] | None = None,
    ray_actor_options: Mapping[str, Any] | None = None,
    init_options: Mapping[str, Any] | None = None,
    **knobs: Any,
) -> Service:
    """Deploy ``models`` (name -> ``Model``, file, package or V2 URL) on Ray Serve; returns a :class:`Service`.

    ``num_replicas`` fixes the replica count; ``autoscaling`` (Ray Serve ``AutoscalingConfig``
    keys, see the module docstring) lets Ray Serve choose it between ``min_replicas`` and
    ``max_replicas`` from the ongoing requests per replica; ``max_ongoing_requests`` is how many
    requests Ray Serve sends one replica at once. Each replica reserves ``num_cpus`` of the cluster.
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
    sources = {n: bundle(src, name=n, options=model_options) for n, src in models.items()}
    connect(**dict(init_options or {}))
    rs = ray_module("ray.serve")
    actor_options = {"num_cpus": num_cpus, **dict(ray_actor_options or {})}
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
    rs.start(http_options={"host": replica.host, "port": replica.port})
    args = (sources, replica, dict(model_options) if model_options else None)
    rs.run(deployment.bind(*args), name=name, route_prefix=route_prefix)
    # A Serve instance started earlier keeps its own proxy address: report the one in use.
    http = rs.context._get_global_client().http_config
    url = f"http://{http.host}:{http.port}{route_prefix.rstrip('/')}"
    return Service(name=name, url=url, deployment=deployment, args=args, route_prefix=route_prefix)


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
