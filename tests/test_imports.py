"""`import aimass` stays light, the public API is complete, and missing frameworks name their extra."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import aimass

# numpy stays last: `from aimass import Model` may import it, `import aimass` may not.
FRAMEWORKS = (
    "torch", "tensorflow", "keras", "onnxruntime", "onnx", "xgboost", "mxnet", "sklearn", "ray", "transformers",
    "tokenizers", "grpc", "PIL", "pyarrow", "opentelemetry", "playwright", "numpy",
)  # fmt: skip


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True, timeout=120
    )
    return result.stdout.strip()


def test_import_aimass_imports_no_framework() -> None:
    out = _run(
        f"""
        import sys, aimass
        print(",".join(m for m in {FRAMEWORKS!r} if m in sys.modules))
        """
    )
    assert out == ""


def test_model_import_imports_no_ml_framework() -> None:
    out = _run(
        f"""
        import sys
        from aimass import Model, Schema, SchemaError
        print(",".join(m for m in {FRAMEWORKS[:-1]!r} if m in sys.modules))
        """
    )
    assert out == ""


def test_all_is_sorted_and_complete() -> None:
    assert aimass.__all__ == sorted(aimass.__all__)
    for name in aimass.__all__:
        assert getattr(aimass, name) is not None, name
    public = {n for n in dir(aimass) if not n.startswith("_")}
    assert public <= set(aimass.__all__) | {"annotations", "importlib", "TYPE_CHECKING", "Any"} | _submodules()


def _submodules() -> set[str]:
    return {n for n in dir(aimass) if isinstance(getattr(aimass, n, None), type(sys))}


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        aimass.nope  # noqa: B018


@pytest.mark.parametrize(
    ("module", "source", "extra"),
    [
        ("onnxruntime", "'m.onnx'", "onnx"),
        ("torch", "'m.pt2'", "torch"),
        ("xgboost", "'m.ubj'", "xgboost"),
    ],
)
def test_missing_framework_names_the_extra(module: str, source: str, extra: str, tmp_path: object) -> None:
    out = _run(
        f"""
        import sys, os, tempfile
        sys.modules[{module!r}] = None  # as if not installed
        from aimass import Model, BackendUnavailable
        d = tempfile.mkdtemp()
        path = os.path.join(d, {source})
        open(path, "wb").write(b"x")
        try:
            Model.load(path)
        except BackendUnavailable as e:
            print(type(e).__name__, e)
        """
    )
    assert out.startswith("BackendUnavailable")
    assert f"pip install 'aimass[{extra}]'" in out
