"""Images in, labels out: a PythonModel that decodes JPEG/PNG bytes and runs a CNN on onnxruntime.

1. draw a toy data set (circles, squares, triangles of random colours, sizes and places) and train
   a tiny torch CNN on it (a few seconds), exported to ONNX;
2. ``ImageClassifier``: decodes and resizes the image bytes with Pillow, runs the CNN (a nested
   Model, so it runs on onnxruntime) and returns the top-k labels with their probabilities;
3. save it: the package holds this file as code, so loading it needs ``trust_code=True``;
4. serve it with ``aimass serve --trust-code`` and call it through ``Model.load(url)`` and through
   stock ``tritonclient`` (binary BYTES): the same labels every way.

Run:  .venv/bin/python examples/image_classifier.py
The recipe is explained in docs/python-models.md.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from aimass import PythonModel, Schema, SchemaError, TensorSpec
from aimass.python_model import Context

LABELS = ["circle", "square", "triangle"]
SIZE = 16  # the CNN's input: SIZE x SIZE RGB
TOP_K = 2


class ImageClassifier(PythonModel):
    """JPEG/PNG bytes -> the ``TOP_K`` most likely labels and their probabilities."""

    schema = Schema(
        inputs=[TensorSpec(name="image", dtype="BYTES", shape=[-1])],
        outputs=[
            TensorSpec(name="labels", dtype="BYTES", shape=[-1, TOP_K]),
            TensorSpec(name="scores", dtype="FP32", shape=[-1, TOP_K]),
        ],
    )

    def setup(self, context: Context) -> None:
        self.cnn = context.model("cnn")  # an ONNX Model: runs on onnxruntime
        self.labels = np.array(context.path("labels").read_text(encoding="utf-8").split(), dtype=object)

    def predict(self, inputs: dict[str, np.ndarray]) -> Mapping[str, Any]:
        images = inputs["image"]
        if not len(images):
            return {"labels": np.empty((0, TOP_K), object), "scores": np.empty((0, TOP_K), np.float32)}
        logits = self.cnn.predict(np.stack([decode(b, i) for i, b in enumerate(images)]))["logits"]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = e / e.sum(axis=1, keepdims=True)
        top = np.argsort(-probabilities, axis=1)[:, :TOP_K]
        return {"labels": self.labels[top], "scores": np.take_along_axis(probabilities, top, axis=1)}


def decode(data: bytes, index: int = 0) -> np.ndarray:
    """Image bytes -> FP32 [3, SIZE, SIZE] in [0, 1]; a typed error (HTTP 400 when served) for anything else."""
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    except Exception as e:  # Pillow raises several types for bad data
        raise SchemaError(
            f"input 'image': element {index} is not a JPEG or PNG image ({type(e).__name__})", tensor="image"
        ) from None
    return np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0


# -- the toy data set and the CNN ------------------------------------------------------------------------


def draw(label: str, rng: np.random.Generator) -> Image.Image:
    """One 64x64 picture of ``label`` in a random colour, size and place."""
    image = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 80, 3)))
    pen = ImageDraw.Draw(image)
    fill = tuple(int(v) for v in rng.integers(150, 256, 3))
    r = int(rng.integers(14, 26))
    cx, cy = (int(v) for v in rng.integers(r + 2, 64 - r - 2, 2))
    if label == "circle":
        pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif label == "square":
        pen.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return image


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def train_cnn(path: Path) -> Path:
    """A tiny CNN trained on 768 drawings (about 2 s on 2 cores), exported to ONNX at ``path``."""
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(LABELS), 768)
    x = torch.from_numpy(np.stack([decode(encoded(draw(LABELS[i], rng), "PNG")) for i in y]))
    target = torch.from_numpy(y)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveMaxPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, len(LABELS)),
    )
    optimizer = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(120):
        batch = torch.randint(0, len(x), (32,))
        loss = torch.nn.functional.cross_entropy(net(x[batch]), target[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with warnings.catch_warnings():
        # The TorchScript exporter: a tenth of a second here, where the dynamo one takes several.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net.eval(),
            (x[:2],),
            str(path),
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path


# -- the walk-through -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(package: Path, port: int) -> subprocess.Popen[bytes]:
    """``aimass serve --trust-code classifier=<package>`` in a child process, once it answers."""
    import httpx

    command = [sys.executable, "-m", "aimass", "serve", f"classifier={package}", "--trust-code", "--port", str(port)]
    server = subprocess.Popen(command)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/models/classifier/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("aimass serve did not start")
        time.sleep(0.1)


def main() -> None:
    from aimass import Model, UntrustedCode

    work = Path(tempfile.mkdtemp(prefix="aimass-images-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # leave nothing behind in TMPDIR
    (work / "labels.txt").write_text("\n".join(LABELS), encoding="utf-8")
    classifier = Model.load(
        ImageClassifier(), artifacts={"cnn": train_cnn(work / "cnn.onnx"), "labels": work / "labels.txt"}
    )

    # Fresh drawings, half PNG and half JPEG: raw bytes in, labels out.
    rng = np.random.default_rng(42)
    truth = [LABELS[i % len(LABELS)] for i in range(30)]
    images = [encoded(draw(t, rng), "PNG" if i % 2 else "JPEG") for i, t in enumerate(truth)]
    local = classifier.predict(images)
    accuracy = float(np.mean(local["labels"][:, 0] == np.array(truth, dtype=object)))
    print("accuracy", f"{accuracy:.2f}")
    print("local", " ".join(local["labels"][:3, 0]))

    package = classifier.save(work / "classifier")
    try:
        Model.load(package)
    except UntrustedCode as e:
        print("refused", type(e).__name__, " ".join(e.files))
    loaded = Model.load(package, trust_code=True)
    print("loaded", " ".join(loaded.predict(images)["labels"][:3, 0]))

    port = _free_port()
    server = _serve(package, port)
    try:
        remote = Model.load(f"http://127.0.0.1:{port}/v2/models/classifier")
        answer = remote.predict(images)
        same = answer["labels"].tolist() == local["labels"].tolist()
        print("remote", " ".join(answer["labels"][:3, 0]), "same" if same else "DIFFERENT")
        try:
            remote.predict([b"not an image"])
        except SchemaError as e:
            print("bad image:", e)

        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{port}")
        given = httpclient.InferInput("image", [3], "BYTES")
        given.set_data_from_numpy(np.array(images[:3], dtype=np.object_), binary_data=True)
        result = client.infer("classifier", [given], outputs=[httpclient.InferRequestedOutput("labels")])
        print("triton", " ".join(v.decode() for v in result.as_numpy("labels")[:, 0]))
        client.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
