"""Malicious model stores: a remote library decides nothing about the client's disk.

memory:// stands for any fsspec store an attacker controls (same code path as S3); the S3 cases
run on a real S3-compatible server (moto) on loopback.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import models
import pytest

from aimass import Model
from aimass.errors import IntegrityError, StoreError
from aimass.package import MANIFEST, MAX_MANIFEST_BYTES
from aimass.store import FsspecDriver, Store
from aimass.store.drivers import CLAIM, is_conflict

pytest.importorskip("fsspec")


@pytest.fixture
def published(tmp_path: Path) -> tuple[Store, Any, str]:
    """A memory:// library holding one published onnx version, its filesystem and base path."""
    lib = Store(f"memory://lib-{uuid.uuid4().hex}", cache_dir=tmp_path / "cache")
    lib.publish(Model.load(models.onnx_mlp(tmp_path / "m.onnx")), "fraud")
    driver = lib.driver  # the test plays the attacker who owns the storage
    assert isinstance(driver, FsspecDriver)
    return lib, driver.fs, driver.base


def _edit_manifest(fs: Any, base: str, edit: Any) -> None:
    path = f"{base}/fraud/1/{MANIFEST}"
    doc = json.loads(fs.cat_file(path))
    edit(doc)
    fs.pipe_file(path, json.dumps(doc).encode())


def _leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir()] if cache.is_dir() else []


@pytest.mark.parametrize("name", ["../../pwned.txt", "../../../pwned.txt", "ABSOLUTE", "a/../../pwned.txt"])
def test_a_remote_manifest_cannot_write_outside_the_cache(
    published: tuple[Store, Any, str], tmp_path: Path, name: str
) -> None:
    lib, fs, base = published
    if name == "ABSOLUTE":
        name = str(tmp_path / "pwned-absolute.txt")
    payload = b"written by the store"
    fs.pipe_file(f"{base}/fraud/1/{name}", payload)

    def edit(doc: dict[str, Any]) -> None:
        doc["artifacts"].append({"path": name, "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)})

    _edit_manifest(fs, base, edit)
    with pytest.raises(IntegrityError) as refused:
        lib.load("fraud", 1)
    assert not list(tmp_path.rglob("pwned*"))  # nothing written anywhere
    assert _leftovers(tmp_path / "cache") == []  # nothing entered (or stayed in) the cache
    assert "plain relative path" in str(refused.value)


def test_an_artifact_larger_than_declared_is_cut_off(published: tuple[Store, Any, str], tmp_path: Path) -> None:
    lib, fs, base = published
    fs.pipe_file(f"{base}/fraud/1/model.onnx", b"\0" * (4 << 20))  # swapped for 4 MiB after publish
    with pytest.raises(IntegrityError, match="larger than its manifest"):
        lib.load("fraud", 1)
    assert _leftovers(tmp_path / "cache") == []


def test_a_substituted_artifact_never_enters_the_cache(published: tuple[Store, Any, str], tmp_path: Path) -> None:
    lib, fs, base = published
    good = fs.cat_file(f"{base}/fraud/1/model.onnx")
    fs.pipe_file(f"{base}/fraud/1/model.onnx", bytes(reversed(good)))  # same size, other bytes
    with pytest.raises(IntegrityError, match="checksum"):
        lib.load("fraud", 1)
    assert _leftovers(tmp_path / "cache") == []


def test_an_oversized_remote_manifest_is_refused(published: tuple[Store, Any, str]) -> None:
    lib, fs, base = published
    fs.pipe_file(f"{base}/fraud/1/{MANIFEST}", b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(IntegrityError, match="larger than"):
        lib.load("fraud", 1)


@pytest.mark.parametrize(
    "aliases",
    [
        {"production": {"1": "x"}},
        {"production": {"1": -1.0}},
        {"production": {"../1": 1.0}},
        {"production": []},
        {"../../x": {"1": 1.0}},
        [],
    ],
)
def test_malformed_aliases_are_refused(published: tuple[Store, Any, str], aliases: Any) -> None:
    lib, fs, base = published
    fs.pipe_file(f"{base}/fraud/aliases.json", json.dumps({"aliases": aliases}).encode())
    with pytest.raises(StoreError):
        lib.resolve("fraud", "production")


def test_gc_removes_what_dead_publishers_left_and_keeps_their_claims(published: tuple[Store, Any, str]) -> None:
    lib, fs, base = published
    old = json.dumps({"pid": 1, "host": "h", "time": time.time() - 7200}).encode()
    fs.pipe_file(f"{base}/fraud/2/{CLAIM}", old)
    fs.pipe_file(f"{base}/fraud/2/model.onnx", b"half uploaded")
    fresh = json.dumps({"pid": 2, "host": "h", "time": time.time()}).encode()
    fs.pipe_file(f"{base}/fraud/3/{CLAIM}", fresh)
    fs.pipe_file(f"{base}/fraud/3/model.onnx", b"uploading now")
    assert lib.gc(max_age=3600) == ["fraud/2"]
    assert not fs.exists(f"{base}/fraud/2/model.onnx") and fs.exists(f"{base}/fraud/2/{CLAIM}")
    assert fs.exists(f"{base}/fraud/3/model.onnx")  # a live publisher is left alone
    assert lib.versions("fraud") == [1]
    assert lib.publish(Model.load(lib.path("fraud", 1)), "fraud") == 4  # numbers are never reused


def test_claim_conflicts_are_decided_by_error_code_not_by_message_text() -> None:
    botocore = pytest.importorskip("botocore.exceptions")

    def client_error(code: str, status: int) -> Exception:
        return botocore.ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Put")

    assert is_conflict(FileExistsError("exists"))
    wrapped = OSError("conditional write failed")
    wrapped.__cause__ = client_error("PreconditionFailed", 412)
    assert is_conflict(wrapped)
    assert is_conflict(client_error("ConditionalRequestConflict", 409))
    # Messages that merely mention 412 (a request id, a byte count) are not conflicts.
    assert not is_conflict(OSError("InternalError: request 4127 failed"))
    assert not is_conflict(OSError("PreconditionFailed mentioned in text only"))
    throttled = OSError("slow down")
    throttled.__cause__ = client_error("SlowDown", 503)
    assert not is_conflict(throttled)
