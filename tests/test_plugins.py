"""Frameworks as plug-ins: a framework in its own distribution plugs in through an entry point.

The distribution is written here, into a temporary site directory with a real
``aimass_linear-0.1.dist-info/entry_points.txt``, as pip would install it: a NumPy linear model
(``y = x @ weight + bias``) with its own file format, its backend, a compressor and a trainer, and a
manifest named in the ``aimass.frameworks`` group. Nothing inside ``aimass/`` is edited or called
to register it: ``Model.load`` finds it through ``importlib.metadata``, and aimass's conformance
suite runs on it unchanged. The rest checks the manifests of aimass's own frameworks.
"""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
import textwrap
import tomllib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from aimass import Model, plugins
from aimass.backends import detect, get_backend
from aimass.backends.base import Backend
from aimass.errors import UnsupportedOperation
from aimass.testing import BackendConformance, Case

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "aimass_linear"

MODEL_PY = '''
"""The third party's model object and file format: y = x @ weight + bias, saved as .linear.npz."""
from pathlib import Path

import numpy as np


class LinearModel:
    def __init__(self, weight, bias):
        self.weight = np.asarray(weight)
        self.bias = np.asarray(bias)

    @classmethod
    def random(cls, n_in=4, n_out=3, seed=0):
        rng = np.random.default_rng(seed)
        return cls(rng.standard_normal((n_in, n_out)), rng.standard_normal(n_out))

    def save(self, path):
        with open(path, "wb") as f:  # np.savez would append .npz to the name
            np.savez(f, weight=self.weight, bias=self.bias)
        return Path(path)

    @classmethod
    def read(cls, path):
        with np.load(path, allow_pickle=False) as f:
            return cls(f["weight"], f["bias"])
'''

BACKEND_PY = '''
"""The third party's backend: the Backend contract of aimass, nothing else from inside aimass."""
from pathlib import Path

import numpy as np

from aimass.backends.base import Backend
from aimass.device import split_device
from aimass.errors import DeviceError, ModelLoadError
from aimass.schema import DType, Schema, TensorSpec
from aimass_linear.model import LinearModel


class LinearBackend(Backend):
    name = "linear"
    framework = "numpy"
    extra = "linear"
    suffixes = (".linear.npz",)
    type_modules = ("aimass_linear.",)

    def __init__(self, model, schema=None):
        self.weight = np.asarray(model.weight, dtype=np.float32)
        self.bias = np.asarray(model.bias, dtype=np.float32)
        n_in, n_out = self.weight.shape
        self.schema = schema or Schema(
            inputs=[TensorSpec(name="x", dtype=DType.FP32, shape=[-1, n_in])],
            outputs=[TensorSpec(name="y", dtype=DType.FP32, shape=[-1, n_out])],
        )

    @classmethod
    def load(cls, source, *, device="cpu", schema=None, example_input=None, options=None):
        if split_device(device)[0] != "cpu":
            raise DeviceError(f"the linear backend runs on the CPU only; got device {device!r}")
        if isinstance(source, LinearModel):
            return cls(source, schema)
        try:
            return cls(LinearModel.read(Path(source)), schema)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"cannot read linear model {Path(source).name!r}: {e}") from e

    def run(self, inputs):
        return {"y": inputs["x"] @ self.weight + self.bias}

    def save(self, directory):
        LinearModel(self.weight, self.bias).save(directory / "model.linear.npz")
        return ["model.linear.npz"]
'''

TOOLS_PY = '''
"""The third party's tools: fp16 weights for compress(), least squares for update()."""
import numpy as np

from aimass.backends.base import Derived, no_unknown_options
from aimass_linear.backend import LinearBackend
from aimass_linear.model import LinearModel


def fp16(backend, *, data=None, **unknown):
    no_unknown_options(unknown)
    b = LinearBackend.of(backend)
    rounded = LinearModel(b.weight.astype(np.float16), b.bias.astype(np.float16))
    return Derived(LinearBackend(rounded, b.schema), settings={"weights": "float16"})


def train(backend, inputs, labels, **_):
    b = LinearBackend.of(backend)
    x = np.concatenate([inputs["x"].astype(np.float64), np.ones((len(labels), 1))], axis=1)
    solution = np.linalg.lstsq(x, np.asarray(labels, dtype=np.float64), rcond=None)[0]
    return LinearBackend(LinearModel(solution[:-1], solution[-1]), b.schema)
'''

