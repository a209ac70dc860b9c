"""Every file aimass reads back, fuzzed with byte flips and truncations: each failure is a typed
error (:mod:`aimass.errors`) that names the file, never a traceback from json, codecs or pydantic.

Files: a package's ``aimass.json``, its artifact and its example inputs (``example.npz``), a
composed model's spec and a remote package's ``remote.json`` (also with the manifest re-sealed, so
the parser itself is reached rather than the checksum), a library's ``aliases.json`` and version
manifests (through listings), and config files (TOML and YAML).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aimass import Model
from aimass.backends.remote import mount, unmount
from aimass.compose import ensemble
from aimass.config import model_config
from aimass.errors import AimassError, ModelNotFound, RemoteError
from aimass.package import MANIFEST, write_package
from aimass.server import create_app
from aimass.store import Store

pytest.importorskip("onnxruntime")

FUZZ = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
REMOTE = "http://fuzz-remote.test"

# A damaged file: one byte XORed with a non-zero mask, the file cut short, or (JSON files) one value
# of the document replaced by a value of another type or removed: valid JSON, wrong structure.
Damage = tuple[str, int, int]
damage = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(min_value=1, max_value=255)),
    st.tuples(st.just("cut"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("edit"), st.integers(min_value=0), st.integers(min_value=0, max_value=6)),
)
REPLACEMENTS: list[Any] = [None, 0, -1, "x", [], {}]  # index 6: remove the value


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON document, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    out = []
    for key, value in items:
        out.append((node, key))
        out.extend(_slots(value))
    return out


def _damaged(original: bytes, how: Damage) -> bytes:
    kind, at, value = how
    if kind == "cut":
        return original[: at % len(original)]
    if kind == "edit":
        try:
            doc = json.loads(original)
        except ValueError:
            return original[::-1]  # not JSON (a config file): reversed, another way to garble it
        slots = _slots(doc)
        if slots:
            container, key = slots[at % len(slots)]
            if value < len(REPLACEMENTS):
                container[key] = REPLACEMENTS[value]
            else:
                del container[key]
        return json.dumps(doc).encode()
    i = at % len(original)
    return original[:i] + bytes([original[i] ^ value]) + original[i + 1 :]


def _expect_typed(call: Callable[[], object], *names: str, valid: tuple[type[AimassError], ...] = ()) -> None:
    """``call`` succeeds (the damage left a valid document) or raises an AimassError naming a file.

    ``valid``: an error that a valid but different document rightly causes (an alias that is gone).
    """
    try:
        call()
    except AimassError as e:
        if isinstance(e, valid):
            return
        assert any(n in str(e) for n in names), f"{type(e).__name__} does not name {names}: {e}"
    # Anything else (UnicodeDecodeError, JSONDecodeError, KeyError, ValidationError ...) fails the test.


def _reseal(pkg: Path, rel: str) -> None:
    """Give ``rel`` a matching checksum in the manifest: a package consistent on the outside, bad inside."""
    doc = json.loads((pkg / MANIFEST).read_bytes())
    data = (pkg / rel).read_bytes()
    for art in doc["artifacts"]:
        if art["path"] == rel:
            art["size"], art["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    (pkg / MANIFEST).write_text(json.dumps(doc))


class Fuzzed:
    """A pristine copy of a package, and a scratch copy damaged per example."""

    def __init__(self, pristine: Path, scratch: Path) -> None:
        self.pristine, self.scratch = pristine, scratch

    def damage(self, rel: str, how: Damage, *, reseal: bool = False) -> Path:
        shutil.rmtree(self.scratch, ignore_errors=True)
        shutil.copytree(self.pristine, self.scratch)
        target = self.scratch / rel
        target.write_bytes(_damaged(target.read_bytes(), how))
        if reseal:
            _reseal(self.scratch, rel)
        return self.scratch


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("src") / "mlp.onnx"))


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory, mlp: Model) -> Fuzzed:
    root = tmp_path_factory.mktemp("pkg")
    return Fuzzed(mlp.save(root / "pkg"), root / "scratch")


@pytest.fixture(scope="module")
def composed(tmp_path_factory: pytest.TempPathFactory, mlp: Model) -> Fuzzed:
    root = tmp_path_factory.mktemp("composed")
    return Fuzzed(ensemble(mlp, mlp, method="weighted", weights=[0.3, 0.7]).save(root / "ens"), root / "scratch")


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, mlp: Model) -> Iterator[Fuzzed]:
    root = tmp_path_factory.mktemp("remote")
    mount(REMOTE, create_app({"mlp": mlp}, max_batch_size=0))

    def write(d: Path) -> list[str]:
        doc = {"url": f"{REMOTE}/v2/models/mlp", "options": {"retries": 0, "timeout": 5}}
        (d / "remote.json").write_text(json.dumps(doc))
        return ["remote.json"]

    fields = {"backend": "remote", "framework": "remote", "aimass_version": "0", "schema": mlp.schema.model_dump()}
    pkg = write_package(root / "rem", write, fields)
    assert Model.load(pkg).schema == mlp.schema
    yield Fuzzed(pkg, root / "scratch")
    unmount(REMOTE)


@FUZZ
@given(how=damage)
def test_package_manifest(package: Fuzzed, how: Damage) -> None:
    pkg = package.damage(MANIFEST, how)
    _expect_typed(lambda: Model.load(pkg), MANIFEST, repr(pkg.name))


@settings(FUZZ, max_examples=10)
@given(how=damage)
def test_package_artifact(package: Fuzzed, how: Damage) -> None:
    pkg = package.damage("model.onnx", how)
    _expect_typed(lambda: Model.load(pkg), "model.onnx")


@settings(FUZZ, max_examples=30)
@given(how=damage, reseal=st.booleans())
def test_composed_spec(composed: Fuzzed, how: Damage, reseal: bool) -> None:
    pkg = composed.damage("compose.json", how, reseal=reseal)
    _expect_typed(lambda: Model.load(pkg), "compose.json", repr(pkg.name))


@pytest.fixture(scope="module")
def with_example(tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    root = tmp_path_factory.mktemp("example")
    model = Model.load(models.onnx_mlp(root / "m.onnx"), example_input={"x": np.ones((2, 4), np.float32)})
    return Fuzzed(model.save(root / "pkg"), root / "scratch")


@settings(FUZZ, max_examples=20)
@given(how=damage)
def test_package_example(with_example: Fuzzed, how: Damage) -> None:
    """The example inputs (an .npz, a zip file): re-sealed, so numpy's and zipfile's errors are reached."""
    pkg = with_example.damage("example.npz", how, reseal=True)
    _expect_typed(lambda: Model.load(pkg), "example.npz")


@FUZZ
@given(how=damage, reseal=st.booleans())
def test_remote_package_file(remote: Fuzzed, how: Damage, reseal: bool) -> None:
    pkg = remote.damage("remote.json", how, reseal=reseal)
    # A flip inside the URL makes a valid file naming another server or model: the client says so.
    _expect_typed(lambda: Model.load(pkg), "remote.json", repr(pkg.name), valid=(RemoteError, ModelNotFound))


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory, mlp: Model) -> Fuzzed:
    root = tmp_path_factory.mktemp("lib")
    lib = Store(root / "lib")
    lib.publish(mlp, "fraud")
    lib.publish(mlp, "fraud")
    lib.set_alias("fraud", "production", 1)
    lib.set_alias("fraud", "canary", {1: 0.9, 2: 0.1})
    return Fuzzed(root / "lib", root / "scratch")


def _read_library(root: Path) -> None:
    lib = Store(root)
    str(lib.listing())
    lib.aliases("fraud")
    lib.info("fraud", 1)
    lib.resolve("fraud", "canary")
    lib.load("fraud", "production")


@FUZZ
@given(how=damage)
def test_library_aliases(library: Fuzzed, how: Damage) -> None:
    root = library.damage("fraud/aliases.json", how)
    _expect_typed(lambda: _read_library(root), "fraud/aliases.json", valid=(ModelNotFound,))


@settings(FUZZ, max_examples=15)
@given(how=damage)
def test_library_listing_manifest(library: Fuzzed, how: Damage) -> None:
    root = library.damage(f"fraud/1/{MANIFEST}", how)
    _expect_typed(lambda: _read_library(root), "fraud/1", "package '1'")  # the version's package, fetched


CONFIGS: dict[str, str] = {
    "aimass.toml": '[models.fraud]\nuri = "models/fraud.onnx"\ndevice = "cpu"\n',
    "aimass.yaml": "models:\n  fraud:\n    uri: models/fraud.onnx\n    device: cpu\n",
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@FUZZ
@given(how=damage)
def test_config_file(tmp_path: Path, name: str, how: Damage) -> None:
    pytest.importorskip("yaml")
    file = tmp_path / name
    file.write_bytes(_damaged(CONFIGS[name].encode(), how))
    _expect_typed(lambda: model_config("fraud", path=file, env={}), name)


def test_a_flipped_byte_that_breaks_utf8_is_an_integrity_error(package: Fuzzed) -> None:
    """The report that started this: one byte of aimass.json made non-UTF-8."""
    from aimass.errors import IntegrityError

    original = (package.pristine / MANIFEST).read_bytes()
    at = original.index(b'"backend"') + 2
    pkg = package.damage(MANIFEST, ("flip", at, original[at] ^ 0xFF))
    with pytest.raises(IntegrityError, match=MANIFEST):
        Model.load(pkg)
