"""Saving a text model prints no transformers progress bar, and leaves transformers' own setting as it was."""

from __future__ import annotations

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
