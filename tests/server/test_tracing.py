"""Tracing: spans of served requests in the SDK's in-memory exporter, the client's trace continued."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import models
import numpy as np
import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aimass import Model
from aimass.backends.remote import mount, unmount
from aimass.server import create_app
from aimass.server.tracing import ServerTracing


@pytest.fixture(scope="module")
def traced() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter, provider


@pytest.mark.parametrize("batching", [0, 8])
def test_server_spans_continue_the_callers_trace(
    traced: tuple[InMemorySpanExporter, TracerProvider], tmp_path_factory: pytest.TempPathFactory, batching: int
) -> None:
    exporter, provider = traced
    exporter.clear()
    mlp = Model.load(models.onnx_mlp(tmp_path_factory.mktemp("t") / "mlp.onnx"))
    app = create_app({"mlp": mlp}, trace=ServerTracing(provider), max_batch_size=batching)
    mount("http://traced.example", app)
    try:
        remote = Model.load("http://traced.example/v2/models/mlp")
        client_tracer = provider.get_tracer("test-client")
        with client_tracer.start_as_current_span("caller") as caller:
            out = remote.predict(np.ones((2, 4), np.float32))
        np.testing.assert_allclose(out["y"], mlp.predict(np.ones((2, 4), np.float32))["y"], rtol=1e-6)
    finally:
        unmount("http://traced.example")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server = spans["infer mlp"]
    assert server.kind == trace.SpanKind.SERVER
    assert server.context.trace_id == caller.get_span_context().trace_id  # W3C traceparent from the remote backend
    assert server.parent is not None and server.parent.span_id == caller.get_span_context().span_id
    stages = ["decode", "queue", "compute", "encode"] if batching == 0 else ["decode", "batch", "encode"]
    for name in stages:
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == server.context.span_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    assert server.attributes["aimass.model"] == "mlp" and server.attributes["http.response.status_code"] == 200


def test_nothing_is_imported_when_tracing_is_off() -> None:
    code = (
        "import sys, numpy as np\n"
        "from aimass import Model\n"
        "from aimass.server import create_app\n"
        "from aimass.backends.remote import mount\n"
        "app = create_app({'m': sys.argv[1]})\n"
        "mount('http://m.example', app)\n"
        "Model.load('http://m.example/v2/models/m').predict(np.ones((1, 4), np.float32))\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'opentelemetry imported'\n"
    )
    path = models.onnx_mlp(Path(tempfile.mkdtemp()) / "m.onnx")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120)
