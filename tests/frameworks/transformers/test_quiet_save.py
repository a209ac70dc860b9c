"""Text models are quiet: saving shows no transformers progress bar, loading no torchao log lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cases import text_tokenizer, tiny_bert

from aimass import Model

pytest.importorskip("transformers")


def test_save_prints_no_shard_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from transformers.utils import logging as hf_logging

    tok = text_tokenizer()
    net = tiny_bert("classify", len(tok), seed=3)
    m = Model.load(net, tokenizer=tok)
    capfd.readouterr()
    m.save(tmp_path / "pkg")
    out, err = capfd.readouterr()
    assert "Writing model shards" not in err and out == "", err
    assert Model.load(tmp_path / "pkg").predict(["you are kind"])["label"].shape == (1,)
    # Put back as it was: the user's own save_pretrained still shows the bar (and shows what was silenced).
    assert hf_logging.is_progress_bar_enabled()
    net.save_pretrained(str(tmp_path / "raw"))
    assert "Writing model shards" in capfd.readouterr().err


@pytest.mark.slow  # a fresh interpreter importing torch and transformers: about 14 s on 2 busy cores
def test_loading_a_saved_text_model_logs_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tok = text_tokenizer()
    Model.load(tiny_bert("classify", len(tok), seed=3), tokenizer=tok).save(tmp_path / "pkg")
    capfd.readouterr()
    # A fresh interpreter (as aimass serve is): transformers' model code imports torchao, which logged
    # its CUDA-only libraries and torch's pytree deprecations on every start.
    code = "from aimass import Model; print(Model.load('pkg').predict(['you are kind'])['label'][0])"
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120)
    out, err = capfd.readouterr()
    assert out.strip() in ("friendly", "toxic")
    assert "Failed to load" not in err and "register_constant" not in err and "triton" not in err, err
    assert list((tmp_path / "tmp").iterdir()) == []