PLUGIN_PY = """
from aimass.plugins import FrameworkPlugin

PLUGIN = FrameworkPlugin(
    name="linear",
    backends={"linear": "aimass_linear.backend:LinearBackend"},
    compressors={("linear", "fp16"): "aimass_linear.tools:fp16"},
    trainers={"linear": "aimass_linear.tools:train"},
)
"""


def write_distribution(site: Path, entry_points: str, *, name: str = "aimass_linear") -> None:
    """What ``pip install aimass-linear`` leaves in site-packages: the package and its dist-info."""
    package = site / PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    for module, text in {
        "__init__": "",
        "model": MODEL_PY,
        "backend": BACKEND_PY,
        "tools": TOOLS_PY,
        "plugin": PLUGIN_PY,
    }.items():
        (package / f"{module}.py").write_text(textwrap.dedent(text))
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site-packages")
    write_distribution(site, "[aimass.frameworks]\nlinear = aimass_linear.plugin:PLUGIN\n")
    return site


@pytest.fixture(scope="module", autouse=True)
def installed(site: Path) -> Iterator[None]:
    """The distribution is on sys.path while this module runs (as if pip-installed), and gone afterwards."""
    sys.path.insert(0, str(site))
    plugins.refresh()  # this process may have read the entry points before the "install"
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]
        plugins.refresh()


def _linear() -> Any:
    return importlib.import_module(f"{PACKAGE}.model").LinearModel


# --- aimass's conformance suite on the plug-in's backend ----------------------------------------------


def _from_file(tmp: Path) -> Model:
    return Model.load(_linear().random().save(tmp / "m.linear.npz"))  # detected by suffix


def _from_object(tmp: Path) -> Model:
    _linear().random(seed=1).save(tmp / "m.linear.npz")  # for the reference
    return Model.load(_linear().read(tmp / "m.linear.npz"))  # detected by the object's module


def _numpy_reference(tmp: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    m = _linear().read(tmp / "m.linear.npz")
    y = np.einsum("bi,io->bo", inputs["x"].astype(np.float64), m.weight) + m.bias
    return {"y": y.astype(np.float32)}


class TestEntryPointFramework(BackendConformance):
    cases: ClassVar[list[Case]] = [
        Case("linear-file", _from_file, "numpy", reference=_numpy_reference),
        Case("linear-object", _from_object, "numpy", reference=_numpy_reference),
    ]

    def test_the_case_runs_on_the_plugged_in_backend(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        assert model.backend_name == "linear"
        assert type(model.backend).__module__ == f"{PACKAGE}.backend"


# --- the plug-in's other tools, reached by aimass's features --------------------------------------------


def test_compress_and_update_use_the_plugin_tools(tmp_path: Path) -> None:
    m = Model.load(_linear().random(n_in=3, n_out=2, seed=2).save(tmp_path / "m.linear.npz"))
    x = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)

    half = m.compress("fp16", data=x)
    assert half.backend_name == "linear"
    assert half.report.settings["weights"] == "float16"
    np.testing.assert_allclose(half.predict(x)["y"], m.predict(x)["y"], atol=5e-3)

    weight, bias = np.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]]), np.array([0.25, -1.0])
    updated = m.update(x, x @ weight + bias)
    np.testing.assert_allclose(updated.predict(x)["y"], x @ weight + bias, atol=1e-4)
    assert not np.allclose(m.predict(x)["y"], updated.predict(x)["y"])  # the original is unchanged

    with pytest.raises(UnsupportedOperation, match="'int8' is not available for the linear backend"):
        m.compress("int8", data=x)


def test_a_fresh_interpreter_finds_the_plugin_on_first_load_only(site: Path, tmp_path: Path) -> None:
    """No edit, no call: installed is enough; ``import aimass`` (and ``Model``) still import no plug-in."""
    path = _linear().random().save(tmp_path / "m.linear.npz")
    code = f"""
        import sys
        from aimass import Model
        before = "{PACKAGE}" in sys.modules
        m = Model.load({str(path)!r})
        print(before, m.backend_name, m.schema)
    """
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True, timeout=120, env=env
    )
    assert out.stdout.strip() == "False linear (x: FP32 [-1, 4]) -> (y: FP32 [-1, 3])", out.stderr


