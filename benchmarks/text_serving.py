"""A text classifier served by aimass against the FastAPI endpoint a user writes by hand around a transformers pipeline.

The model is a BERT classifier the size of ``bert-mini`` (4 layers, 256 wide, 4 heads; random
weights from a fixed seed, a WordPiece tokenizer trained on the benchmark's posts), written once
with ``save_pretrained``. Served three ways, each in its own process on 127.0.0.1:

* ``aimass-int8``: ``aimass serve`` on the model converted to ONNX and quantized to int8
  (``Model.load(dir).convert("onnx").compress("int8")``), fast tokenizer, dynamic batching, one
  onnxruntime thread per model call (``--option session_options.intra_op_num_threads=1``);
* ``aimass-onnx``: the same, fp32 ONNX;
* ``fastapi-pipeline``: what users write today: FastAPI + uvicorn, ``pipeline("text-classification")``
  called in the endpoint (FastAPI runs it in its thread pool), JSON ``{"texts": [...]}`` in,
  ``{"labels", "scores"}`` out.

One async load generator (aiohttp on uvloop, in this process, on the same cores) sends one post
per request, cycling through the same 256 posts for every server, each in that server's own JSON
format, at c=16 and c=64 (closed loop). Runs are interleaved server by server and repeated;
medians are reported with the ratios against the hand-written endpoint. Before timing, every
server labels the same posts and the labels are compared.

Run:  .venv/bin/python benchmarks/text_serving.py [--seconds 5] [--repeats 3] [--levels 16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from harness import closed_loop, free_port, median_run
from pydantic import BaseModel
from serve_throughput import Server, aimass_server, report

SUBJECTS = ["you", "this post", "your idea", "the author", "this thread", "that reply", "the moderator", "your code"]
VERBS = ["is", "seems", "looks", "was", "feels"]
WORDS = ["kind", "helpful", "brilliant", "stupid", "pathetic", "useless", "thoughtful", "disgusting", "great", "dumb"]
TAILS = [
    "",
    "and everyone here agrees with me",
    "thanks for taking the time to write all of this down",
    "please stop posting in this forum, nobody wants to read it",
    "i learned a lot from the examples in the second half",
]


def posts(n: int = 256) -> list[str]:
    """``n`` short posts (6-25 tokens), the same for every server."""
    combos = itertools.cycle(itertools.product(SUBJECTS, VERBS, WORDS, TAILS))
    rng = np.random.default_rng(0)
    out = [" ".join(filter(None, next(combos))) for _ in range(4 * n)]
    return [out[i] for i in rng.choice(len(out), n, replace=False)]


# 200 varied English sentences of 3-40 words: the embedding benchmarks' mix (issue 27).
VOCABULARY = (
    "the a search engine returns documents that match what people ask about weather travel food music science "
    "history sports health money cars phones books movies cities rivers mountains children teachers doctors "
    "computers networks servers models quickly slowly carefully yesterday tomorrow because although while after "
    "before during small large bright dark happy tired new old first last every some many few"
).split()


def sentences(n: int = 200) -> list[str]:
    """``n`` sentences of 3 to 40 words, the same on every run."""
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(VOCABULARY, int(rng.integers(3, 41)))).capitalize() + "." for _ in range(n)]


def build(directory: Path, texts: list[str]) -> Path:
    """A bert-mini-sized classifier and its tokenizer, written by ``save_pretrained`` into ``directory/hf``."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=128,
    )  # fmt: skip
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(fast), hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
        max_position_embeddings=128, id2label={0: "friendly", 1: "toxic"}, label2id={"friendly": 0, "toxic": 1},
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config).eval()
    out = directory / "hf"
    model.save_pretrained(str(out))
    fast.save_pretrained(str(out))
    return out


def aimass_packages(hf: Path, repo: Path, texts: list[str]) -> dict[str, str]:
    """``repo/<name>/1`` for the fp32 ONNX and int8 conversions; returns what each conversion measured."""
    from aimass import Model

    source = Model.load(hf)
    onnx = source.convert("onnx", data=texts[:64], repeats=10)
    int8 = onnx.compress("int8", data=texts[:64], repeats=10)
    onnx.save(repo / "onnx" / "1")
    int8.save(repo / "int8" / "1")
    lat = {b.batch: b for b in int8.report.latency}
    return {
        "onnx": f"max abs error vs torch {onnx.report.max_abs_error:.2e}",
        "int8": f"size {int8.report.size_ratio:.2f}x smaller, label agreement "
        f"{next(d.top1_agreement for d in int8.report.drift if d.output == 'label'):.3f}, "
        f"in-process batch-1 {lat[1].before_ms:.2f} -> {lat[1].after_ms:.2f} ms"
        if 1 in lat
        else "",
    }


# -- the hand-written endpoint ----------------------------------------------------------------------


class Texts(BaseModel):
    """The hand-written endpoint's request body."""

    texts: list[str]


