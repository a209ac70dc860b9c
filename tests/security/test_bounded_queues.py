"""Payload logs and shadow traffic stay within their budgets under a flood (issue 24, items 6 and 10).

Before, the payload log queue was bounded in records only (24 requests of 16 MiB took the server
from 146 MiB to 4.8 GiB while its writer expanded the rows into Python lists), no file was ever
removed, and every mirrored request became one more shadow run (300 requests of 1 MiB left 280
pending). Now each holds a byte budget, drops what does not fit and counts it, and never makes a
request wait. The cases are deterministic: the writer waits a minute between flushes (``close``
ends the wait), and the shadow bound is hit by mirroring without yielding to the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import tracemalloc
from pathlib import Path

import httpx
import models
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from aimass import Model
from aimass.backends.remote import InProcessTransport
from aimass.protocol import v2
from aimass.server import create_app
from aimass.server.payload_log import PayloadLog, read_payloads
from aimass.server.shadow import ShadowRule
from aimass.store import Store

pytest.importorskip("pyarrow")  # payload logs write Parquet

MiB = 1 << 20
ROWS = 1 << 16  # rows of a 1 MiB request to the 4-feature MLP


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Model:
    return Model.load(models.onnx_mlp(tmp_path_factory.mktemp("bounded") / "mlp.onnx"))


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bounded-lib")
    lib = Store(root / "lib")
    lib.publish(Model.load(models.onnx_mlp(root / "a.onnx", seed=0)), "mlp", alias="production")  # 1
    lib.publish(Model.load(models.onnx_mlp(root / "b.onnx", seed=1)), "mlp")  # 2: the candidate
    return root / "lib"


def _rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


# -- payload logs ----------------------------------------------------------------------------------


def test_payload_flood_keeps_queued_bytes_within_the_budget(tmp_path: Path, mlp: Model) -> None:
    x = _rows(ROWS)
    record = x.nbytes + mlp.predict(x)["y"].nbytes  # what one logged request holds: 1 MiB in, 768 KiB out
    plog = PayloadLog(tmp_path / "logs", max_queue_bytes=4 * MiB, flush_seconds=60.0)
    app = create_app({"mlp": mlp}, log_payloads=plog, max_batch_size=0)
    seen = []
    with httpx.Client(transport=InProcessTransport(app), base_url="http://t") as client:
        for i in range(20):
            body, headers = v2.encode_request({"x": x}, request_id=f"r{i}")
            assert client.post("/v2/models/mlp/infer", content=body, headers=headers).status_code == 200
            seen.append(plog.queued_bytes)
    fits = 4 * MiB // record  # 2: the rest are dropped, not queued, and the requests were all answered
    assert max(seen) <= 4 * MiB and plog.queued_bytes == fits * record
    assert (plog.logged, plog.dropped, plog.dropped_bytes) == (fits, 20 - fits, (20 - fits) * record)
    metric = app.metrics.registry.get_sample_value
    assert metric("aimass_payload_log_dropped_total", {"reason": "bytes"}) == 20 - fits
    assert metric("aimass_payload_log_dropped_bytes_total", {"reason": "bytes"}) == (20 - fits) * record
    assert metric("aimass_payload_log_queued_bytes") == fits * record
    plog.close()
    assert plog.queued_bytes == 0 and metric("aimass_payload_log_queued_bytes") == 0
    logged = read_payloads(tmp_path / "logs", model="mlp")
    assert len(logged) == fits * ROWS and sorted(set(logged.request_ids)) == ["r0", "r1"]
    np.testing.assert_array_equal(logged.inputs["x"][logged.request_ids == "r1"], x)


def test_writer_builds_no_python_lists(tmp_path: Path) -> None:
    # A million narrow rows: each row used to cost a Python str, int and two floats in lists
    # (~40 MiB traced for these 12 MiB of tensors); now columns are built from arrays, in slices (~3 MiB).
    x = _rows(1 << 20)[:, :1].copy()
    y = np.arange(1 << 20, dtype=np.int64)
    plog = PayloadLog(tmp_path / "logs", flush_seconds=60.0)
    _warm_writer(tmp_path / "warm")  # pyarrow imports pandas on its first table: not the writer's cost
    tracemalloc.start()
    try:
        plog.log("m", "1", "big", {"x": x}, {"y": y}, 0.01)
        plog.close()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (x.nbytes + y.nbytes) // 2, f"writing {x.nbytes + y.nbytes} bytes traced {peak} bytes"
    logged = read_payloads(tmp_path / "logs", model="m")
    np.testing.assert_array_equal(logged.inputs["x"], x)
    np.testing.assert_array_equal(logged.outputs["y"], y)
    np.testing.assert_array_equal(logged.rows, np.arange(1 << 20))


def _warm_writer(root: Path) -> None:
    plog = PayloadLog(root)
    plog.log("m", "1", "warm", {"x": _rows(2)}, {"y": _rows(2)}, 0.01)
    plog.close()


def _completed(root: Path) -> list[Path]:
    return sorted(root.rglob("part-*.parquet"))


def _log_files(root: Path, stamps: list[str]) -> list[Path]:
    """One real log file per stamp, renamed as if written at that UTC time (oldest first)."""
    out: list[Path] = []
    for i, stamp in enumerate(stamps):
        plog = PayloadLog(root, max_bytes=0, max_age=0)
        plog.log("m", "1", f"old{i}", {"x": _rows(256, seed=i)}, {"y": np.zeros((256, 3), np.float32)}, 0.01)
        plog.close()
        (written,) = set(_completed(root)) - set(out)
        out.append(written.rename(written.with_name(f"part-{stamp}-00000.parquet")))
    return out


def test_disk_cap_removes_the_oldest_files(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    now = dt.datetime.now(dt.UTC)
    stamps = [(now - dt.timedelta(minutes=m)).strftime("%Y%m%dT%H%M%S") for m in (40, 30, 20, 10)]
    old = _log_files(logs, stamps)
    size = max(p.stat().st_size for p in old)
    plog = PayloadLog(logs, max_bytes=int(2.5 * size), max_age=0, flush_seconds=60.0)
    registry = CollectorRegistry()
    plog.bind_metrics(registry)
    plog.log("m", "1", "new", {"x": _rows(256, seed=9)}, {"y": np.zeros((256, 3), np.float32)}, 0.01)
    plog.close()
    kept = _completed(logs)
    # At start the two oldest went (4 files > 2.5 files); the new file then pushed out the third.
    assert [p for p in old if p.exists()] == old[3:] and len(kept) == 2
    assert sum(p.stat().st_size for p in kept) <= 2.5 * size
    assert plog.removed_files == 3
    assert registry.get_sample_value("aimass_payload_log_removed_files_total", {"reason": "max_bytes"}) == 3.0
    assert sorted(set(read_payloads(logs, model="m").request_ids)) == ["new", "old3"]


def test_retention_removes_files_older_than_max_age(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    now = dt.datetime.now(dt.UTC)
    stamps = [(now - dt.timedelta(hours=h)).strftime("%Y%m%dT%H%M%S") for h in (50, 25, 1)]
    old = _log_files(logs, stamps)
    notes = logs / "m" / "1" / "notes.txt"  # not a log file: never touched
    notes.write_text("kept")
    plog = PayloadLog(logs, max_bytes=0, max_age=24 * 3600.0)
    plog.close()
    assert [p.exists() for p in old] == [False, False, True] and notes.exists()
    assert plog.removed_files == 2 and plog.rotate_seconds <= 24 * 3600.0
    assert list(read_payloads(logs, model="m").request_ids[:1]) == ["old2"]


def test_defaults_bound_a_flood_without_settings(tmp_path: Path, mlp: Model, library: Path) -> None:
    from aimass.cli.options import ServerOptions

    settings = ServerOptions(log_payloads=str(tmp_path / "logs"), shadow=["mlp@production=2"]).settings()
    assert settings.log_max_queue_bytes == 256 * MiB and settings.log_max_bytes == 1 << 30
    assert settings.log_max_age == 7 * 86400.0
    assert settings.shadow_max_in_flight == 8 and settings.shadow_max_bytes == 128 * MiB
    assert ServerOptions(log_max_age="12h", log_max_bytes="0").settings().log_max_age == 12 * 3600.0
    app = create_app(repository=library, settings=settings)
    assert app.payload_log is not None and app.shadow is not None
    assert (app.payload_log.max_queue_bytes, app.payload_log.max_bytes) == (256 * MiB, 1 << 30)
    assert app.payload_log.max_age == 7 * 86400.0 and app.payload_log.rotate_bytes <= (1 << 30) // 4
    assert (app.shadow.max_in_flight, app.shadow.max_bytes) == (8, 128 * MiB)
    app.payload_log.close()
    with pytest.raises(ValueError, match="max_queue_bytes"):
        PayloadLog(tmp_path / "bad", max_queue_bytes=-1)


# -- shadow traffic --------------------------------------------------------------------------------


def test_shadow_runs_stay_at_the_bound_and_drops_are_counted(library: Path) -> None:
    rule = ShadowRule("mlp", "production", "2")
    app = create_app(repository=library, shadow=[rule], max_batch_size=0, shadow_max_in_flight=3)
    shadow = app.shadow
    assert shadow is not None
    x = _rows(1024)
    answer = Model.load(library / "mlp" / "1").predict(x)

    async def flood() -> list[bool]:
        # No await between the calls: no run can finish, so the bound alone decides.
        started = [shadow.mirror(rule, {"x": x}, answer, f"r{i}") for i in range(50)]
        assert shadow.in_flight == 3 and shadow.in_flight_bytes == 3 * (x.nbytes + answer["y"].nbytes)
        await shadow.drain()
        return started

    started = asyncio.run(flood())
    assert started == [True] * 3 + [False] * 47
    assert shadow.in_flight == 0 and shadow.in_flight_bytes == 0
    (report,) = shadow.report()
    assert (report["requests"], report["errors"], report["dropped"], report["rows"]) == (3, 0, 47, 3 * 1024)
    text = app.metrics.render()[0].decode()
    assert 'aimass_shadow_dropped_total{alias="production",candidate="2",model="mlp",reason="in_flight"} 47.0' in text
    assert "aimass_shadow_in_flight 0.0" in text


def test_shadow_byte_bound(library: Path) -> None:
    rule = ShadowRule("mlp", "production", "2")
    x = _rows(ROWS)
    answer = Model.load(library / "mlp" / "1").predict(x)
    held = x.nbytes + answer["y"].nbytes  # 1.75 MiB a run
    app = create_app(repository=library, shadow=[rule], max_batch_size=0, shadow_max_bytes=4 * MiB)
    shadow = app.shadow
    assert shadow is not None

    async def flood() -> list[bool]:
        started = [shadow.mirror(rule, {"x": x}, answer, None) for _ in range(10)]
        assert shadow.in_flight_bytes == 2 * held <= 4 * MiB
        await shadow.drain()
        return started

    assert asyncio.run(flood()) == [True, True] + [False] * 8
    text = app.metrics.render()[0].decode()
    assert 'model="mlp",reason="bytes"} 8.0' in text


def test_shadow_flood_over_http_never_exceeds_the_bound(library: Path) -> None:
    rule = ShadowRule("mlp", "production", "2")
    app = create_app(repository=library, shadow=[rule], max_batch_size=0, shadow_max_in_flight=2)
    shadow = app.shadow
    assert shadow is not None
    x = _rows(ROWS // 4)
    body, headers = v2.encode_request({"x": x})
    n = 48

    async def main() -> int:
        peak = 0
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def one() -> None:
                nonlocal peak
                r = await client.post("/v2/models/mlp/versions/production/infer", content=body, headers=headers)
                assert r.status_code == 200 and v2.decode_response(r.content).model_version == "1"
                peak = max(peak, shadow.in_flight)

            await asyncio.gather(*(one() for _ in range(n)))
            await shadow.drain()
        return peak

    peak = asyncio.run(main())
    (report,) = shadow.report()
    assert peak <= 2 and report["requests"] + report["dropped"] == n and report["errors"] == 0
    assert report["requests"] >= 1
