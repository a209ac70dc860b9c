"""Torch files that are programs: nothing in them runs, reads or writes a file unless the user trusts them.

Attacks from issue 24, each as an attacker would build it: a TorchScript zip whose scripted
``__setstate__`` writes a file while ``torch.jit.load`` unpickles it, and a ``torch.export``
archive (``.pt2``, what ``Model.save`` writes) whose JSON graph was edited to call
``aten.from_file`` on a secret, or whose guard code (``exec``-ed by torch) was edited to run
Python. Each is refused before torch reads it, as a file and inside a package, with the file and
the operator named; each loads with ``trust_code=True``. Ordinary models load without trust.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest

from aimass import Model
from aimass.errors import UnsafeProgram, UntrustedCode
from aimass.frameworks.torch.programs import pt2_operators
from aimass.package import write_package
from aimass.programs import allow_list

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.(script|load|save)` is deprecated:DeprecationWarning")

X = np.arange(8, dtype=np.float32).reshape(2, 4)


# -- what an attacker builds ------------------------------------------------------------------------


def _write_file_on_load(target: Path, out: Path) -> Path:
    """TorchScript whose ``__setstate__`` creates ``target`` (torch.from_file, shared) while torch.jit.load runs."""

    class Writer(torch.nn.Module):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path
            self.checksum = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2.0

        @torch.jit.export
        def __getstate__(self) -> tuple[str, bool]:
            return (self.path, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, bool]) -> None:
            self.path = state[0]
            self.training = state[1]
            written = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8)
            written.copy_(torch.tensor([112, 119, 110, 100], dtype=torch.uint8))  # "pwnd"
            self.checksum = int(written.sum())  # used, so the compiler keeps the write

    torch.jit.script(Writer(str(target))).save(str(out))
    target.unlink(missing_ok=True)  # saving runs __getstate__ only: nothing was written yet
    return out


def _export(module: Any, out: Path, *args: Any) -> Path:
    dims = tuple({0: torch.export.Dim.AUTO} for _ in args)
    torch.export.save(torch.export.export(module.eval(), args, dynamic_shapes=dims), str(out))
    return out


def _edit_program(pt2: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """Rewrite the archive's models/model.json the way an attacker would: plain zip and JSON editing."""
    members = {}
    with zipfile.ZipFile(pt2) as z:
        for info in z.infolist():
            members[info.filename] = z.read(info)
    name = next(n for n in members if n.endswith("models/model.json"))
    program = json.loads(members[name])
    edit(program)
    members[name] = json.dumps(program).encode()
    with zipfile.ZipFile(pt2, "w", zipfile.ZIP_STORED) as z:
        for member, data in members.items():
            z.writestr(member, data)
    return pt2


