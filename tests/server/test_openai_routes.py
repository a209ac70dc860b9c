"""/v1/embeddings and /v1/models with the stock ``openai`` client against a real uvicorn on 127.0.0.1.

Tiny BERTs built in the test (tests/backends/cases.py): an encoder (text in, embedding out) and a
classifier (text in, labels out, which the OpenAI routes do not serve). The vectors the client gets
must equal ``Model.predict``'s; refusals come back in OpenAI's error shape, as the client's typed errors.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import serving
from cases import text_tokenizer, tiny_bert

from aimass import Model
from aimass.server import create_app

openai = pytest.importorskip("openai")
pytest.importorskip("transformers")

TOKEN = "s3cret-token"
TEXTS = ["you are wonderful and kind", "thanks", "shut up loser, what a stupid day and what a stupid thread"]


@pytest.fixture(scope="module")
def models() -> dict[str, Model]:
    tok = text_tokenizer()
    return {
        "enc": Model.load(tiny_bert("encode", len(tok), seed=4), tokenizer=tok),
        "clf": Model.load(tiny_bert("classify", len(tok), seed=3), tokenizer=tok),
    }


@pytest.fixture(scope="module")
def url(models: dict[str, Model]) -> Iterator[str]:
    app = create_app(models, auth_token=TOKEN, max_queue_delay=0.002, dashboard=False)
    with serving.live_server(app) as address:
        yield f"http://{address}"


@pytest.fixture(scope="module")
def client(url: str) -> Any:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)


def test_embeddings_equal_predict_float_and_base64(client: Any, models: dict[str, Model]) -> None:
    want = models["enc"].predict(TEXTS)["embedding"]
    # Without a format the client asks for base64 and decodes it; "float" is the JSON list of numbers.
    for fmt in ({}, {"encoding_format": "float"}):
        got = client.embeddings.create(model="enc", input=TEXTS, **fmt)
        assert [d.index for d in got.data] == [0, 1, 2] and got.model == "enc"
        vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
        np.testing.assert_allclose(vectors, want, atol=1e-6)
    one = client.embeddings.create(model="enc", input=TEXTS[1])
    np.testing.assert_allclose(np.array(one.data[0].embedding, np.float32), want[1], atol=1e-6)
    enc = models["enc"].backend.encoder  # type: ignore[attr-defined]
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(len(e.ids) for e in enc.encode_rows(TEXTS))
    assert client.embeddings.create(model="enc", input=TEXTS, dimensions=32).data[0].embedding


def test_base64_is_little_endian_float32(url: str, models: dict[str, Model]) -> None:
    body = {"model": "enc", "input": "thanks", "encoding_format": "base64"}
    r = httpx.post(f"{url}/v1/embeddings", json=body, headers={"authorization": f"Bearer {TOKEN}"})
    raw = base64.b64decode(r.json()["data"][0]["embedding"])
    np.testing.assert_allclose(np.frombuffer(raw, "<f4"), models["enc"].predict(["thanks"])["embedding"][0], atol=1e-6)


def test_models_lists_embedding_models_only(client: Any) -> None:
    assert [m.id for m in client.models.list()] == ["enc"]
    assert client.models.retrieve("enc").id == "enc"
    with pytest.raises(openai.BadRequestError):
        client.models.retrieve("clf")


def errors(client: Any, call: Any) -> dict[str, Any]:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    body = info.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return {"status": info.value.status_code, "class": type(info.value).__name__, **body["error"]}


def test_refusals_are_typed_openai_errors(client: Any, url: str) -> None:
    e = errors(client, lambda: client.embeddings.create(model="clf", input="hi"))
    assert (e["status"], e["class"], e["param"], e["code"]) == (400, "BadRequestError", "model", "model_not_supported")
    assert "does not make text embeddings" in e["message"]
    e = errors(client, lambda: client.embeddings.create(model="nope", input="hi"))
    assert (e["status"], e["class"], e["code"]) == (404, "NotFoundError", "model_not_found")
    e = errors(client, lambda: client.embeddings.create(model="enc", input="hi", dimensions=8))
    assert (e["status"], e["param"]) == (400, "dimensions") and "makes 32-dimensional" in e["message"]
    e = errors(client, lambda: client.embeddings.create(model="enc", input=[[1, 2, 3]]))
    assert (e["status"], e["param"]) == (400, "input") and "token ids" in e["message"]
    e = errors(client, lambda: client.embeddings.create(model="enc", input=[]))
    assert (e["status"], e["param"]) == (400, "input")
    e = errors(client, lambda: client.embeddings.create(model="enc", input="hi", encoding_format="int8"))
    assert (e["status"], e["param"], e["type"]) == (400, "encoding_format", "invalid_request_error")
    bad = openai.OpenAI(base_url=f"{url}/v1", api_key="not-the-token", max_retries=0)
    e = errors(bad, lambda: bad.embeddings.create(model="enc", input="hi"))
    assert (e["status"], e["class"], e["code"]) == (401, "AuthenticationError", "invalid_api_key")
    assert "not-the-token" not in e["message"] and TOKEN not in e["message"]


def test_requests_go_through_the_data_plane(url: str, client: Any) -> None:
    client.embeddings.create(model="enc", input=TEXTS)
    metrics = httpx.get(f"{url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    line = next(x for x in metrics.splitlines() if x.startswith("aimass_requests_total") and '"enc"' in x)
    assert float(line.rsplit(" ", 1)[1]) >= 1
    r = httpx.post(f"{url}/v1/embeddings", content=b"{not json", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code in (400, 415) and "error" in r.json()
