"""int8 by CPU class: the recipe follows the class, each class is tested, the AVX2 path runs under emulation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import models
import numpy as np
import pytest

from aimass import Model, UnsupportedOperation
from aimass.compress import compress
from aimass.frameworks.onnx.int8_cpu import ISAS, cpu_isa, isa_from_flags, kernel_recipe
from aimass.frameworks.onnx.smooth import input_ranges

pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[3]

# /proc/cpuinfo flags of one real CPU of each class.
FLAGS = {
    "amx": {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "amx_tile"},  # Sapphire Rapids
    "avx512_vnni": {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"},  # Zen 4, Cascade Lake
    "avx_vnni": {"avx2", "avx_vnni"},  # Alder Lake (no AVX-512)
    "avx512": {"avx2", "avx512f", "avx512bw", "avx512cd"},  # Skylake-SP
    "avx2": {"avx", "avx2", "fma"},  # Haswell, Zen 2
    "other": {"sse4_2"},
}


@pytest.mark.parametrize("isa", ISAS)
def test_each_cpu_class_is_recognised_and_gets_its_recipe(isa: str) -> None:
    assert isa_from_flags(FLAGS[isa]) == isa
    recipe = kernel_recipe(isa)
    # Only the classes whose u8s8 kernels add in saturating 16-bit registers take 7-bit weights.
    assert recipe.reduce_range is (isa in ("avx512", "avx2"))
    assert isa in recipe.note()


def test_an_unknown_cpu_class_is_a_typed_error() -> None:
    with pytest.raises(UnsupportedOperation, match="avx9"):
        kernel_recipe("avx9")


def _int8_weights(model: Model) -> list[np.ndarray]:
    import onnx
    from onnx import numpy_helper

    proto = onnx.load_model_from_string(model.backend.model_bytes)
    return [numpy_helper.to_array(i) for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8]


@pytest.mark.parametrize(("isa", "limit"), [("avx2", 64), ("avx512", 64), ("avx512_vnni", 127), ("amx", 127)])
def test_int8_weights_are_7_bit_only_where_the_kernels_saturate(tmp_path: Path, isa: str, limit: int) -> None:
    model = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx", hidden=64))
    x, _ = models.dataset(64, seed=1)
    q = compress(model, "int8", data=x, isa=isa, min_cosine=0.9)
    settings = q.report.settings
    assert settings["cpu_class"] == isa
    assert settings["reduce_range"] is (limit == 64)
    assert any(f"CPU class {isa}" in n for n in q.report.notes)
    weights = _int8_weights(q)
    assert weights, "no int8 weights in the quantized graph"
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) == limit


def test_smoothing_a_graph_with_nothing_to_smooth_says_so(tmp_path: Path) -> None:
    # The test MLP is Gemm only: no MatMul to smooth. Forcing smoothing used to crash in input_ranges.
    model = Model.load(models.onnx_mlp(tmp_path / "mlp.onnx", hidden=64))
    x, _ = models.dataset(64, seed=2)
    q = compress(model, "int8", data=x, smooth=True, min_cosine=0.9)
    assert any("nothing to smooth" in n for n in q.report.notes)
    ref, got = model.predict(x[:8])["y"], q.predict(x[:8])["y"]
    assert got.shape == ref.shape and np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.9


def test_input_ranges_of_a_graph_input_come_from_the_data() -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    x = np.array([[1, -5, 2, 0], [-3, 1, 0.5, 7]], np.float32)
    ranges = input_ranges(proto, {"x": x})
    np.testing.assert_array_equal(ranges["x"], [3, 5, 2, 7])


def test_this_process_reports_its_cpu_class() -> None:
    # Under emulation (below) the expected class is given; natively it must at least be a known class.
    expected = os.environ.get("AIMASS_EXPECT_CPU_CLASS")
    assert cpu_isa() == (expected or cpu_isa())
    assert cpu_isa() in ISAS


# The int8 tests that reach the CPU-dependent paths: the search, the report, the CLI.
EMULATED = [
    "tests/frameworks/onnx/test_int8_cpu.py",
    "tests/compress/test_quantize.py::test_onnx_dynamic_int8_report_is_real",
    "tests/compress/test_quantize.py::test_onnx_dynamic_int8_measures_recipes_and_keeps_the_closest",
    "tests/compress/test_quantize.py::test_onnx_static_int8_calibrates_on_user_data",
    "tests/compress/test_smoothing.py",
    "tests/cli/test_cli_compress.py::test_compress_writes_package_and_report",
]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="qemu user-mode emulation runs Linux binaries")
def test_int8_tests_pass_on_an_avx2_only_cpu() -> None:
    """Runs the int8 tests in a process that sees a Haswell CPU (AVX2, no AVX-512, no VNNI).

    ``qemu-x86_64 -cpu Haswell`` (Debian package qemu-user; scripts/test.sh installs it on CI)
    makes CPUID report a Haswell, so onnxruntime picks its AVX2 kernels: numerics only, the
    timings mean nothing.
    """
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-x86_64 is missing on CI: scripts/test.sh installs qemu-user")
        pytest.skip("qemu-x86_64 not installed (apt-get install qemu-user)")
    env = {**os.environ, "AIMASS_EXPECT_CPU_CLASS": "avx2"}
    # -m "not slow" keeps this test from running itself again.
    cmd = [qemu, "-cpu", "Haswell", sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
           "-m", "not slow", "-o", "addopts=", *EMULATED]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = done.stdout + "\n".join(line for line in done.stderr.splitlines() if "TCG doesn't support" not in line)
    assert done.returncode == 0, out[-6000:]
    assert " passed" in out and "failed" not in out
