"""Distributed batch prediction on Ray Data: datasets larger than one batch, from numpy, CSV and
Parquet, on a pool of actors that each load the model once; results equal local predict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aimass import Model, SchemaError
from aimass.scale import batch_predict

pytestmark = pytest.mark.ray

ROWS = 3000  # several batches of 512 and several blocks


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((ROWS, 4)).astype(np.float32)


def test_numpy_rows_on_two_actors_match_local_predict(ray_cluster: Any, mlp: Model, rows: np.ndarray) -> None:
    ds = batch_predict(mlp, rows, batch_size=512, actors=2, num_cpus=0.5, progress=False)
    frame = ds.to_pandas()
    assert len(frame) == ROWS
    np.testing.assert_array_equal(np.stack(frame["data"].to_numpy()), rows)  # order preserved
    np.testing.assert_allclose(np.stack(frame["y"].to_numpy()), mlp.predict(rows)["y"], rtol=1e-6, atol=1e-6)


def test_csv_columns_to_parquet_via_predict_dataset(
    ray_cluster: Any, mlp: Model, rows: np.ndarray, scale_tmp: Path
) -> None:
    import pandas as pd
    import pyarrow.parquet as pq

    csv = scale_tmp / "rows.csv"
    frame = pd.DataFrame(rows, columns=["f0", "f1", "f2", "f3"]).assign(id=np.arange(ROWS))
    frame.to_csv(csv, index=False)
    out = mlp.predict_dataset(
        str(csv),
        scale_tmp / "pred",
        batch_size=700,
        actors=(1, 2),
        num_cpus=0.5,
        columns={"x": ["f0", "f1", "f2", "f3"]},
        keep_columns=["id"],
    )
    table = pq.read_table(out).to_pandas().sort_values("id")
    assert table.columns.tolist() == ["id", "y"]
    assert table["id"].tolist() == list(range(ROWS))
    np.testing.assert_allclose(np.stack(table["y"].to_numpy()), mlp.predict(rows)["y"], rtol=1e-5, atol=1e-5)


def test_parquet_tensor_column_by_input_name(ray_cluster: Any, mlp: Model, rows: np.ndarray, scale_tmp: Path) -> None:
    import ray.data

    src = scale_tmp / "x.parquet"
    ray.data.from_numpy(rows).rename_columns({"data": "x"}).write_parquet(str(src))
    package = mlp.save(scale_tmp / "mlp-pkg")  # a package path: actors load it from bytes, checksums verified
    ds = batch_predict(package, src, batch_size=1024, keep_columns=False, num_cpus=0.5, progress=False)
    frame = ds.to_pandas()
    assert frame.columns.tolist() == ["y"]
    np.testing.assert_allclose(np.stack(frame["y"].to_numpy()), mlp.predict(rows)["y"], rtol=1e-5, atol=1e-5)


def test_bad_columns_are_a_schema_error(ray_cluster: Any, mlp: Model, rows: np.ndarray) -> None:
    with pytest.raises(SchemaError, match=r"input 'x': columns \['nope'\] are not in the data"):
        batch_predict(mlp, rows[:10], columns={"x": ["nope"]}, progress=False, num_cpus=0.5)
    with pytest.raises(SchemaError, match="input 'x'") as info:
        batch_predict(mlp, rows[:10, :3], progress=False, num_cpus=0.5)
    assert info.value.tensor == "x"
    with pytest.raises(SchemaError, match=r"keep_columns \['id'\] are not in the data"):
        batch_predict(mlp, rows[:10], keep_columns=["id"], progress=False, num_cpus=0.5)
