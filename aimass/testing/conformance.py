"""The backend conformance suite: every backend, aimass's own or a third party's, passes it unchanged.

:class:`BackendConformance` holds the tests as methods; a test module subclasses it (with a name
pytest collects, ``Test...``) and gives it :class:`Case` objects, either as the ``cases`` class
attribute or by overriding the ``case`` fixture. Every test then runs once per case. The base class
itself is not collected (its name does not start with ``Test``), so importing it is harmless.

Example (a test module of a package that registers its own backend)::

    from aimass.testing import BackendConformance, Case

    class TestMyBackend(BackendConformance):
        cases = [Case("mine-file", lambda tmp: Model.load(write_model(tmp / "m.mine")), "mylib",
                      reference=lambda tmp, inputs: mylib.load(tmp / "m.mine").run(inputs))]

What the suite checks, per case: the schema is inferred with a dynamic batch dimension; outputs
match the schema; batch rows equal single rows; a single array and a nested list are taken for a
one-input model (a dict is demanded otherwise); float64 is narrowed to float32; floats into integer
inputs (or strings into numbers) are refused; wrong shapes, missing and unexpected inputs are refused
with the tensor named; save -> load gives the same schema, backend and answers; a tampered package is
refused; ``predict_batch`` and ``apredict`` equal ``predict``; 8 threads calling at once get the
right answers; and the answers equal the raw framework's (``Case.reference``) on the same model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from aimass.errors import IntegrityError, SchemaError
from aimass.model import Model
from aimass.package import read_manifest
from aimass.schema import DType

__all__ = ["Arrays", "BackendConformance", "Case", "run_in_threads"]

Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Case:
    """One model the suite runs against.

    * ``id``: the test id suffix (``test_schema_is_inferred[id]``).
    * ``build(tmp)``: returns the :class:`~aimass.Model`; ``tmp`` is a fresh directory for its files.
    * ``framework``: a module that must be importable, or every test of the case is skipped.
    * ``tolerance``: absolute and relative error allowed between batch-1 and batch-N results (float
      kernels may pick different blockings for different batch sizes), and against ``reference``.
    * ``marks``: pytest marks for the case (``pytest.mark.gpu``, ``pytest.mark.slow``).
    * ``trust_code``: the case's packages hold Python code, so reloading them opts in
      (``Model.load(path, trust_code=True)``).
    * ``reference(tmp, inputs)``: runs the raw framework on the same model ``build(tmp)`` loaded and
      returns outputs keyed like the Model's. A case without one must say why in ``no_reference``:
      the suite fails it otherwise (and skips the comparison with that reason when it does).
    """

    id: str
    build: Callable[[Path], Model]
    framework: str
    tolerance: float = 1e-5
    marks: tuple[pytest.MarkDecorator, ...] = ()
    reference: Callable[[Path, Arrays], Arrays] | None = None
    no_reference: str = ""
    trust_code: bool = False


def _inputs(model: Model, batch: int, seed: int = 0) -> Arrays:
    return model.schema.example(batch=batch, seed=seed)


def _assert_same(a: Arrays, b: Arrays, tol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert a[k].shape == b[k].shape, k
        if tol == 0.0 or a[k].dtype.kind == "O":  # BYTES (labels, texts) compare exactly
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            np.testing.assert_allclose(a[k], b[k], atol=tol, rtol=tol, err_msg=k)


def run_in_threads(worker: Callable[[int], object], n: int) -> None:
    """Call ``worker(i)`` for i in 0..n-1, each in its own thread started together; re-raise the first error."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            worker(i)
        except BaseException as e:  # re-raised in the test's thread, where pytest sees it
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


