"""The model library on S3: a real S3-compatible server (moto's server mode) on loopback, through s3fs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import models
import numpy as np
import pytest
import serving
from publishers import kill_when, start_publisher

from aimass import Model
from aimass.errors import GateFailed, IntegrityError, ModelNotFound
from aimass.store import FsspecDriver, Store
from aimass.testing import run_in_threads

pytestmark = pytest.mark.slow

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = serving.free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def options(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # Credentials are dummies that moto accepts; nothing leaves the machine.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": endpoint}}


_COUNTER = iter(range(1_000_000))


@pytest.fixture
def lib(options: dict[str, Any], tmp_path: Path) -> Store:
    import s3fs

    bucket = f"models-{next(_COUNTER)}"
    s3fs.S3FileSystem(**options).mkdir(bucket)
    return Store(f"s3://{bucket}/lib", storage_options=options, cache_dir=tmp_path / "cache")


def remote(lib: Store) -> FsspecDriver:
    """The library's storage, which these tests read and damage directly."""
    driver = lib.driver
    assert isinstance(driver, FsspecDriver)
    return driver


@pytest.fixture(scope="module")
def clf() -> Model:
    return Model.load(models.xgb_classifier(5))


def test_publish_alias_and_load_through_the_cache(lib: Store, clf: Model, tmp_path: Path) -> None:
    x, _ = models.dataset(8)
    assert lib.publish(clf, "fraud", metrics={"accuracy": 0.95}) == 1
    assert lib.publish(clf, "fraud", metrics={"accuracy": 0.5}) == 2
    assert lib.versions("fraud") == [1, 2] and lib.names() == ["fraud"]
    lib.set_alias("fraud", "production", 1, gate={"accuracy": ">=0.9"})
    with pytest.raises(GateFailed):
        lib.set_alias("fraud", "production", 2, gate={"accuracy": ">=0.9"})
    m = lib.load("fraud", "production")
    np.testing.assert_array_equal(m.predict(x)["probabilities"], clf.predict(x)["probabilities"])
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and len(cached[0].name) == 64  # keyed by the manifest's sha256
    assert lib.path("fraud", 1) == cached[0]  # a second fetch reuses the cache
    assert lib.info("fraud", 1).aliases == {"production": 1.0}


def test_half_uploaded_version_is_invisible_and_skipped(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud")
    fs, base = remote(lib).fs, remote(lib).base
    # What a publisher killed mid-upload leaves: a claim and some artifacts, no manifest.
    fs.pipe_file(f"{base}/fraud/2/.claim", b"{}")
    fs.pipe_file(f"{base}/fraud/2/model.ubj", b"partial")
    assert lib.versions("fraud") == [1]
    with pytest.raises(ModelNotFound):
        lib.load("fraud", 2)
    assert lib.publish(clf, "fraud") == 3


def test_exclusive_claims_give_concurrent_publishers_distinct_versions(lib: Store, clf: Model) -> None:
    got: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        v = Store(lib.root, storage_options=remote(lib).fs.storage_options).publish(clf, "fraud")
        with lock:
            got.append(v)

    run_in_threads(one, 4)
    assert sorted(got) == [1, 2, 3, 4]
    fs, base = remote(lib).fs, remote(lib).base
    with pytest.raises(FileExistsError):  # the server refuses a second claim of a number (If-None-Match)
        fs.pipe_file(f"{base}/fraud/4/.claim", b"{}", mode="create")


def test_tampered_remote_artifact_is_refused(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud")
    fs, base = remote(lib).fs, remote(lib).base
    data = bytearray(fs.cat_file(f"{base}/fraud/1/model.ubj"))
    data[100] ^= 0xFF
    fs.pipe_file(f"{base}/fraud/1/model.ubj", bytes(data))
    with pytest.raises(IntegrityError):
        lib.load("fraud", 1)
    assert not any(p.name[:1] != "." for p in remote(lib).cache.iterdir())  # nothing corrupt was cached


def test_remove_never_reuses_numbers(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud")
    lib.publish(clf, "fraud")
    lib.remove("fraud", 2)
    assert lib.versions("fraud") == [1]
    assert lib.publish(clf, "fraud") == 3


# Many artifacts, so that the upload takes seconds.
_MANY_FILES_SAVE = """
names = [f"shard-{i:04d}.bin" for i in range(2000)]
for n in names:
    (directory / n).write_bytes(n.encode() * 64)
return names
"""
_S3_STORE = (
    'Store(sys.argv[1], storage_options={"key": "testing", "secret": "testing", '
    '"client_kwargs": {"endpoint_url": sys.argv[2]}})'
)


def test_publisher_killed_mid_upload_leaves_no_visible_version(
    lib: Store, clf: Model, endpoint: str, tmp_path: Path
) -> None:
    lib.publish(clf, "fraud")
    fs, base = remote(lib).fs, remote(lib).base
    proc = start_publisher(tmp_path, "many", _MANY_FILES_SAVE, _S3_STORE, lib.root, endpoint)

    def uploading() -> bool:  # it has claimed version 2 and uploaded a few shards
        return len(fs.ls(f"{base}/fraud/2", refresh=True) if fs.exists(f"{base}/fraud/2") else []) > 5

    kill_when(proc, uploading, timeout=120)
    assert not fs.exists(f"{base}/fraud/2/aimass.json")
    assert lib.versions("fraud") == [1]
    with pytest.raises(ModelNotFound):
        lib.load("fraud", 2)
    assert lib.publish(clf, "fraud") == 3  # the dead claim keeps its number


def test_a_malicious_s3_manifest_cannot_write_outside_the_cache(lib: Store, clf: Model, tmp_path: Path) -> None:
    import hashlib
    import json

    lib.publish(clf, "fraud")
    fs, base = remote(lib).fs, remote(lib).base
    payload = b"written by the store"
    fs.pipe_file(f"{base}/fraud/1/x/../../../../pwned.txt", payload)
    doc = json.loads(fs.cat_file(f"{base}/fraud/1/aimass.json"))
    doc["artifacts"].append(
        {"path": "x/../../../../pwned.txt", "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    )
    fs.pipe_file(f"{base}/fraud/1/aimass.json", json.dumps(doc).encode())
    with pytest.raises(IntegrityError):
        lib.load("fraud", 1)
    assert not list(tmp_path.rglob("pwned*"))  # nothing written outside the cache
    assert not (tmp_path / "cache").is_dir() or not list((tmp_path / "cache").iterdir())


def test_gc_on_s3_removes_dead_uploads_and_keeps_the_claim(lib: Store, clf: Model) -> None:
    import json
    import time

    lib.publish(clf, "fraud")
    fs, base = remote(lib).fs, remote(lib).base
    fs.pipe_file(f"{base}/fraud/2/.claim", json.dumps({"time": time.time() - 7200}).encode())
    fs.pipe_file(f"{base}/fraud/2/model.json", b"half")
    assert lib.gc(max_age=3600) == ["fraud/2"]
    fs.invalidate_cache()
    assert not fs.exists(f"{base}/fraud/2/model.json") and fs.exists(f"{base}/fraud/2/.claim")
    assert lib.publish(clf, "fraud") == 3
