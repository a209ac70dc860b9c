"""Worker processes: N copies of the V2 server sharing one port, kept alive by a supervisor.

``serve_workers`` binds the HTTP socket once, in the supervisor, and hands it to N worker
processes (uvicorn's multiprocess model, the same as gunicorn's arbiter). Each worker builds its
own app: its own models, batchers, thread pool and event loop, so a model call, the JSON work and
a native crash stay inside one process. The supervisor checks its workers twice a second and
starts a new one for any that died; requests in flight on a dead worker fail (the client sees its
connection closed), every other request is answered by the workers still running, and connections
waiting in the shared accept queue are taken by them. A socket bound once, rather than one socket
per worker with ``SO_REUSEPORT``, is why: the kernel's accept queue outlives any worker, whereas
with ``SO_REUSEPORT`` the connections queued on a dying worker's socket are reset with it.

A worker is judged dead when its process has exited, or when, once serving, it leaves the
supervisor's health check unanswered for :data:`HEALTHCHECK_TIMEOUT` seconds (then it is killed).
While it starts (imports, model loading, which can hold the GIL for seconds) it is not timed: on
a busy machine uvicorn's own check killed starting workers that were merely slow, with no reason
given. Every death is logged with its reason (exit code, signal, or the unanswered check).

The gRPC port (``grpc_port``) cannot be handed over that way (grpcio binds its own sockets), so
each worker binds it with ``SO_REUSEPORT``, as gRPC's own multiprocessing guide does; the
supervisor first checks that the port is free. A gRPC call in flight on a dead worker fails with
UNAVAILABLE and the channel reconnects to a live one.

Prometheus metrics are summed across workers with prometheus-client's multiprocess mode: the
supervisor points ``PROMETHEUS_MULTIPROC_DIR`` at a private temporary directory before the workers
start, each worker's ``GET /metrics`` reads every worker's values from it
(:meth:`aimass.server.metrics.Metrics.render`), and a dead worker's live gauges are dropped
(``mark_process_dead``) while its counters stay counted. The directory is removed on exit.

Example:
    >>> serve_workers({"mlp": "mlp.onnx"}, workers=4, port=8000, max_batch_size=64)   # doctest: +SKIP
    >>> serve_workers(repository="models/", settings=ServerSettings(workers=4, threads=2))   # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aimass.errors import ModelLoadError
from aimass.server.listen import bind, ensure_free
from aimass.server.metrics import MULTIPROCESS_ENV
from aimass.server.run import uvicorn_options
from aimass.server.settings import ServerSettings, build_settings

__all__ = ["HEALTHCHECK_TIMEOUT", "exit_reason", "serve_workers"]

log = logging.getLogger("aimass.server")

#: Seconds a serving worker may leave the supervisor's health check unanswered before it is killed.
HEALTHCHECK_TIMEOUT = 5.0

Sources = Mapping[str, str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]]]
Receive = Callable[[], Any]


def serve_workers(
    models: Sources | None = None,
    *,
    repository: str | os.PathLike[str] | None = None,
    settings: ServerSettings | None = None,
    model_options: Mapping[str, Any] | None = None,
    setup: Callable[[], None] | None = None,
    sock: socket.socket | None = None,
    **knobs: Any,
) -> None:
    """Serve models from ``workers`` processes sharing ``host:port`` until interrupted (SIGINT/SIGTERM).

    ``models``, ``repository`` and ``model_options`` are what :func:`aimass.server.create_app`
    takes, with models as paths: every worker loads them itself. ``settings``
    (:class:`~aimass.server.settings.ServerSettings`, with ``knobs`` of the same names applied over
    it; ``workers`` defaults to 2 here) say how: ``workers`` processes, each with ``threads`` model
    threads, listening on ``host:port`` (and ``grpc_port``), the request deadlines
    (``header_timeout`` / ``body_timeout``, :func:`aimass.server.run.uvicorn_options`) and every
    knob of each worker's app. ``setup`` (a module-level function, pickled to each worker) runs in
    every worker before its models load: the place to :func:`aimass.backends.register` a backend of
    your own. ``sock``: a socket already bound to ``host:port`` (:func:`aimass.server.listen.bind`),
    which the workers share instead of one bound here. Raises ModelLoadError when a worker cannot
    start (a model that does not load), after stopping the others.

    Example:
        >>> serve_workers(repository="models/", workers=4, grpc_port=8001)   # doctest: +SKIP
    """
    import uvicorn
    from prometheus_client.multiprocess import mark_process_dead
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors.multiprocess import Multiprocess, Process

    if settings is None and "workers" not in knobs:
        knobs = {**knobs, "workers": 2}  # this function's default since it exists: more than one process
    s = build_settings(settings, knobs, where="serve_workers")
    if models is None and repository is None:
        raise ValueError("serve_workers needs models, a repository directory, or both")
    if s.grpc_port:
        ensure_free(s.host, s.grpc_port)
    options = dict(model_options) if model_options else None
    factory = functools.partial(_worker_app, _as_paths(models), repository, s, options, setup)
    uvicorn_config = uvicorn_options(s.log_level, header_timeout=s.header_timeout, body_timeout=s.body_timeout)
    config = uvicorn.Config(factory, factory=True, host=s.host, port=s.port, workers=s.workers, **uvicorn_config)
    if sock is None:  # first: a port in use ends here, before anything is created
        sock = bind(s.host, s.port)
    metrics_dir = tempfile.mkdtemp(prefix="aimass-metrics-")
    previous = os.environ.get(MULTIPROCESS_ENV)
    os.environ[MULTIPROCESS_ENV] = metrics_dir  # inherited by the workers, which import prometheus-client afresh

    class Supervisor(Multiprocess):
        """uvicorn's supervisor, which does not time a starting worker, says why a worker died, and
        forgets a dead worker's live gauges."""

        def __init__(self, config: Any, sockets: list[socket.socket]) -> None:
            super().__init__(config, sockets)
            self.serving: set[int] = set()  # pids that answered the health check as started
            self.pinged: set[int] = set()  # starting workers asked and not yet answered

        def keep_subprocess_alive(self) -> None:
            if self.should_exit.is_set():
                return  # shutting down: workers exit on purpose
            for index, process in enumerate(self.processes):
                reason = self.failure(process)
                if reason is None:
                    continue
                process.kill()  # a hung worker is still running
                process.join()
                pid = process.pid or 0
                self.serving.discard(pid)
                self.pinged.discard(pid)
                mark_process_dead(pid, metrics_dir)
                if process.exitcode == STARTUP_FAILURE:  # its models cannot load: every restart would fail
                    log.error("worker %d could not start; stopping the server", pid)
                    self.should_exit.set()
                    return
                log.warning("worker %d %s; a new one is starting", pid, reason)
                self.processes[index] = replacement = Process(self.config, self.sockets)
                replacement.start()

        def failure(self, process: Process) -> str | None:
            """Why ``process`` must be replaced (it exited, or stopped answering once serving); None while fine."""
            pid = process.pid or 0
            if not process.process.is_alive():
                return exit_reason(process.exitcode)
            if pid in self.serving:
                if process.ping(HEALTHCHECK_TIMEOUT):
                    return None
                return f"did not answer the supervisor's health check within {HEALTHCHECK_TIMEOUT:g} s (hung?); killed"
            # Starting: ask without waiting, and read the answer (started or not) on a later round.
            try:
                if pid not in self.pinged:
                    process.parent_conn.send(b"ping")
                    self.pinged.add(pid)
                if process.parent_conn.poll(0):
                    self.pinged.discard(pid)
                    if process.parent_conn.recv():
                        self.serving.add(pid)
            except (OSError, EOFError):
                pass  # the worker is exiting: the next round sees its exit code
            return None

    try:
        supervisor = Supervisor(config, sockets=[sock])
        supervisor.run()
        if any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes):
            raise ModelLoadError("a worker could not load its models (its log above says why); the server stopped")
    finally:
        sock.close()
        if previous is None:
            os.environ.pop(MULTIPROCESS_ENV, None)
        else:
            os.environ[MULTIPROCESS_ENV] = previous
        shutil.rmtree(metrics_dir, ignore_errors=True)