# --- entry points that do not load, or collide ---------------------------------------------------------


def test_a_broken_entry_point_is_skipped_with_a_warning(tmp_path: Path) -> None:
    group = "aimass.frameworks.test-broken"
    write_distribution(
        tmp_path,
        f"[{group}]\nmissing = aimass_linear.nowhere:PLUGIN\nwrong = aimass_linear.model:LinearModel\n"
        "good = aimass_linear.plugin:PLUGIN\n",
        name="aimass_broken",
    )
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        with pytest.warns(RuntimeWarning) as caught:
            found = plugins.installed_plugins(group)
    finally:
        sys.path.remove(str(tmp_path))
    assert [p.name for p in found] == ["linear"]
    texts = sorted(str(w.message) for w in caught)
    assert "entry point 'missing'" in texts[0] and "ModuleNotFoundError" in texts[0], texts
    assert "entry point 'wrong'" in texts[1] and "expected an aimass.plugins.FrameworkPlugin" in texts[1], texts
    assert all("aimass-broken distribution" in t for t in texts), texts


def test_an_entry_point_never_replaces_a_builtin_entry() -> None:
    clash = plugins.FrameworkPlugin(
        name="impostor",
        backends={"onnx": "impostor.backend:Onnx", "impostor": "impostor.backend:Own"},
        trainers={"torch": "impostor.train:train"},
    )
    registry = plugins.Registry(lambda: [*plugins.builtin_plugins(), clash])
    with pytest.warns(RuntimeWarning) as caught:
        table = registry.entries(plugins.BACKEND)
    assert sorted(str(w.message) for w in caught) == [
        f"aimass: plug-in 'impostor' declares {what}, which is taken; the first declaration is kept"
        for what in ("backends['onnx']", "trainers['torch']")
    ]
    assert table["onnx"] == "aimass.frameworks.onnx.backend:OnnxBackend"
    assert registry.entries(plugins.TRAINER)["torch"] == "aimass.frameworks.torch.train:train"
    assert list(table)[-1] == "impostor"  # no rank: tried after every backend of aimass's own


def test_register_unregister_and_refresh() -> None:
    registry = plugins.Registry(plugins.builtin_plugins)

    def trainer(backend: Backend, inputs: dict[str, np.ndarray], labels: np.ndarray, /, **options: Any) -> Backend:
        return backend

    registry.register(plugins.TRAINER, "mine", trainer)
    registry.register(plugins.BACKEND, "first", "mylib:First", rank=-1)
    assert registry.lookup(plugins.TRAINER, "mine") is trainer
    assert registry.keys(plugins.BACKEND)[0] == "first"
    registry.refresh()  # registrations survive a rebuild of the tables
    assert registry.lookup(plugins.TRAINER, "mine") is trainer
    registry.unregister(plugins.TRAINER, "mine")
    assert "mine" not in registry.keys(plugins.TRAINER)
    with pytest.raises(ValueError, match="must look like 'package.module:attr'"):
        registry.register(plugins.EXPORTER, ("mine", "onnx"), "no_colon")
    with pytest.raises(ValueError, match=r"plug-in 'bad': trainers\['x'\] must be 'package.module:attr'"):
        plugins.FrameworkPlugin(name="bad", trainers={"x": "module_only"})


# --- aimass's own manifests ------------------------------------------------------------------------------

# Which Protocol each kind's entries are called through (hints are text, not called).
PROTOCOLS: dict[str, Any] = {
    "compressors": plugins.Compressor,
    "wrapped": plugins.WrappedCompressor,
    "exporters": plugins.Exporter,
    "importers": plugins.Importer,
    "optimizers": plugins.Optimizer,
    "trainers": plugins.Trainer,
    "distillers": plugins.Distiller,
    "shrinkers": plugins.Shrinker,
}


def binds(fn: Any, protocol: Any) -> bool:
    """Whether ``fn`` accepts the call a feature makes through ``protocol`` (its arguments; ``**options`` aside)."""
    params = list(inspect.signature(protocol.__call__).parameters.values())[1:]  # without self
    args = [object() for p in params if p.kind is p.POSITIONAL_ONLY]
    kwargs = {p.name: object() for p in params if p.kind is p.KEYWORD_ONLY}
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        return False
    return True


