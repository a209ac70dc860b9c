"""Serve a model with aimass and call it back: the remote Model behaves like the local one.

1. build a small ONNX model and save it into a model repository ``<repo>/<name>/<version>/``;
2. serve the repository with uvicorn (what ``aimass serve <repo>`` does) on a local port;
3. ``Model.load("http://.../v2/models/fraud")``: same schema, same outputs, same typed errors;
4. swap local and remote by configuration only: ``Model.from_config("fraud")``.

Run:  .venv/bin/python examples/serve_and_call.py
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def build_model(path: Path) -> Path:
    """A 4-feature logistic regression written with onnx.helper: x FP32 [-1, 4] -> p FP32 [-1, 1]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[1.5], [-2.0], [0.5], [3.0]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p"])],
        "fraud",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def main() -> None:
    import uvicorn

    from aimass import Model, SchemaError
    from aimass.server import create_app

    work = Path(tempfile.mkdtemp(prefix="aimass-example-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # leave nothing behind in TMPDIR
    local = Model.load(build_model(work / "fraud.onnx"))
    local.save(work / "repo" / "fraud" / "1")  # the repository layout `aimass serve` reads

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(repository=work / "repo", max_batch_size=64, max_queue_delay=0.0005)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)

    url = f"http://127.0.0.1:{port}/v2/models/fraud"
    remote = Model.load(url)
    rows = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    print("schema   ", remote.schema)
    print("remote   ", remote.predict(rows)["p"].ravel())
    print("local    ", local.predict(rows)["p"].ravel())
    try:
        remote.predict(np.zeros((2, 5), np.float32))
    except SchemaError as e:
        print("typed error:", e)

    # Same application code, local or remote by configuration only.
    (work / "aimass.toml").write_text(f'[models.fraud]\nuri = "{work / "fraud.onnx"}"\n', encoding="utf-8")
    os.environ["AIMASS_CONFIG"] = str(work / "aimass.toml")
    print("config   ", Model.from_config("fraud").backend_name)  # onnx: the file
    os.environ["AIMASS_FRAUD_URI"] = url
    print("env      ", Model.from_config("fraud").backend_name)  # remote: the env var wins
    server.should_exit = True


if __name__ == "__main__":
    main()