class BackendConformance:
    """The backend contract as pytest tests; subclass it as ``Test...`` and set ``cases``.

    Fixtures, all class-scoped so each case's model is built once per subclass:
    ``case`` (the :class:`Case`; parametrized from ``cases``, or override it), ``built_case``
    (``(case, model, tmp)``: the model and the directory its build wrote to) and ``case_model``
    (``(case, model)``).
    """

    cases: ClassVar[Sequence[Case]] = ()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Parametrize the ``case`` fixture with ``cases`` (pytest calls this hook on test classes too)."""
        if self.cases and "case" in metafunc.fixturenames:
            params = [pytest.param(c, id=c.id, marks=c.marks) for c in self.cases]
            metafunc.parametrize("case", params, indirect=True, scope="class")

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls, request: pytest.FixtureRequest) -> Case:
        if not hasattr(request, "param"):
            pytest.fail(f"{cls.__name__}: set the `cases` class attribute or override the `case` fixture")
        param: Case = request.param
        return param

    @pytest.fixture(scope="class")
    @classmethod
    def built_case(cls, case: Case, tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Model, Path]:
        """A case, its model, and the directory its build wrote to (its reference reads from there)."""
        if importlib.util.find_spec(case.framework) is None:
            pytest.skip(f"{case.framework} not installed")
        tmp = tmp_path_factory.mktemp(case.id)
        return case, case.build(tmp), tmp

    @pytest.fixture(scope="class")
    @classmethod
    def case_model(cls, built_case: tuple[Case, Model, Path]) -> tuple[Case, Model]:
        case, model, _ = built_case
        return case, model

    # -- the raw framework -------------------------------------------------------------------------

    def test_outputs_equal_raw_framework(self, built_case: tuple[Case, Model, Path]) -> None:
        """aimass answers what the framework itself answers on the same model and inputs (not only itself)."""
        case, model, tmp = built_case
        if case.reference is None:
            if not case.no_reference:
                pytest.fail(f"case {case.id!r} has no reference: add one, or say why not in Case.no_reference")
            pytest.skip(f"no raw-framework reference: {case.no_reference}")
        for batch, seed in ((1, 5), (9, 6)):
            inputs = _inputs(model, batch, seed=seed)
            got = model.predict(inputs)
            want = case.reference(tmp, {k: v.copy() for k, v in inputs.items()})
            assert sorted(want) == sorted(got), (sorted(want), sorted(got))
            for k in got:
                raw = np.asarray(want[k])
                assert got[k].shape == raw.shape, (k, got[k].shape, raw.shape)
                assert got[k].dtype.kind == raw.dtype.kind, (k, got[k].dtype, raw.dtype)
                if raw.dtype.kind == "O":  # BYTES outputs (labels) are equal or wrong
                    np.testing.assert_array_equal(got[k], raw, err_msg=k)
                    continue
                np.testing.assert_allclose(got[k], raw, atol=case.tolerance, rtol=case.tolerance, err_msg=k)

    # -- schema and outputs --------------------------------------------------------------------------

    def test_schema_is_inferred(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        s = model.schema
        assert s.inputs and s.outputs
        for spec in [*s.inputs, *s.outputs]:
            assert isinstance(spec.dtype, DType)
            assert all(isinstance(d, int) and d >= -1 for d in spec.shape)
        assert all(spec.shape[:1] == [-1] for spec in s.inputs), "batch dimension must be dynamic"

    @pytest.mark.parametrize("batch", [1, 7])
    def test_predict_matches_schema(self, case_model: tuple[Case, Model], batch: int) -> None:
        _, model = case_model
        out = model.predict(_inputs(model, batch))
        assert list(out) == model.schema.output_names
        for spec in model.schema.outputs:
            arr = out[spec.name]
            assert isinstance(arr, np.ndarray)
            assert arr.dtype == spec.dtype.numpy, spec.name
            assert spec.matches_shape(arr.shape), (spec.name, arr.shape, spec.shape)
            assert arr.shape[0] == batch

    def test_batch_rows_equal_single_rows(self, case_model: tuple[Case, Model]) -> None:
        case, model = case_model
        inputs = _inputs(model, 5, seed=1)
        whole = model.predict(inputs)
        for i in range(5):
            row = model.predict({k: v[i : i + 1] for k, v in inputs.items()})
            _assert_same(row, {k: v[i : i + 1] for k, v in whole.items()}, case.tolerance)

    # -- input validation ----------------------------------------------------------------------------

    def test_single_array_and_list_inputs(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        inputs = _inputs(model, 3)
        expected = model.predict(inputs)
        if len(model.schema.inputs) == 1:
            (only,) = inputs.values()
            _assert_same(model.predict(only), expected)
            _assert_same(model.predict(only.tolist()), expected, 1e-6)
        else:
            with pytest.raises(SchemaError, match="pass a dict"):
                model.predict(next(iter(inputs.values())))

    def test_float64_is_narrowed_to_float32(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        inputs = _inputs(model, 4)
        widened = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in inputs.items()}
        _assert_same(model.predict(widened), model.predict(inputs))

    def test_float_into_int_input_is_refused(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        int_specs = [s for s in model.schema.inputs if s.dtype.numpy.kind in "iu"]
        if not int_specs:
            # Every model must refuse strings where numbers are expected, and numbers where text is.
            spec = model.schema.inputs[0]
            inputs = _inputs(model, 2)
            if spec.dtype is DType.BYTES:
                inputs[spec.name] = np.zeros(inputs[spec.name].shape, np.float64)
                with pytest.raises(SchemaError, match=rf"input '{spec.name}': expected BYTES .*numbers"):
                    model.predict(inputs)
                return
            inputs[spec.name] = inputs[spec.name].astype(str)
            with pytest.raises(SchemaError, match=rf"input '{spec.name}': expected {spec.dtype.value} .*strings"):
                model.predict(inputs)
            return
        spec = int_specs[0]
        inputs = _inputs(model, 2)
        inputs[spec.name] = inputs[spec.name].astype(np.float64) + 0.5
        with pytest.raises(
            SchemaError, match=rf"input '{spec.name}': expected {spec.dtype.value} .*float64.*lose data"
        ):
            model.predict(inputs)

    def test_wrong_shape_names_tensor_expected_and_actual(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        spec = model.schema.inputs[0]
        inputs = _inputs(model, 3)
        bad = np.concatenate([inputs[spec.name], inputs[spec.name][..., :1]], axis=-1)
        if spec.matches_shape(bad.shape):  # no fixed dimension (texts, shape [-1]): an extra axis is wrong
            bad = np.stack([inputs[spec.name]] * 2, axis=-1)
        inputs[spec.name] = bad
        expected = f"input '{spec.name}': expected {spec.dtype.value} shape [{', '.join(map(str, spec.shape))}], got "
        with pytest.raises(SchemaError) as info:
            model.predict(inputs)
        assert str(info.value).startswith(expected), str(info.value)
        assert f"shape [{', '.join(map(str, bad.shape))}]" in str(info.value)
        assert info.value.tensor == spec.name
        wrong_rank = bad[0]
        inputs[spec.name] = wrong_rank if not spec.matches_shape(wrong_rank.shape) else np.asarray(wrong_rank[0])
        with pytest.raises(SchemaError, match=rf"input '{spec.name}'.*got .* shape \["):
            model.predict(inputs)

    def test_missing_and_extra_inputs(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        inputs = _inputs(model, 2)
        first = model.schema.inputs[0]
        missing = {k: v for k, v in inputs.items() if k != first.name}
        with pytest.raises(SchemaError, match=rf"missing input '{first.name}' \(expected {first.dtype.value} "):
            model.predict(missing)
        with pytest.raises(SchemaError, match=r"unexpected input 'surplus'"):
            model.predict({**inputs, "surplus": np.zeros(1)})

    # -- packages ------------------------------------------------------------------------------------

    def test_save_load_round_trip(self, case_model: tuple[Case, Model], tmp_path: Path) -> None:
        case, model = case_model
        inputs = _inputs(model, 6, seed=2)
        path = model.save(tmp_path / "pkg")
        loaded = Model.load(path, trust_code=case.trust_code)
        assert loaded.schema == model.schema
        assert loaded.backend_name == model.backend_name
        _assert_same(loaded.predict(inputs), model.predict(inputs))
        # The reloaded model answers other batch sizes too (dynamic axes survive saving).
        assert loaded.predict(_inputs(model, 3))[model.schema.output_names[0]].shape[0] == 3

    def test_tampered_package_is_refused(self, case_model: tuple[Case, Model], tmp_path: Path) -> None:
        case, model = case_model
        path = model.save(tmp_path / "pkg")
        # The loadable artifact (listed first); a composed model's may sit in a sub-directory.
        artifact = path / read_manifest(path).artifacts[0].path
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match="checksum"):
            Model.load(path, trust_code=case.trust_code)

    # -- other ways of calling -------------------------------------------------------------------------

    def test_predict_batch_equals_predict(self, case_model: tuple[Case, Model]) -> None:
        case, model = case_model
        inputs = _inputs(model, 23, seed=3)
        _assert_same(model.predict_batch(inputs, batch_size=5, progress=False), model.predict(inputs), case.tolerance)

    def test_apredict_equals_predict(self, case_model: tuple[Case, Model]) -> None:
        _, model = case_model
        inputs = _inputs(model, 4, seed=4)

        async def both() -> list[Arrays]:
            return list(await asyncio.gather(model.apredict(inputs), model.apredict(inputs)))

        for out in asyncio.run(both()):
            _assert_same(out, model.predict(inputs))

    def test_concurrent_predict_is_thread_safe(self, case_model: tuple[Case, Model]) -> None:
        case, model = case_model
        batches = [_inputs(model, 3, seed=s) for s in range(8)]
        expected = [model.predict(b) for b in batches]

        def worker(i: int) -> None:
            for _ in range(25):
                _assert_same(model.predict(batches[i]), expected[i], case.tolerance)

        run_in_threads(worker, 8)
