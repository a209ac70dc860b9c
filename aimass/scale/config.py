"""A Ray Serve config file for an aimass deployment: ``serve deploy``, ``serve run``, or a KubeRay ``RayService``.

:func:`deploy` deploys from this process; production clusters are usually given a config file
instead, so that the deployment is declared, reviewed and re-applied (``serve deploy serve.yaml``
against a running cluster, or the ``serveConfigV2`` of a KubeRay ``RayService``). This module
writes that file for the same models, server settings, replicas, CPUs and ingress as ``deploy``:
the application's ``import_path`` is :func:`build_app`, whose ``args`` carry the model sources and
the :class:`~aimass.server.ServerSettings` as plain data; the replica count, autoscaling, CPUs and
``max_ongoing_requests`` are the deployment's options in the file, where Ray Serve reads them.

Model sources in the file are paths, model-library references or V2 URLs, read where Ray Serve
builds the application (the head node: bake the packages into the image or mount a volume); they
reach the replicas as package bytes, as with :func:`deploy`. The bearer token is never written:
replicas read ``AIMASS_SERVER_TOKEN`` from their environment (a Kubernetes Secret on KubeRay).

Example:
    >>> doc = serve_config({"mlp": "/models/mlp"}, num_replicas=2, num_cpus=1, max_batch_size=32)
    >>> app = doc["applications"][0]
    >>> app["import_path"], app["deployments"][0]["num_replicas"], app["args"]["settings"]["max_batch_size"]
    ('aimass.scale.deploy:build_app', 2, 32)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aimass.dependencies import require
from aimass.scale.deploy import DEFAULT_MAX_ONGOING_REQUESTS
from aimass.scale.ingress import INGRESS_MODES, choose_ingress
from aimass.server.settings import ServerSettings, build_settings

__all__ = ["rayservice", "serve_config", "write_config"]

# Fields of ServerSettings that never go into a file: a secret, and the address Serve's config sets.
_NOT_WRITTEN = {"auth_token", "host", "port"}


def serve_config(
    models: Mapping[str, str],
    *,
    settings: ServerSettings | None = None,
    num_replicas: int = 1,
    autoscaling: Mapping[str, Any] | None = None,
    name: str = "aimass",
    route_prefix: str = "/",
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
    num_cpus: float | None = None,
    ingress: str = "auto",
    model_options: Mapping[str, Any] | None = None,
    host: str = "0.0.0.0",
    port: int = 8000,
    **knobs: Any,
) -> dict[str, Any]:
    """A Ray Serve config (``ray.serve.schema.ServeDeploySchema``) as a dict, for :func:`deploy`'s arguments.

    ``num_cpus`` None writes 1 CPU per replica (a cluster in a file has no size to fit to yet);
    ``ingress`` picks the environment written for Serve's controller (``auto``: HAProxy where the
    Ray installed here has it). ``host``/``port`` are Serve's ingress on the cluster (every
    interface, 8000); the settings' own are not used.

    Example:
        >>> serve_config({"mlp": "mlp.onnx"})["http_options"]
        {'host': '0.0.0.0', 'port': 8000}
    """
    if not models:
        raise ValueError("a Serve config needs at least one model")
    if autoscaling is not None and num_replicas != 1:
        raise ValueError("give num_replicas or autoscaling, not both")
    replica = build_settings(settings, knobs, where="serve_config")
    data = replica.model_dump(mode="json", exclude_defaults=True, exclude=_NOT_WRITTEN)
    mode, _ = choose_ingress(ingress)
    deployment: dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": max_ongoing_requests,
        "ray_actor_options": {"num_cpus": 1.0 if num_cpus is None else num_cpus},
    }
    if autoscaling is not None:
        deployment["autoscaling_config"] = dict(autoscaling)
    else:
        deployment["num_replicas"] = num_replicas
    args: dict[str, Any] = {"name": name, "models": {n: str(src) for n, src in models.items()}, "settings": data}
    if model_options:
        args["model_options"] = dict(model_options)
    doc: dict[str, Any] = {
        "http_options": {"host": host, "port": port},
        "applications": [
            {
                "name": name,
                "route_prefix": route_prefix,
                "import_path": "aimass.scale.deploy:build_app",
                "args": args,
                "deployments": [deployment],
            }
        ],
    }
    env = INGRESS_MODES[mode]
    if env:
        doc["controller_options"] = {"runtime_env": {"env_vars": dict(env)}}
    return doc


def rayservice(config: Mapping[str, Any], *, name: str, image: str, workers: int = 1) -> dict[str, Any]:
    """A KubeRay ``RayService`` manifest (``ray.io/v1``) serving ``config`` on a head and ``workers`` worker pods.

    The ingress environment is set on every Ray container as well as in ``controller_options``,
    so that each node's processes start with it. Resources, node selectors and the image's
    contents (aimass, the model framework, the packages) are the operator's to fill in.

    Example:
        >>> rs = rayservice(serve_config({"mlp": "/models/mlp"}), name="fraud", image="me/aimass:1")
        >>> rs["kind"], rs["spec"]["serveConfigV2"].startswith("http_options")
        ('RayService', True)
    """
    yaml = _yaml()
    env = dict(config.get("controller_options", {}).get("runtime_env", {}).get("env_vars", {}))
    env_list = [{"name": k, "value": v} for k, v in env.items()]
    # Replicas read the bearer token from here; the Secret named aimass-token is the operator's.
    token = {
        "name": "AIMASS_SERVER_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "aimass-token", "key": "token", "optional": True}},
    }

    def container(kind: str) -> dict[str, Any]:
        return {"name": f"ray-{kind}", "image": image, "env": [*env_list, token]}

    port = int(config.get("http_options", {}).get("port", 8000))
    head = container("head")
    head["ports"] = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": port, "name": "serve"},
    ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": name},
        "spec": {
            "serveConfigV2": yaml.safe_dump(dict(config), sort_keys=False),
            "rayClusterConfig": {
                "headGroupSpec": {
                    # No replicas on the head: it keeps the controller and HAProxy to itself.
                    "rayStartParams": {"num-cpus": "0"},
                    "template": {"spec": {"containers": [head]}},
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "replicas",
                        "replicas": workers,
                        "minReplicas": workers,
                        "maxReplicas": max(workers, 1),
                        "rayStartParams": {},
                        "template": {"spec": {"containers": [container("worker")]}},
                    }
                ],
            },
        },
    }


def _yaml() -> Any:
    return require("yaml", feature="Ray Serve config files", extra="ray", package="pyyaml")


def write_config(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as YAML (JSON for a ``.json`` path), atomically; returns the path.

    Example:
        >>> write_config("serve.yaml", serve_config({"mlp": "/models/mlp"}))   # doctest: +SKIP
        PosixPath('serve.yaml')
    """
    target = Path(path)
    text = (
        json.dumps(doc, indent=2) + "\n"
        if target.suffix.lower() == ".json"
        else _yaml().safe_dump(dict(doc), sort_keys=False)
    )
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return target