def _read_file_on_infer(secret: Path, out: Path) -> Path:
    """A .pt2 of ``x + torch.ones(4)`` whose ``ones`` node was edited into ``aten.from_file(secret)``."""

    class AddOnes(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + torch.ones(4)

    def edit(program: dict[str, Any]) -> None:
        node = next(n for n in program["graph_module"]["graph"]["nodes"] if n["target"].endswith("aten.ones.default"))
        node["target"] = "torch.ops.aten.from_file.default"
        node["inputs"] = [
            {"name": "filename", "arg": {"as_string": str(secret)}, "kind": 1},
            {"name": "shared", "arg": {"as_bool": False}, "kind": 1},
            {"name": "size", "arg": {"as_int": 4}, "kind": 1},
            {"name": "dtype", "arg": {"as_scalar_type": 7}, "kind": 2},  # float32
        ]

    return _edit_program(_export(AddOnes(), out, torch.from_numpy(X)), edit)


def _torch_package(tmp: Path, artifact: Path, schema: Any) -> Path:
    """A package as anyone can write one: the hostile file, a manifest, valid checksums."""

    def write(d: Path) -> list[str]:
        shutil.copy(artifact, d / artifact.name)
        return [artifact.name]

    fields = {"backend": "torch", "framework": "torch", "aimass_version": "0", "schema": schema.model_dump()}
    return write_package(tmp / "pkg", write, fields)


@pytest.fixture
def spy_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every torch.jit.load / torch.export.load call (the calls go through unchanged)."""
    calls: list[str] = []
    for owner, attr in ((torch.jit, "load"), (torch.export, "load")):
        real = getattr(owner, attr)

        def spy(*args: Any, _real: Any = real, _name: str = attr, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(owner, attr, spy)
    return calls


# -- TorchScript: needs trust, full stop -------------------------------------------------------------


def test_torchscript_that_writes_a_file_while_loading_is_refused_before_torch_reads_it(
    tmp_path: Path, spy_loads: list[str]
) -> None:
    target = tmp_path / "written.pth"
    hostile = _write_file_on_load(target, tmp_path / "model.ts")
    with pytest.raises(UnsafeProgram, match=r"model\.ts: this TorchScript file is a program") as info:
        Model.load(hostile, example_input=X)
    assert info.value.files == ["model.ts"] and info.value.status_code == 403
    assert str(tmp_path) not in str(info.value)  # the file's name, never its absolute path
    assert not target.exists() and spy_loads == []

    pkg = _torch_package(tmp_path, hostile, Model.load(models.torch_mlp(), example_input=X).schema)
    with pytest.raises(UntrustedCode, match=r"model\.ts"):
        Model.load(pkg)
    assert not target.exists() and spy_loads == []

    # With trust the file is what it is: a program, run while loading.
    Model.load(hostile, example_input=X, trust_code=True)
    assert target.read_bytes() == b"pwnd" and spy_loads == ["load"]


def test_plain_torchscript_needs_trust_too_and_saving_one_says_so(tmp_path: Path) -> None:
    torch.jit.script(models.torch_mlp()).save(str(tmp_path / "mlp.ts"))
    with pytest.raises(UnsafeProgram, match="cannot be inspected without running it"):
        Model.load(tmp_path / "mlp.ts", example_input=X)
    scripted = Model.load(tmp_path / "mlp.ts", example_input=X, trust_code=True)
    with pytest.warns(UserWarning, match="will need trust_code=True"):
        pkg = scripted.save(tmp_path / "pkg")
    with pytest.raises(UnsafeProgram):
        Model.load(pkg)
    np.testing.assert_array_equal(Model.load(pkg, trust_code=True).predict(X)["output"], scripted.predict(X)["output"])


# -- torch.export archives: every operator against the allow-list -------------------------------------


def test_pt2_edited_to_read_a_file_is_refused_before_load_and_names_the_operator(
    tmp_path: Path, spy_loads: list[str]
) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.array([1.0, 2.0, 3.0, 4.0], np.float32).tobytes())
    hostile = _read_file_on_infer(secret, tmp_path / "model.pt2")
    with pytest.raises(UnsafeProgram, match=r"model\.pt2: this torch\.export archive .*: aten::from_file;") as info:
        Model.load(hostile)
    assert info.value.operators == ["aten::from_file"] and spy_loads == []

    schema = Model.load(models.torch_mlp(), example_input=X).schema
    with pytest.raises(UnsafeProgram, match="aten::from_file"):
        Model.load(_torch_package(tmp_path, hostile, schema))
    assert spy_loads == []

    # Trusted, it runs: the secret's bytes come back in the output (what the issue found on serve).
    out = Model.load(hostile, trust_code=True).predict(X)["output"]
    np.testing.assert_array_equal(out, X + np.array([1.0, 2.0, 3.0, 4.0], np.float32))


def test_pt2_guard_code_that_runs_python_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "ran"
    hostile = _export(models.torch_mlp(), tmp_path / "model.pt2", torch.from_numpy(X))

    def edit(program: dict[str, Any]) -> None:
        program["guards_code"] = [f"open({str(target)!r}, 'w').write('x') == 1 or True"]

    _edit_program(hostile, edit)
    with pytest.raises(UnsafeProgram, match="python:guards_code"):
        Model.load(hostile)
    assert not target.exists()
    Model.load(hostile, trust_code=True).predict(X)  # torch exec()s the guard into forward()
    assert target.exists()


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("shape", "sympy:"),  # sympy.sympify eval()s symbolic shape expressions
        ("pickle", "pickle:data/weights/weight_0"),  # torch.load(weights_only=False)
        ("member", "member:data/aotinductor/model/model.so"),  # a compiled library
        ("sample", "pickle:data/sample_inputs/model.pt"),  # retried without weights_only on failure
    ],
)
def test_pt2_parts_that_run_code_while_loading_are_refused(tmp_path: Path, where: str, expected: str) -> None:
    pt2 = _export(models.torch_mlp(), tmp_path / "model.pt2", torch.from_numpy(X))
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(pt2) as z:
        members = {n: z.read(n) for n in z.namelist()}
    top = next(iter(members)).split("/", 1)[0]
    if where == "shape":
        name = f"{top}/models/model.json"
        text = members[name].decode()
        members[name] = text.replace("Symbol(", "__import__('os').getcwd() and Symbol(", 1).encode()
    elif where == "pickle":
        name = f"{top}/data/weights/model_weights_config.json"
        members[name] = members[name].replace(b'"use_pickle": false', b'"use_pickle": true', 1)
    elif where == "member":
        members[f"{top}/data/aotinductor/model/model.so"] = b"\x7fELF"
    else:
        buffer = io.BytesIO()
        torch.save({"x": torch.zeros(1), "f": print}, buffer)  # a global that is not tensor rebuilding
        members[f"{top}/data/sample_inputs/model.pt"] = buffer.getvalue()
    with zipfile.ZipFile(pt2, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(UnsafeProgram, match=expected):
        Model.load(pt2)


# -- ordinary models load without trust ------------------------------------------------------------


def _cnn() -> Any:
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 4, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.1), nn.Linear(4, 3), nn.Softmax(-1),
    )  # fmt: skip


class _Attention(torch.nn.Module):
    """Embedding, a transformer encoder layer, attention and masked mean pooling: a tiny text encoder."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(50, 16)
        self.layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.layer(self.embed(ids))
        h, _ = self.attention(h, h, h)
        m = mask.unsqueeze(-1).to(h.dtype)
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1.0), dim=1)


