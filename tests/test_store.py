"""The model library on a local directory: versions, references, aliases, gates, canaries, atomicity."""

from __future__ import annotations

import random
from pathlib import Path

import models
import numpy as np
import pytest
from publishers import kill_when, start_publisher

from aimass import Model, store
from aimass.errors import GateFailed, IntegrityError, ModelNotFound, StoreError, UnsupportedOperation
from aimass.store import Driver, FsspecDriver, LocalDriver, Ref, Store, parse_ref, pick_version, to_ref
from aimass.testing import run_in_threads


@pytest.fixture(scope="module")
def clf() -> Model:
    return Model.load(models.xgb_classifier(5))


@pytest.fixture(scope="module")
def clf2() -> Model:
    return Model.load(models.xgb_classifier(15))


@pytest.fixture
def lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("AIMASS_STORE", str(tmp_path / "lib"))
    monkeypatch.setenv("AIMASS_CACHE", str(tmp_path / "cache"))
    return Store()


def test_publish_assigns_versions_and_round_trips(lib: Store, clf: Model, clf2: Model) -> None:
    x, _ = models.dataset(16)
    assert lib.publish(clf, "fraud", metrics={"accuracy": 0.9}, tags={"owner": "risk"}) == 1
    assert lib.publish(clf2, "fraud") == 2
    assert lib.versions("fraud") == [1, 2] and lib.names() == ["fraud"]
    # Triton-like layout: <root>/<name>/<version>/ holding a package
    assert (Path(lib.root) / "fraud" / "1" / "aimass.json").is_file()
    loaded = lib.load("fraud", 1)
    np.testing.assert_array_equal(loaded.predict(x)["probabilities"], clf.predict(x)["probabilities"])
    assert loaded.metadata["store"]["version"] == 1 and loaded.metadata["store"]["metrics"] == {"accuracy": 0.9}
    info = lib.info("fraud", 1)
    assert info.tags == {"owner": "risk"} and info.backend == "xgboost" and info.size > 0
    assert lib.resolve("fraud") == 2  # latest


def test_publish_loads_a_framework_object(lib: Store) -> None:
    """docs/library.md publishes a fitted XGBClassifier itself: it is loaded as Model.load would."""
    raw = models.xgb_classifier(3)
    v = lib.publish(raw, "raw")
    x = models.dataset(8)[0]
    np.testing.assert_allclose(lib.load("raw", v).predict(x)["probabilities"], raw.predict_proba(x), rtol=1e-6)


def test_publish_keeps_the_example_the_model_was_loaded_with(lib: Store, tmp_path: Path) -> None:
    x, _ = models.dataset(4)
    with_example = Model.load(models.xgb_classifier(5), example_input=x)
    lib.publish(with_example, "fraud")
    loaded = lib.load("fraud", 1)
    assert loaded.example is not None  # convert/compress checks of the published model use it
    np.testing.assert_array_equal(next(iter(loaded.example.values())), x)


def test_model_load_resolves_store_references(
    lib: Store, clf: Model, clf2: Model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _ = models.dataset(8)
    lib.publish(clf, "fraud")
    lib.publish(clf2, "fraud")
    lib.set_alias("fraud", "production", 1)
    want1, want2 = clf.predict(x)["probabilities"], clf2.predict(x)["probabilities"]
    for ref, want in [
        ("store://fraud@production", want1),
        ("store://fraud/2", want2),
        ("store://fraud", want2),
        ("fraud:1", want1),
        ("fraud:production", want1),
    ]:
        np.testing.assert_array_equal(Model.load(ref).predict(x)["probabilities"], want, err_msg=ref)
    with pytest.raises(ModelNotFound):
        Model.load("fraud:7")
    with pytest.raises(ModelNotFound):
        Model.load("store://fraud@staging")
    # A "name:version" string that is an existing path stays a path.
    monkeypatch.chdir(tmp_path)
    clf2.save(tmp_path / "fraud:1")
    np.testing.assert_array_equal(Model.load("fraud:1").predict(x)["probabilities"], want2)


@pytest.mark.parametrize("bad", ["../evil", "/abs", "a/b", "", ".hidden", "..", "a..b", "x" * 200, "a b"])
def test_names_are_validated(lib: Store, clf: Model, bad: str) -> None:
    with pytest.raises(StoreError, match="invalid model name"):
        lib.publish(clf, bad)
    assert not any(Path(lib.root).parent.glob("evil*"))


@pytest.mark.parametrize("bad", ["3", "latest", "../x", "-a", "a/b"])
def test_aliases_are_validated(lib: Store, clf: Model, bad: str) -> None:
    lib.publish(clf, "fraud")
    with pytest.raises(StoreError, match="invalid alias"):
        lib.set_alias("fraud", bad, 1)


def test_parse_ref() -> None:
    assert parse_ref("store://a@prod").alias == "prod"  # type: ignore[union-attr]
    assert parse_ref("store://a/4").version == 4  # type: ignore[union-attr]
    assert parse_ref("a:4").version == 4  # type: ignore[union-attr]
    for other in ("model.onnx", "s3://bucket/x", "http://h:8000/v2/models/a", "C:/x/y.onnx"):
        assert parse_ref(other) is None
    with pytest.raises(StoreError):
        parse_ref("store://../x")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("fraud", Ref("fraud")),
        ("fraud:latest", Ref("fraud")),
        ("fraud:3", Ref("fraud", version=3)),
        ("fraud@3", Ref("fraud", version=3)),
        ("fraud:production", Ref("fraud", alias="production")),
        ("fraud@production", Ref("fraud", alias="production")),
        ("store://fraud", Ref("fraud")),
        ("store://fraud/3", Ref("fraud", version=3)),
        ("store://fraud@production", Ref("fraud", alias="production")),
    ],
)
def test_one_reference_grammar(text: str, want: Ref) -> None:
    assert to_ref(text) == want
    if ":" in text:
        assert parse_ref(text) == want  # what Model.load recognises means the same