def test_the_signature_check_can_fail() -> None:
    def compressor(backend: Backend, *, amount: float) -> None: ...  # no data=, and requires amount

    def exporter(backend: Backend, opset: int) -> None: ...  # requires a second argument

    assert not binds(compressor, plugins.Compressor)
    assert not binds(exporter, plugins.Exporter)


def test_every_framework_folder_has_a_manifest() -> None:
    folders = sorted(p.name for p in (ROOT / "aimass" / "frameworks").iterdir() if (p / "__init__.py").exists())
    manifests = sorted(p.parent.name for p in (ROOT / "aimass" / "frameworks").glob("*/plugin.py"))
    assert folders == manifests
    assert sorted(p.name for p in plugins.builtin_plugins()) == sorted(["aimass", *folders])


def test_builtin_entries_resolve_and_take_the_protocol_call() -> None:
    registry = plugins.Registry(plugins.builtin_plugins)
    for kind in plugins.KINDS:
        for key in registry.keys(kind):
            entry = registry.lookup(kind, key)
            if kind is plugins.BACKEND:
                assert isinstance(entry, type) and issubclass(entry, Backend), key
                assert entry.name == key, (key, entry.name)  # package manifests record this name
            elif kind.resolve:
                assert binds(entry, PROTOCOLS[kind.field]), (kind, key, inspect.signature(entry))
            else:
                assert isinstance(entry, str) and entry, (kind, key)


def test_detection_order_is_unchanged() -> None:
    # The order detection tries backends in before the tables moved into manifests.
    assert plugins.Registry(plugins.builtin_plugins).keys(plugins.BACKEND) == [
        "python", "onnx", "transformers", "torch", "xgboost", "compose", "keras", "tensorflow", "tflite",
        "mxnet", "sklearn", "remote", "grpc", "tensorrt",
    ]  # fmt: skip


def test_detection_of_builtin_sources_still_works() -> None:
    assert detect("model.onnx") is get_backend("onnx")
    assert detect("model.pt2").name == "torch"
    assert detect("http://127.0.0.1:8000/v2/models/m").name == "remote"


def test_framework_independence_contract_covers_every_folder() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "independence"]
    folders = {p.parent.name for p in (ROOT / "aimass" / "frameworks").glob("*/__init__.py")}
    listed = set(contract["modules"])
    assert listed == {"aimass.frameworks.*"} or listed == {f"aimass.frameworks.{f}" for f in folders}, listed


def test_import_aimass_plugins_reads_no_manifest() -> None:
    code = "import sys, aimass.plugins\nprint(sorted(m for m in sys.modules if m.endswith('.plugin')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_no_warning_from_aimass_own_manifests() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plugins.Registry(plugins.builtin_plugins).keys(plugins.BACKEND)


@pytest.mark.slow
def test_mypy_checks_registered_callables_and_lookups(tmp_path: Path) -> None:
    """The Protocols are what mypy holds a registration and a feature's call to (about 15 s: mypy runs)."""
    snippet = tmp_path / "snippet.py"
    snippet.write_text(
        textwrap.dedent(
            """
            from typing import Any
            from aimass import plugins
            from aimass.backends.base import Backend, Derived

            def good(backend: Backend, /, *, data: Any, **options: Any) -> Derived:
                return Derived(backend)

            def bad(backend: Backend, amount: float) -> Derived:
                return Derived(backend)

            plugins.register(plugins.COMPRESSOR, ("mine", "int8"), good)
            plugins.register(plugins.COMPRESSOR, ("mine", "int8"), bad)  # line 13
            plugins.lookup(plugins.TRAINER, "mine")(good, {})  # line 14
            """
        )
    )
    config, cache = str(ROOT / "pyproject.toml"), str(tmp_path / "cache")
    command = [sys.executable, "-m", "mypy", "--config-file", config, "--cache-dir", cache, str(snippet)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    lines = {int(line.split(":")[1]) for line in out.stdout.splitlines() if ": error:" in line}
    assert lines == {13, 14}, out.stdout