def _examples() -> list[tuple[str, Any, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (2, 7)).astype(np.int64)
    return [
        ("mlp", models.torch_mlp(), {"x": X}),
        ("cnn", _cnn(), {"input": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)}),
        ("attention", _Attention(), {"ids": ids, "mask": np.ones((2, 7), np.int64)}),
    ]


@pytest.mark.parametrize(("name", "module", "inputs"), _examples(), ids=[e[0] for e in _examples()])
def test_ordinary_models_save_and_load_without_trust(
    tmp_path: Path, name: str, module: Any, inputs: dict[str, np.ndarray]
) -> None:
    m = Model.load(module.eval(), example_input=inputs)
    pkg = m.save(tmp_path / name)  # Model.save writes .pt2: the policy must load it as it is
    assert set(pt2_operators(pkg / "model.pt2")) <= allow_list(
        Path(__file__).parents[2] / "aimass/frameworks/torch/allowed_ops.txt"
    )
    np.testing.assert_allclose(
        Model.load(pkg).predict(inputs)["output"], m.predict(inputs)["output"], rtol=1e-5, atol=1e-5
    )


def test_control_flow_bodies_are_inspected(tmp_path: Path) -> None:
    class Branch(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cond(x.sum() > 0, lambda t: t.sin(), lambda t: t.cos(), (x,))

    pt2 = _export(Branch(), tmp_path / "model.pt2", torch.from_numpy(X))
    assert {"higher_order::cond", "aten::sin", "aten::cos"} <= set(pt2_operators(pt2))
    np.testing.assert_allclose(Model.load(pt2).predict(X)["output"], np.sin(X), rtol=1e-6)

    def edit(program: dict[str, Any]) -> None:  # the false branch, nested inside the cond node
        text = json.dumps(program).replace("torch.ops.aten.cos.default", "torch.ops.aten.from_file.default")
        program.clear()
        program.update(json.loads(text))

    with pytest.raises(UnsafeProgram, match="aten::from_file"):
        Model.load(_edit_program(pt2, edit))
