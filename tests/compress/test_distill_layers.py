"""compress("distill", layers=...): a student with fewer of the teacher's own blocks, trained to match it."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_bert

from aimass import Model, UnsupportedOperation
from aimass.measure import compare_outputs

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")


def test_student_has_half_the_layers_and_tracks_the_teacher() -> None:
    # Weights wider than BERT's init, so that dropping layers changes the output (as in trained models).
    teacher = Model.load(tiny_bert.encoder(layers=4, init=0.1), example_input=tiny_bert.tokens(2, seed=1))
    data = tiny_bert.tokens(64, seed=2)
    held_out = tiny_bert.tokens(32, seed=9)
    start = teacher.compress("distill", layers=2, data=data, epochs=0, repeats=0, progress=False)
    student = teacher.compress("distill", layers=2, data=data, epochs=4, learning_rate=2e-3, repeats=0, progress=False)
    stack = student.backend.module.bert.encoder.layer
    assert len(stack) == 2 and len(teacher.backend.module.bert.encoder.layer) == 4  # the teacher is untouched
    r = student.report
    assert r.operation == "distill" and r.settings["kept_layers"] == [0, 2] and r.settings["layers"] == "2 of 4"
    # Before training, the student's blocks are copies of the teacher's blocks 0 and 2, exactly.
    blocks = teacher.backend.module.bert.encoder.layer
    for got, want in zip(start.backend.module.bert.encoder.layer, [blocks[0], blocks[2]], strict=True):
        assert got is not want
        assert all(
            torch.equal(a, b) for a, b in zip(got.state_dict().values(), want.state_dict().values(), strict=True)
        )
    ref = teacher.predict(held_out)["output"]
    before = compare_outputs({"o": ref}, {"o": start.predict(held_out)["output"]})[0]
    after = compare_outputs({"o": ref}, {"o": student.predict(held_out)["output"]})[0]
    assert after.cosine > before.cosine and after.mean_abs_error < before.mean_abs_error  # training helped
    assert after.min_cosine > 0.9
    assert r.drift[0].cosine == pytest.approx(
        compare_outputs(teacher.predict(data), student.predict(data))[0].cosine, abs=1e-6
    )
    assert student.example is not None and np.array_equal(student.example["input_ids"], teacher.example["input_ids"])


def test_distill_needs_data_and_a_layer_stack() -> None:
    teacher = Model.load(tiny_bert.encoder(layers=2), example_input=tiny_bert.tokens(2))
    with pytest.raises(ValueError, match="needs data="):
        teacher.compress("distill", layers=1)
    with pytest.raises(ValueError, match="between 1 and 1"):
        teacher.compress("distill", layers=2, data=tiny_bert.tokens(8), repeats=0)
    mlp = Model.load(torch.nn.Sequential(torch.nn.Linear(4, 3)), example_input={"input": np.zeros((2, 4), np.float32)})
    with pytest.raises(UnsupportedOperation, match="nn.ModuleList"):
        mlp.compress("distill", layers=1, data=np.zeros((8, 4), np.float32), repeats=0)
