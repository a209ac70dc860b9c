"""Moderate posts with a text classifier served by aimass: raw strings in, labels out, no client-side tokenizing.

1. make a small labelled set (friendly vs toxic posts) and train a tiny BERT on it for a few
   seconds (a real project starts from a pretrained encoder; the steps after training are the same);
2. ``Model.load(model, tokenizer=tok)``: a text model (input ``text``, outputs ``label`` and
   ``probabilities``); convert its network to ONNX (the tokenizer stays: still text in, labels out);
3. publish it to a local model library and serve the library with ``aimass serve``;
4. call it with raw strings through ``Model.load(url)`` and through stock ``tritonclient.http``
   (JSON and binary BYTES): every way gives the same labels and probabilities.

Run:  .venv/bin/python examples/text_moderation.py
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

FRIENDLY = ["you are {a}", "thanks, your post was {a}", "what a {a} idea", "i really like this, {a} work"]
TOXIC = ["you are {b}", "shut up, you {b} fool", "what a {b} idea, get lost", "nobody likes you, {b} clown"]
GOOD = ["kind", "helpful", "brilliant", "lovely", "thoughtful", "great"]
BAD = ["stupid", "pathetic", "worthless", "dumb", "useless", "disgusting"]
HELD_OUT = ["thanks, this was lovely and helpful", "get lost, you worthless clown", "a great idea", "you dumb fool"]
HELD_OUT_LABELS = ["friendly", "toxic", "friendly", "toxic"]


def labelled_posts() -> tuple[list[str], list[int]]:
    """Every template filled with every word: 48 posts, label 0 = friendly, 1 = toxic."""
    posts, labels = [], []
    for label, (templates, words, key) in enumerate(((FRIENDLY, GOOD, "a"), (TOXIC, BAD, "b"))):
        for template, word in itertools.product(templates, words):
            posts.append(template.format(**{key: word}))
            labels.append(label)
    return posts, labels


def make_tokenizer(posts: list[str]) -> Any:
    """A WordPiece tokenizer trained on the posts, as a transformers fast tokenizer (saved as tokenizer.json)."""
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(posts, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64,
    )  # fmt: skip


def train(posts: list[str], labels: list[int], tok: Any, steps: int = 60) -> Any:
    """A 2-layer BERT classifier trained on the posts (full batch, ``steps`` steps: a few seconds on a CPU)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, id2label={0: "friendly", 1: "toxic"}, label2id={"friendly": 0, "toxic": 1},
    )  # fmt: skip
    model = transformers.BertForSequenceClassification(config)
    batch = tok(posts, padding=True, return_tensors="pt")
    y = torch.tensor(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=y).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def serve(library: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``aimass serve <library>`` in a child process (dynamic batching on); returns it and its base URL."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "aimass", "serve", str(library), "--port", str(port), "--max-queue-delay", "2ms"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"aimass serve exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError("aimass serve did not become ready")
        time.sleep(0.1)


def call_triton(base: str, posts: list[str], binary: bool) -> tuple[list[str], np.ndarray]:
    """Stock ``tritonclient.http``: BYTES in as an ``np.object_`` array, JSON or binary on the wire."""
    import tritonclient.http as triton

    client = triton.InferenceServerClient(base.removeprefix("http://"))
    text = triton.InferInput("text", [len(posts)], "BYTES")
    text.set_data_from_numpy(np.array([p.encode() for p in posts], dtype=np.object_), binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]
    result = client.infer("moderation", [text], outputs=outputs)
    labels = [v.decode() if isinstance(v, bytes) else str(v) for v in result.as_numpy("label").tolist()]
    return labels, result.as_numpy("probabilities")


def show(name: str, labels: list[str], probabilities: np.ndarray) -> None:
    print(f"{name:<14}", " ".join(labels), " ".join(f"{p:.6f}" for p in probabilities[:, 1]))


def main() -> None:
    from aimass import Model
    from aimass.store import Store

    posts, labels = labelled_posts()
    tok = make_tokenizer(posts)
    net = train(posts, labels, tok)

    local = Model.load(net, tokenizer=tok, name="moderation")
    print("schema        ", local.schema)
    served = local.convert("onnx", data=posts, repeats=0)  # the network on onnxruntime, same tokenizer
    predicted = served.predict(HELD_OUT)["label"].tolist()
    accuracy = float(np.mean([p == t for p, t in zip(predicted, HELD_OUT_LABELS, strict=True)]))
    print("held-out      ", f"accuracy {accuracy:.2f}")

    work = Path(tempfile.mkdtemp(prefix="aimass-moderation-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # leave nothing behind in TMPDIR
    library = Store(work / "library")
    version = library.publish(served, "moderation", metrics={"accuracy": accuracy})
    print("published     ", f"moderation:{version}")

    proc, base = serve(work / "library")
    try:
        want = served.predict(HELD_OUT)
        show("local", want["label"].tolist(), want["probabilities"])
        remote = Model.load(f"{base}/v2/models/moderation")
        got = remote.predict(HELD_OUT)  # raw strings in, str labels out
        show("remote", got["label"].tolist(), got["probabilities"])
        for binary in (False, True):
            show(f"triton-{'binary' if binary else 'json'}", *call_triton(base, HELD_OUT, binary))

        # Concurrent clients, each with its own post: dynamic batching merges them, each gets its own answer.
        singles = [want["label"][i : i + 1].tolist() for i in range(len(HELD_OUT))]
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda i: remote.predict([HELD_OUT[i % 4]])["label"].tolist(), range(64)))
        ok = all(answers[i] == singles[i % 4] for i in range(64))
        print("concurrent    ", f"{sum(a == singles[i % 4] for i, a in enumerate(answers))}/64 own answers", ok)
        try:
            remote.predict(np.array([0.5, 1.5]))
        except Exception as e:  # a SchemaError, raised locally before anything is sent
            print("typed error   ", type(e).__name__, str(e).splitlines()[0])
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
