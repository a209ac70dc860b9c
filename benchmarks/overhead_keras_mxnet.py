"""Per-call cost of ``Model.predict`` against the raw Keras, TensorFlow, LiteRT and MXNet calls.

Rows, each at batch 1 and 32 (interleaved ABBA rounds, median per-call µs and the ratio, using
``compare`` from ``benchmarks/overhead.py``):

* keras, eager:    ``model(x, training=False).numpy()``, what a Keras user writes;
* keras, compiled: the same model through ``tf.function`` (the path aimass takes), so the
  difference is aimass's own cost (validation, dict in/out);
* SavedModel:      ``signature(x=tf.constant(x))["output_0"].numpy()``;
* tflite:          ``set_tensor`` / ``invoke`` / ``get_tensor`` on one interpreter;
* mxnet:           ``block(mx.nd.array(x)).asnumpy()`` on the user's block as given (not hybridized),
  and a hybridized copy fed through ``mx.nd.ndarray.array`` (the path aimass takes: it skips
  ``mx.nd.array``'s per-call scipy.sparse check), so the second row is aimass's own cost.

Run:  .venv/bin/python benchmarks/overhead_keras_mxnet.py [--rounds 20] [--calls 1000]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import models  # noqa: E402
from overhead import compare  # noqa: E402

from aimass import Model  # noqa: E402


def keras_rows(rounds: int, calls: int, tmp: Path) -> None:
    import tensorflow as tf

    net = models.keras_mlp()
    ours = Model.load(net)
    compiled = tf.function(lambda t: net(t, training=False), input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    compiled = compiled.get_concrete_function()
    net.export(str(tmp / "sm"), verbose=False)
    saved = Model.load(tmp / "sm")
    signature = saved.backend.root.signatures["serving_default"]
    for batch in (1, 32):
        x = models.dataset(batch, seed=batch)[0]
        compare(
            f"keras eager call, batch {batch}",
            lambda x=x: net(x, training=False).numpy(),
            lambda x=x: ours.predict(x),
            rounds,
            max(calls // 5, 50),  # the eager call is ~1 ms
        )
        compare(
            f"keras tf.function, batch {batch}",
            lambda x=x: compiled(x).numpy(),
            lambda x=x: ours.predict(x),
            rounds,
            calls,
        )
        compare(
            f"SavedModel signature, batch {batch}",
            lambda x=x: signature(x=tf.constant(x))["output_0"].numpy(),
            lambda x=x: saved.predict(x),
            rounds,
            calls,
        )


def tflite_rows(rounds: int, calls: int, tmp: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = models.tflite_mlp(tmp / "mlp.tflite")
    ours = Model.load(path)
    for batch in (1, 32):
        x = models.dataset(batch, seed=batch)[0]
        it = Interpreter(model_path=str(path))
        i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        it.resize_tensor_input(i, x.shape)
        it.allocate_tensors()

        def raw(x: np.ndarray = x, it: Interpreter = it, i: int = i, o: int = o) -> np.ndarray:
            it.set_tensor(i, x)
            it.invoke()
            return it.get_tensor(o)  # type: ignore[no-any-return]

        compare(f"tflite interpreter, batch {batch}", raw, lambda x=x: ours.predict(x), rounds, calls)


def mxnet_rows(rounds: int, calls: int) -> None:
    from aimass.frameworks.mxnet.backend import import_mxnet

    mx = import_mxnet()
    block = models.mxnet_mlp()
    ours = Model.load(block, example_input=models.dataset(2)[0])
    hybrid = models.mxnet_mlp()
    hybrid.hybridize(static_alloc=True)
    for batch in (1, 32):
        x = models.dataset(batch, seed=batch)[0]
        compare(
            f"mxnet block(x), batch {batch}",
            lambda x=x: block(mx.nd.array(x)).asnumpy(),
            lambda x=x: ours.predict(x),
            rounds,
            calls,
        )
        compare(
            f"mxnet hybridized, same input path, b {batch}",
            lambda x=x: hybrid(mx.nd.ndarray.array(x, dtype=x.dtype)).asnumpy(),
            lambda x=x: ours.predict(x),
            rounds,
            calls,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        keras_rows(args.rounds, args.calls, Path(tmp))
        tflite_rows(args.rounds, args.calls, Path(tmp))
    mxnet_rows(args.rounds, args.calls)


if __name__ == "__main__":
    main()