def serve_fastapi(hf: Path, port: int, torch_threads: int | None = None) -> None:
    """FastAPI + a transformers pipeline: the endpoint a user writes today (run in a child process)."""
    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    if torch_threads:
        torch.set_num_threads(torch_threads)
    classifier = pipeline("text-classification", model=str(hf), tokenizer=str(hf), device="cpu")
    app = FastAPI()

    @app.get("/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/predict")
    def predict(request: Texts) -> dict[str, list[Any]]:
        out = classifier(request.texts, truncation=True)
        return {"labels": [o["label"] for o in out], "scores": [o["score"] for o in out]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class FastAPIServer(Server):
    def __init__(self, hf: Path, torch_threads: int | None = None) -> None:
        port = free_port()
        cmd = [sys.executable, __file__, "--serve-fastapi", str(hf), "--port", str(port)]
        if torch_threads:
            cmd += ["--torch-threads", str(torch_threads)]
        name = f"fastapi-{torch_threads}thread" if torch_threads else "fastapi-pipeline"
        super().__init__(name, cmd, port, "classifier", ready_path="/ready")
        self.url = f"http://127.0.0.1:{port}/predict"


# -- requests and load --------------------------------------------------------------------------------


def bodies(server: Server, texts: list[str]) -> list[bytes]:
    """One request per post, in the server's own format."""
    if isinstance(server, FastAPIServer):
        return [json.dumps({"texts": [t]}).encode() for t in texts]
    return [
        json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [t]}]}).encode()
        for t in texts
    ]


def labels_of(server: Server, texts: list[str]) -> list[str]:
    import httpx

    out = []
    for body in bodies(server, texts):
        r = httpx.post(server.url, content=body, headers={"content-type": "application/json"}, timeout=30).json()
        if isinstance(server, FastAPIServer):
            out += r["labels"]
        else:
            out += next(o["data"] for o in r["outputs"] if o["name"] == "label")
    return out


async def drive(url: str, payloads: list[bytes], concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    """Closed loop over ``payloads`` in turn: (req/s, p50 ms, p99 ms, errors)."""
    import aiohttp

    turn = itertools.count()
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> bool:
            body = payloads[next(turn) % len(payloads)]
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                return r.status == 200

        return await closed_loop(call, concurrency, seconds, warmup=1.0)


def run_load(url: str, payloads: list[bytes], concurrency: int, seconds: float) -> tuple[float, float, float, int]:
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(drive(url, payloads, concurrency, seconds))
    return asyncio.run(drive(url, payloads, concurrency, seconds))


def table(
    servers: list[Server], texts: list[str], levels: list[int], repeats: int, seconds: float
) -> dict[tuple[str, int], tuple[float, float, float, int]]:
    payloads = {s.name: bodies(s, texts) for s in servers}
    runs: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
    for c in levels:
        for r in range(repeats):
            for s in servers[r % len(servers) :] + servers[: r % len(servers)]:  # rotate who goes first
                runs.setdefault((s.name, c), []).append(run_load(s.url, payloads[s.name], c, seconds))
    return {key: median_run(v) for key, v in runs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--levels", default="16,64")
    ap.add_argument("--max-queue-delay", default="2ms", help="aimass serve --max-queue-delay")
    ap.add_argument(
        "--default-threads", action="store_true", help="also serve int8 with onnxruntime's default thread pool"
    )
    ap.add_argument(
        "--fastapi-one-thread", action="store_true", help="also run the endpoint with torch.set_num_threads(1)"
    )
    ap.add_argument("--serve-fastapi", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--torch-threads", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_fastapi:
        serve_fastapi(args.serve_fastapi, args.port, args.torch_threads)
        return
    levels = [int(c) for c in args.levels.split(",")]
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.seconds:.0f} s per run, {args.repeats} interleaved repeats, medians; cells: req/s p50/p99 ms")
    texts = posts()
    with tempfile.TemporaryDirectory(prefix="aimass-text-bench-") as tmp:
        work = Path(tmp)
        hf = build(work, texts)
        notes = aimass_packages(hf, work / "repo", texts)
        for name, note in notes.items():
            print(f"conversion {name}: {note}")
        batching = ["--max-batch-size", "64", "--max-queue-delay", args.max_queue_delay]
        # One onnxruntime thread per model call, as docs/serving.md advises on small machines: the server
        # runs two calls at once (--instances 2), and two pools of spinning threads would fight over 2 cores.
        one = ["--option", "session_options.intra_op_num_threads=1"]
        servers: list[Server] = [
            FastAPIServer(hf),
            aimass_server("aimass-int8", work / "repo", "int8", *batching, *one),
            aimass_server("aimass-onnx", work / "repo", "onnx", *batching, *one),
        ]
        if args.default_threads:
            servers.append(aimass_server("aimass-int8-ortpool", work / "repo", "int8", *batching))
        if args.fastapi_one_thread:
            servers.append(FastAPIServer(hf, torch_threads=1))
        try:
            for s in servers:
                s.wait()
            sample = texts[:32]
            reference = labels_of(servers[0], sample)
            for s in servers[1:]:
                same = np.mean([a == b for a, b in zip(labels_of(s, sample), reference, strict=True)])
                print(f"labels of {s.name} equal to the pipeline's on {len(sample)} posts: {same:.3f}")
            med = table(servers, texts, levels, args.repeats, args.seconds)
            names = [s.name for s in servers]
            report("bert-mini-sized classifier, one post per JSON request", med, names[1:] + names[:1], levels)
        finally:
            for s in servers:
                s.stop()


if __name__ == "__main__":
    main()