@pytest.mark.parametrize("bad", ["fraud/3", "../x", "a/b:3", "", "store://../x", "store://a/b/c"])
def test_malformed_references_are_refused_alike(lib: Store, clf: Model, bad: str) -> None:
    lib.publish(clf, "fraud")
    with pytest.raises(StoreError, match="invalid") as by_grammar:
        to_ref(bad)
    with pytest.raises(StoreError) as by_library:
        store.load(bad)  # the default library (the fixture's $AIMASS_STORE)
    assert str(by_library.value) == str(by_grammar.value)


def test_load_names_the_model_and_records_where_it_came_from(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud", tags={"owner": "risk"})
    lib.set_alias("fraud", "production", 1)
    m = lib.load("fraud", "production")
    assert m.name == "fraud"
    assert m.metadata["store"] | {"published": None} == {
        "metrics": {},
        "tags": {"owner": "risk"},
        "published": None,
        "name": "fraud",
        "version": 1,
        "root": lib.root,
        "alias": "production",
    }
    assert "alias" not in store.load("fraud:1").metadata["store"]


def test_drivers_declare_one_interface(lib: Store) -> None:
    assert isinstance(lib.driver, LocalDriver) and lib.root == lib.driver.location
    # Every built-in driver collects leftovers; the interface's default refuses instead of doing nothing.
    for driver in (LocalDriver, FsspecDriver):
        assert issubclass(driver, Driver) and driver.gc is not Driver.gc

    class NoGc(LocalDriver):
        gc = Driver.gc

    with pytest.raises(UnsupportedOperation, match="cannot collect"):
        Store(NoGc(Path(lib.root))).gc()


def test_checksums_are_verified_on_load(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud")
    artifact = Path(lib.root) / "fraud" / "1" / "model.ubj"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="checksum"):
        lib.load("fraud", 1)


def test_gate_refuses_to_move_an_alias(lib: Store, clf: Model) -> None:
    good = lib.publish(clf, "fraud", metrics={"accuracy": 0.95})
    bad = lib.publish(clf, "fraud", metrics={"accuracy": 0.7})
    lib.set_alias("fraud", "production", good, gate={"accuracy": ">=0.9"})
    with pytest.raises(GateFailed, match="accuracy 0.7 is not >= 0.9") as info:
        lib.set_alias("fraud", "production", bad, gate={"accuracy": ">=0.9"})
    assert info.value.failures == ["accuracy 0.7 is not >= 0.9"]
    assert lib.alias("fraud", "production") == {good: 1.0}
    # A stored gate applies to every later move, and to publish(alias=...)
    lib.set_gate("fraud", "production", {"accuracy": ">=0.9"})
    with pytest.raises(GateFailed):
        lib.set_alias("fraud", "production", bad)
    with pytest.raises(GateFailed):
        lib.set_alias("fraud", "production", {good: 0.9, bad: 0.1})  # a canary of a failing version too
    with pytest.raises(GateFailed):
        lib.publish(clf, "fraud", metrics={"accuracy": 0.5}, alias="production")
    with pytest.raises(GateFailed, match="f1 was not recorded"):
        lib.publish(clf, "fraud", metrics={"accuracy": 0.99}, gate={"f1": ">0.5"})
    assert lib.versions("fraud") == [good, bad]  # refused publishes wrote nothing
    v = lib.publish(clf, "fraud", metrics={"accuracy": 0.99}, alias="production")
    assert lib.alias("fraud", "production") == {v: 1.0}


def test_canary_alias_splits_by_weight(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud")
    lib.publish(clf, "fraud")
    lib.set_alias("fraud", "production", {1: 0.9, 2: 0.1})
    assert lib.alias("fraud", "production") == {1: 0.9, 2: 0.1}
    rng = random.Random(0)
    draws = [lib.resolve("fraud", "production", rng=rng) for _ in range(400)]
    share = draws.count(2) / len(draws)
    assert 0.05 < share < 0.16
    assert lib.info("fraud", 2).aliases == {"production": pytest.approx(0.1)}
    counts = {3: 0, 4: 0}
    rng = random.Random(1)
    for _ in range(10_000):
        counts[pick_version({3: 0.9, 4: 0.1}, rng)] += 1
    assert 850 < counts[4] < 1150
    with pytest.raises(StoreError):
        lib.set_alias("fraud", "production", {1: 0.0})
    with pytest.raises(ModelNotFound):
        lib.set_alias("fraud", "production", {1: 0.5, 9: 0.5})


def test_remove_respects_aliases(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud")
    lib.publish(clf, "fraud")
    lib.set_alias("fraud", "production", 1)
    with pytest.raises(StoreError, match="used by aliases"):
        lib.remove("fraud", 1)
    lib.remove("fraud", 2)
    assert lib.versions("fraud") == [1]
    lib.remove("fraud", 1, force=True)
    assert lib.versions("fraud") == [] and lib.aliases("fraud") == {}
    assert lib.publish(clf, "fraud") == 3  # numbers are never reused, even after removals
    lib.remove("fraud", force=True)
    assert lib.names() == []


def test_concurrent_publishers_get_distinct_versions(lib: Store, clf: Model) -> None:
    got: list[int] = []
    run_in_threads(lambda i: got.append(Store(lib.root).publish(clf, "fraud")), 6)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert lib.versions("fraud") == [1, 2, 3, 4, 5, 6]


# Writes part of a large artifact, tells the test (the flag file), and stalls.
_SLOW_SAVE = """
with open(directory / "weights.bin", "wb") as f:
    f.write(b"\\0" * (8 << 20))
    f.flush()
    Path(sys.argv[2]).write_text("writing")
    time.sleep(120)
return ["weights.bin"]
"""


def test_killed_publisher_leaves_no_visible_version(lib: Store, clf: Model, tmp_path: Path) -> None:
    assert lib.publish(clf, "fraud") == 1
    flag = tmp_path / "flag"
    proc = start_publisher(tmp_path, "slow", _SLOW_SAVE, "Store(sys.argv[1])", lib.root, str(flag))
    kill_when(proc, flag.exists, timeout=60)
    leftovers = [p.name for p in (Path(lib.root) / "fraud").iterdir()]
    assert any(n.startswith(".") and "staging" in n for n in leftovers)  # the dead write is there, hidden
    assert lib.versions("fraud") == [1] and len(lib.listing()) == 1
    assert lib.publish(clf, "fraud") == 2  # the lock died with the process; numbering goes on
    Model.load("fraud:2")
    assert lib.gc(max_age=0)  # staging leftovers are collected
    assert not [p for p in (Path(lib.root) / "fraud").iterdir() if "staging" in p.name]


def test_listing_renders_as_text_html_and_json(lib: Store, clf: Model) -> None:
    lib.publish(clf, "fraud", metrics={"accuracy": 0.9})
    lib.set_alias("fraud", "production", 1)
    listing = lib.listing()
    text = str(listing)
    assert "fraud" in text and "production" in text and "accuracy=0.9" in text
    html = listing._repr_html_()
    assert html.startswith("<table>") and "<td>production</td>" in html
    assert '"version": 1' in listing.to_json()
    with pytest.raises(ModelNotFound):
        lib.listing("nope")


def test_reference_profile_is_recorded(lib: Store, clf: Model) -> None:
    x, _ = models.dataset(200)
    lib.publish(clf, "fraud", reference=x)
    m = lib.load("fraud")
    assert lib.info("fraud", 1).has_profile
    assert set(m.metadata["profile"]["features"]) == {"input[0]", "input[1]", "input[2]", "input[3]"}
