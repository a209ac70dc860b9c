"""Optimum's int8 recipe for a BERT encoder, run in a side environment by benchmarks/compress.py.

What a knowledgeable user does with Hugging Face Optimum: ``ORTOptimizer`` at level O2 (attention,
LayerNorm, GELU and bias fusion), then ``ORTQuantizer`` with ``AutoQuantizationConfig.avx512_vnni``
(dynamic, per-channel). Optimum pins an older transformers than aimass's dev environment, so it
lives in its own environment that borrows the rest (onnxruntime included, so both sides run the same
kernels) from ``.venv``:

    python3.11 -m venv .optimum
    .venv/bin/python -c "import site; print(site.getsitepackages()[0])" \\
        > .optimum/lib/python3.11/site-packages/aimass_venv.pth
    .optimum/bin/pip install --no-deps optimum==2.3.0 optimum-onnx==0.1.0 transformers==4.55.4 \\
        huggingface_hub==0.34.4 tokenizers==0.21.4

Run (compress.py does it with ``--optimum .optimum/bin/python``):
    .optimum/bin/python benchmarks/optimum_int8.py model.onnx config_dir out.onnx
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path


def main() -> None:
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    source, config_dir, out = (Path(a) for a in sys.argv[1:4])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shutil.copy(source, work / "model.onnx")
        shutil.copy(config_dir / "config.json", work / "config.json")
        optimizer = ORTOptimizer.from_pretrained(work, file_names=["model.onnx"])
        optimizer.optimize(AutoOptimizationConfig.O2(), save_dir=work / "optimized")
        # The fused contrib ops carry no types, which onnxruntime's quantizer needs: infer them first,
        # as onnxruntime's own quantization pre-processing does.
        fused = work / "optimized" / "model_optimized.onnx"
        onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(fused)), auto_merge=True), str(fused))
        quantizer = ORTQuantizer.from_pretrained(work / "optimized", file_name="model_optimized.onnx")
        config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
        quantizer.quantize(config, save_dir=work / "quantized")
        shutil.copy(next((work / "quantized").glob("*.onnx")), out)


if __name__ == "__main__":
    main()
