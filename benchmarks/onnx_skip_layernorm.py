"""onnxruntime on the CPU: a residual Add + LayerNormalization, fused to SkipLayerNormalization or not.

onnxruntime's session optimizer fuses ``Add -> LayerNormalization`` into its contrib
``SkipLayerNormalization`` kernel, which on the CPU is slower than the two ops it replaces. aimass
skips that fusion for CPU sessions (``OnnxBackend``'s default ``disabled_optimizers``); this script
measures both through aimass, in the same run, timed in turns, and prints the ratio (above 1: the
fused kernel is slower).

Run:  .venv/bin/python benchmarks/onnx_skip_layernorm.py [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import models

from aimass import Model
from aimass.compress.report import time_in_turns

SHAPES = ((1, 8), (1, 128), (32, 64))  # (batch, tokens)
HIDDEN = (64, 384, 768, 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    session = {"intra_op_num_threads": args.threads}
    print(f"onnxruntime CPU, {args.threads} thread(s); median of {args.repeats} calls each, timed in turns")
    for hidden in HIDDEN:
        rng = np.random.default_rng(0)
        blob = models.onnx_residual_layernorm(hidden, gamma=float(rng.normal()), beta=float(rng.normal()))
        fused = Model.load(blob, backend="onnx", options={"session_options": session, "disabled_optimizers": []})
        ours = Model.load(blob, backend="onnx", options={"session_options": session})
        for batch, tokens in SHAPES:
            rng = np.random.default_rng(1)
            x = {n: rng.normal(size=(batch, tokens, hidden)).astype(np.float32) for n in ("x", "skip")}
            np.testing.assert_allclose(fused.predict(x)["y"], ours.predict(x)["y"], atol=1e-4)
            times = time_in_turns({"skip": fused, "plain": ours}, x, calls=args.repeats)
            skip, plain = (1e3 * statistics.median(times[k]) for k in ("skip", "plain"))
            print(
                f"  hidden {hidden:>4}, batch {batch:>2} x {tokens:>3} tokens: SkipLayerNormalization {skip:7.3f} ms, "
                f"Add + LayerNormalization (aimass default) {plain:7.3f} ms; ratio {skip / plain:.1f}"
            )


if __name__ == "__main__":
    main()
