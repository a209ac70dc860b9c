"""From serving back to training: serve -> log payloads -> label -> update -> publish -> the alias moves.

A model library in a temporary directory holds fraud:1 behind the alias ``production``. The V2
server (in process, models loaded on demand) serves ``fraud/versions/production`` and records every
request and answer in Parquet payload logs. The world changes (the rule on feature 0 moves); the
logged requests are read back, labelled (here by the world's rule, in practice by people or
outcomes joined on the request id), and used to evaluate the served model and to update it. The
update is published behind the alias's gate, the alias moves, and the same server answers with
version 2 at the same URL without a restart.

Run:  .venv/bin/python examples/serve_log_update.py
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import httpx
import numpy as np

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.evaluate import evaluate
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.payload_log import read_payloads
from aimass.store import Store


def world(n: int, seed: int, boundary: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and their true labels; ``boundary`` moves the rule on feature 0 (a change in the world)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    x[:, 0] += boundary
    return x, (x[:, 0] > boundary).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def label(x: np.ndarray, boundary: float) -> np.ndarray:
    """The labelling step: what the world says each logged row was."""
    return (x[:, 0] > boundary).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)


def main() -> None:
    import xgboost as xgb

    work = Path(tempfile.mkdtemp(prefix="aimass-loop-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # leave nothing behind in TMPDIR
    lib = Store(work / "library")
    logs = work / "payloads"

    # 1. a model in production
    x_train, y_train = world(2000, seed=0)
    model = Model.load(xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(x_train, y_train), name="fraud")
    lib.set_gate("fraud", "production", {"accuracy": ">=0.9"})
    x_test, y_test = world(1000, seed=1)
    v1 = lib.publish(model, "fraud", metrics=evaluate(model, x_test, y_test), reference=x_train, alias="production")
    print(f"production is fraud:{v1}")

    # 2. serve the library, logging every request and answer
    app = create_app(repository=lib.root, max_loaded_models=2, log_payloads=logs, max_batch_size=0)
    client = httpx.Client(transport=InProcessTransport(app), base_url="http://mass")

    def call(rows: np.ndarray) -> v2.InferResponse:
        body, headers = v2.encode_request({"input": rows})
        r = client.post("/v2/models/fraud/versions/production/infer", content=body, headers=headers)
        r.raise_for_status()
        return v2.decode_response(r.content, r.headers.get("inference-header-content-length"))

    # 3. the world moves; traffic keeps coming
    x_live, _ = world(1500, seed=2, boundary=1.0)
    answered = [call(rows) for rows in np.array_split(x_live, 150)]
    print(f"served {len(answered)} requests with fraud:{answered[0].model_version}")
    assert app.payload_log is not None
    app.payload_log.close()  # complete the open log file (a server does this when it stops)

    # 4. read the logs back and label them
    logged = read_payloads(logs, model="fraud")
    x_logged = logged.inputs["input"]
    y_logged = label(x_logged, boundary=1.0)
    print(f"logged {len(logged)} rows from {len(set(logged.request_ids))} requests")
    served_score = evaluate(model, x_logged, y_logged, metrics=["accuracy"])["accuracy"]

    # 5. update on the logged traffic, evaluate on fresh rows of the new world, publish, move the alias
    candidate = lib.load("fraud", "production").update(x_logged, y_logged, rounds=30)
    x_new_test, y_new_test = world(1000, seed=3, boundary=1.0)
    result = evaluate(candidate, x_new_test, y_new_test)
    print(f"accuracy on the new world: served model {served_score:.3f}, updated {result['accuracy']:.3f}")
    assert result["accuracy"] > served_score
    v2_ = lib.publish(candidate, "fraud", metrics=result, reference=x_logged, alias="production")
    print(f"production is fraud:{v2_}")

    # 6. the same URL now answers with the new version (loaded on its first request)
    after = call(x_new_test[:5])
    print(f"the server answers production with fraud:{after.model_version}")
    assert after.model_version == str(v2_)
    client.close()


if __name__ == "__main__":
    main()
