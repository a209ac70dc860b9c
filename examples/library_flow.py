"""The model-library flow in one script: train -> evaluate -> publish -> alias -> serve -> monitor ->
update -> evaluate -> publish -> canary -> promote.

Everything is real and local: an XGBoost classifier trained here, a library in a temporary
directory (or ``$AIMASS_STORE``), the V2 server app called in-process over HTTP semantics.

Run:  .venv/bin/python examples/library_flow.py
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np

from aimass import GateFailed, Model
from aimass.evaluate import evaluate
from aimass.store import Store


def data(n: int, seed: int, boundary: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A 3-class problem on 4 features; ``boundary`` moves the rule on feature 0 (a change in the world)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)).astype(np.float32)
    x[:, 0] += boundary  # the inputs move too: what drift monitoring sees
    y = (x[:, 0] > boundary).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return x, y


def main() -> None:
    import xgboost as xgb

    root = os.environ.get("AIMASS_STORE")
    if not root:  # a library of this run's own, removed when it ends (nothing left in TMPDIR)
        root = tempfile.mkdtemp(prefix="aimass-library-")
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    os.environ["AIMASS_STORE"] = root  # where store:// and name:version references resolve
    lib = Store(root)
    print(f"library: {lib.root}")

    # 1. train
    x_train, y_train = data(2000, seed=0)
    x_test, y_test = data(1000, seed=1)
    model = Model.load(xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(x_train, y_train), name="fraud")

    # 2. evaluate
    result = evaluate(model, x_test, y_test)
    print(result)

    # 3. publish, with the input profile drift monitoring compares against; 4. alias behind a gate
    lib.set_gate("fraud", "production", {"accuracy": ">=0.9"})
    v1 = lib.publish(model, "fraud", metrics=result, tags={"data": "2026-11"}, reference=x_train)
    lib.set_alias("fraud", "production", v1)
    print(f"published fraud:{v1} -> production")

    # 5. load through the library and serve it (the V2 app over the library root, in-process)
    prod = Model.load("store://fraud@production")
    assert prod.metadata["store"]["version"] == v1
    served = _serve_and_call(lib.root, x_test[:5])
    np.testing.assert_allclose(served, prod.predict(x_test[:5])["probabilities"], rtol=1e-6)
    print("served over V2: same answers as the local model")

    # 6. monitor: live traffic moves, the drift report shows it
    x_new, y_new = data(2000, seed=2, boundary=1.0)
    monitor = prod.monitor  # monitoring starts here: predict calls are timed and their inputs kept
    prod.predict(x_test[:200])
    prod.predict(x_new[:800])
    report = monitor.report()
    print(report)
    assert "input[0]" in report.drifted

    # 7. update on the new data; a model that fails the gate never reaches production
    candidate = prod.update(x_new, y_new, rounds=30)
    x_new_test, y_new_test = data(1000, seed=3, boundary=1.0)
    old_score = evaluate(prod, x_new_test, y_new_test, metrics=["accuracy"])["accuracy"]
    new_result = evaluate(candidate, x_new_test, y_new_test)
    print(f"accuracy on new data: {old_score:.3f} before update, {new_result['accuracy']:.3f} after")
    assert new_result["accuracy"] > old_score

    # 8. publish the update and send it 10 % of production traffic (a canary), then promote it
    v2 = lib.publish(candidate, "fraud", metrics=new_result, reference=x_new)
    lib.set_alias("fraud", "production", {v1: 0.9, v2: 0.1})
    print(lib.listing("fraud"))
    lib.set_alias("fraud", "production", v2)

    # A weak model cannot be promoted: the stored gate refuses it.
    weak = Model.load(xgb.XGBClassifier(n_estimators=1, max_depth=1).fit(x_train, y_train))
    v3 = lib.publish(weak, "fraud", metrics=evaluate(weak, x_new_test, y_new_test))
    try:
        lib.set_alias("fraud", "production", v3)
    except GateFailed as e:
        print(f"refused: {e}")
    else:
        raise AssertionError("the gate should have refused the weak model")
    assert lib.resolve("fraud", "production") == v2
    print(f"production is fraud:{v2}")


def _serve_and_call(root: str, rows: np.ndarray) -> np.ndarray:
    """Serve the library with the V2 app, in-process, and call it through a remote Model."""
    from aimass.backends.remote import mount, unmount
    from aimass.server import create_app

    mount("http://mass.example", create_app(repository=root, max_batch_size=0))
    try:
        remote = Model.load("http://mass.example/v2/models/fraud")
        return remote.predict(rows)["probabilities"]
    finally:
        unmount("http://mass.example")


if __name__ == "__main__":
    main()
