"""MLServer's own V2 types and codecs (``mlserver.types``, ``NumpyCodec``) against our server.

The client runs in MLServer's virtual environment (``benchmarks/.peers/mlserver``, created by
``benchmarks/serve_throughput.py``): it encodes a request with MLServer's codecs, posts it, and
parses every answer with MLServer's pydantic models. Skipped when that environment is missing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import models
import numpy as np
import pytest
import serving

from aimass import Model
from aimass.server import create_app

PYTHON = Path(__file__).resolve().parents[2] / "benchmarks" / ".peers" / "mlserver" / "bin" / "python"

CLIENT = """
import json, sys, urllib.error, urllib.request, numpy as np
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, MetadataServerResponse

def call(path, body=None):
    req = urllib.request.Request(base + path, data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

base = sys.argv[1]
x = np.array(json.loads(sys.argv[2]), dtype=np.float32)
server = MetadataServerResponse.model_validate(call("/v2")[1])
meta = MetadataModelResponse.model_validate(call("/v2/models/mlp")[1])
request = InferenceRequest(inputs=[NumpyCodec.encode_input("x", x)])
response = InferenceResponse.model_validate(call("/v2/models/mlp/infer", request.model_dump_json().encode())[1])
y = NumpyCodec.decode_output(response.outputs[0])
bad = call("/v2/models/mlp/infer", b"{oops")
print(json.dumps({"server": server.name, "inputs": [t.name for t in meta.inputs], "y": y.tolist(),
                  "bad": [bad[0], bad[1]["error"]], "version": response.model_version}))
"""


@pytest.mark.peer
@pytest.mark.slow
def test_mlserver_types_and_codecs_read_our_answers(tmp_path: Path) -> None:
    if not PYTHON.exists():
        pytest.skip("benchmarks/.peers/mlserver not installed (run benchmarks/serve_throughput.py)")
    model = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx"))
    x = models.dataset(3)[0]
    with serving.live_server(create_app({"mlp": model})) as address:
        out = subprocess.run(
            [str(PYTHON), "-c", CLIENT, f"http://{address}", json.dumps(x.tolist())],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["server"] == "aimass" and got["inputs"] == ["x"] and got["version"] == "1"
    np.testing.assert_allclose(np.array(got["y"], np.float32), model.predict(x)["y"], rtol=1e-6)
    assert got["bad"][0] == 400 and got["bad"][1].startswith("malformed JSON request")