def exit_reason(exitcode: int | None) -> str:
    """How a worker process ended, for the log line of its death.

    Example:
        >>> exit_reason(-9), exit_reason(1)
        ('was killed by signal SIGKILL (the out-of-memory killer, or a person)', 'exited with code 1')
    """
    if exitcode is None:
        return "stopped"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        why = {"SIGKILL": " (the out-of-memory killer, or a person)", "SIGSEGV": " (a crash in native code)"}
        return f"was killed by signal {name}{why.get(name, '')}"
    return f"exited with code {exitcode}"


def _as_paths(models: Sources | None) -> dict[str, Any] | None:
    """Sources that can travel to a worker; a ``Model`` object cannot (each worker loads its own)."""
    if models is None:
        return None
    out: dict[str, Any] = {}
    for name, src in models.items():
        versions = src if isinstance(src, Mapping) else {"1": src}
        for v in versions.values():
            if not isinstance(v, (str, os.PathLike)):
                raise TypeError(
                    f"model {name!r}: worker processes load models from paths, got a {type(v).__name__}; "
                    "save it (model.save(dir)) and pass the directory"
                )
        out[name] = {str(k): str(v) for k, v in src.items()} if isinstance(src, Mapping) else str(src)
    return out


def _worker_app(
    models: dict[str, Any] | None,
    repository: str | os.PathLike[str] | None,
    settings: ServerSettings,
    model_options: dict[str, Any] | None,
    setup: Callable[[], None] | None,
) -> Any:
    """Runs in each worker (uvicorn's app factory): build this worker's app, with gRPC beside it."""
    from uvicorn.config import STARTUP_FAILURE

    from aimass.server.app import create_app

    try:
        if setup is not None:
            setup()
        root = Path(repository) if repository is not None else None
        app = create_app(models, repository=root, model_options=model_options, settings=settings)
    except Exception:
        # uvicorn's supervisor stops on this exit code instead of restarting a worker that cannot start.
        log.exception("worker %d could not load its models", os.getpid())
        sys.exit(STARTUP_FAILURE)
    if not settings.grpc_port:
        return app
    return GrpcBeside(app, settings.host, settings.grpc_port)


class GrpcBeside:
    """The app, plus a gRPC server for it started and stopped with the worker (ASGI lifespan).

    Each worker binds the gRPC port with ``SO_REUSEPORT`` (:func:`aimass.server.grpc.create_server`).
    """

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.repository = app.repository
        self._server: Any = None

    async def __call__(self, scope: Any, receive: Receive, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)

        async def hooked() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                from aimass.server.grpc import create_server

                self._server, _ = create_server(self.app, host=self.host, port=self.port, reuse_port=True)
                await self._server.start()
            elif message["type"] == "lifespan.shutdown" and self._server is not None:
                await self._server.stop(grace=5)
            return message

        return await self.app(scope, hooked, send)
