"""The model library API: :class:`Store` over a :class:`~aimass.store.drivers.Driver`, and the default library.

The module-level functions (:func:`publish`, :func:`set_alias`, :func:`load` ...) do what the
:class:`Store` methods do, on the library at ``$AIMASS_STORE`` (default ``~/.aimass/models``).

Example:
    >>> lib = Store("/tmp/models")                       # doctest: +SKIP
    >>> v = lib.publish(model, "fraud", metrics=result)  # doctest: +SKIP
    >>> lib.set_alias("fraud", "production", v)          # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimass.errors import IntegrityError, ModelNotFound, StoreError
from aimass.evaluate import Evaluation, require_gate
from aimass.files import parse_json
from aimass.package import MANIFEST, Manifest, parse_manifest
from aimass.store.drivers import Driver, open_driver
from aimass.store.listings import Listing, VersionInfo
from aimass.store.refs import Ref, check_alias, check_name, is_alias, pick_version, to_ref

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = [
    "ALIASES",
    "DEFAULT_CACHE",
    "DEFAULT_ROOT",
    "ENV_CACHE",
    "ENV_ROOT",
    "METADATA_KEY",
    "Store",
    "listing",
    "load",
    "publish",
    "pull",
    "remove",
    "remove_alias",
    "resolve",
    "set_alias",
    "set_gate",
    "show",
]

ENV_ROOT = "AIMASS_STORE"
ENV_CACHE = "AIMASS_CACHE"
DEFAULT_ROOT = "~/.aimass/models"
DEFAULT_CACHE = "~/.cache/aimass/store"
ALIASES = "aliases.json"
METADATA_KEY = "store"  # key of the manifest metadata the library writes at publish


class Store:
    """A model library rooted at a directory or an fsspec URL (or over any :class:`Driver`).

    Example:
        >>> lib = Store("/tmp/models")                       # doctest: +SKIP
        >>> v = lib.publish(model, "fraud", metrics=result)  # doctest: +SKIP
        >>> lib.set_alias("fraud", "production", v)          # doctest: +SKIP
        >>> lib.load("fraud", "production").predict(rows)    # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | Driver | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(root, Driver):
            self._driver = root
            return
        text = str(root if root is not None else os.environ.get(ENV_ROOT) or DEFAULT_ROOT)
        cache = Path(cache_dir or os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser()
        self._driver = open_driver(text, cache=cache, storage_options=storage_options)

    @property
    def driver(self) -> Driver:
        """The storage: a :class:`~aimass.store.drivers.LocalDriver` or :class:`~aimass.store.drivers.FsspecDriver`."""
        return self._driver

    @property
    def root(self) -> str:
        return self._driver.location

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- reading ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Model names that have at least one complete version."""
        return [n for n in self._driver.names() if any(self._driver.numbers(n).values())]

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, oldest first (empty when there are none)."""
        return sorted(v for v, complete in self._driver.numbers(check_name(name)).items() if complete)

    def _manifest(self, name: str, version: int) -> Manifest:
        raw = self._driver.read(name, f"{version}/{MANIFEST}")
        if raw is None:
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: {self.versions(name)}")
        return parse_manifest(raw, f"{name}/{version}")

    def _state(self, name: str) -> dict[str, Any]:
        raw = self._driver.read(name, ALIASES)
        if raw is None:
            return {"aliases": {}, "gates": {}}
        state = parse_json(raw, f"{name}/{ALIASES}", StoreError)
        if not isinstance(state, dict):
            raise StoreError(f"{name}/{ALIASES} is not a JSON object")
        state.setdefault("aliases", {})
        state.setdefault("gates", {})
        aliases, gates = state["aliases"], state["gates"]
        # Aliases steer which version loads: a malformed file is refused, never half-read.
        if not isinstance(aliases, dict) or not isinstance(gates, dict):
            raise StoreError(f"{name}/{ALIASES}: 'aliases' and 'gates' must be objects")
        for alias, targets in aliases.items():
            if not _valid_targets(alias, targets):
                raise StoreError(f"{name}/{ALIASES}: alias {alias!r} has malformed targets {targets!r}")
        for alias, gate in gates.items():
            # Gates decide whether an alias may move: checked here, so no reader trips on one later.
            if not (isinstance(gate, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in gate.items())):
                raise StoreError(
                    f"{name}/{ALIASES}: gate of alias {alias!r} must map metric names to conditions "
                    f"such as {{'accuracy': '>=0.9'}}, got {gate!r}"
                )
        return dict(state)

    def _write_state(self, name: str, state: Mapping[str, Any]) -> None:
        self._driver.write_atomic(name, ALIASES, json.dumps(state, indent=2).encode())

    def aliases(self, name: str) -> dict[str, dict[int, float]]:
        """Every alias of ``name`` -> ``{version: weight}`` (one entry of weight 1.0 unless a canary)."""
        state = self._state(check_name(name))
        return {a: {int(v): float(w) for v, w in t.items()} for a, t in state["aliases"].items()}

    def alias(self, name: str, alias: str) -> dict[int, float]:
        """The versions ``alias`` points at, with their weights: what a server splits traffic by.

        Example:
            >>> lib.alias("fraud", "production")   # doctest: +SKIP
            {3: 0.9, 4: 0.1}
        """
        aliases = self.aliases(name)
        if check_alias(alias) not in aliases:
            raise ModelNotFound(f"model {name!r} has no alias {alias!r}; aliases: {sorted(aliases)}")
        return aliases[alias]

    def gates(self, name: str) -> dict[str, dict[str, str]]:
        """Gates stored per alias of ``name``."""
        return dict(self._state(check_name(name))["gates"])

    def info(self, name: str, version: int) -> VersionInfo:
        """What is recorded about one version.

        A malformed ``aliases.json`` does not hide the version: its ``aliases`` are then empty and
        ``problem`` says why (:meth:`aliases` itself still refuses the file).
        """
        manifest = self._manifest(check_name(name), version)
        meta = manifest.metadata.get(METADATA_KEY) or {}
        if not (isinstance(meta, dict) and all(isinstance(meta.get(k) or {}, dict) for k in ("metrics", "tags"))):
            raise IntegrityError(
                f"{name}/{version}/{MANIFEST}: metadata.{METADATA_KEY} must hold 'metrics' and 'tags' objects"
            )
        aliases, problem = {}, None
        try:
            every = self.aliases(name)
        except StoreError as e:
            # A malformed aliases.json takes away this model's aliases, with the reason, and nothing else:
            # the version is still listed (and every other model with it).
            every, problem = {}, f"aliases unavailable: {e}"
        for alias, targets in every.items():
            if version in targets:
                aliases[alias] = targets[version] / sum(targets.values())
        return VersionInfo(
            name=name,
            version=version,
            created=manifest.created.isoformat(),
            backend=manifest.backend,
            framework=f"{manifest.framework} {manifest.framework_version or ''}".strip(),
            size=sum(a.size for a in manifest.artifacts),
            schema=str(manifest.model_schema),
            metrics=dict(meta.get("metrics") or {}),
            tags=dict(meta.get("tags") or {}),
            aliases=aliases,
            has_profile="profile" in manifest.metadata,
            problem=problem,
        )

    def listing(self, name: str | None = None) -> Listing:
        """One row per version (of ``name``, or of every model), for tables and notebooks."""
        names = [check_name(name)] if name else self.names()
        rows = [self.info(n, v).to_dict() for n in names for v in self.versions(n)]
        if name and not rows:
            raise ModelNotFound(f"no model named {name!r} in the library at {self.root}")
        return Listing(rows, detail=bool(name))

    def resolve(self, name: str, ref: int | str | None = None, *, rng: random.Random | None = None) -> int:
        """The version a reference means: a number, an alias (a canary draws by weight), or None = latest.

        Example:
            >>> lib.resolve("fraud", "production")   # doctest: +SKIP
            3
        """
        check_name(name)
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            version = int(ref)
            if version not in self.versions(name):
                raise ModelNotFound(f"model {name!r} has no version {version}; versions: {self.versions(name)}")
            return version
        if ref is None or ref == "latest":
            versions = self.versions(name)
            if not versions:
                raise ModelNotFound(f"no model named {name!r} in the library at {self.root}")
            return versions[-1]
        picked = pick_version(self.alias(name, ref), rng)
        if picked not in self.versions(name):  # aliases.json edited by hand, or the version removed under it
            raise ModelNotFound(
                f"alias {ref!r} of {name!r} ({name}/{ALIASES}) points at version {picked}, which does not exist; "
                f"versions: {self.versions(name)}"
            )
        return picked

    def path(self, name: str, ref: int | str | None = None) -> Path:
        """A local directory holding the package (downloaded into the cache for remote libraries)."""
        return self._driver.fetch(check_name(name), self.resolve(name, ref))

    pull = path

    def load(
        self,
        name: str,
        ref: int | str | None = None,
        *,
        device: str = "cpu",
        options: Mapping[str, Any] | None = None,
        trust_code: bool = False,
    ) -> Model:
        """Load a version as a Model (checksums verified), named ``name``; ``model.metadata["store"]`` says which.

        ``trust_code=True`` allows a version that holds Python code (a :class:`aimass.PythonModel`).

        Example:
            >>> m = lib.load("fraud", "production")   # doctest: +SKIP
            >>> m.name, m.metadata["store"]["version"], m.metadata["store"]["alias"]   # doctest: +SKIP
            ('fraud', 3, 'production')
        """
        from aimass.model import Model

        version = self.resolve(name, ref)
        loaded = Model.load(self._driver.fetch(name, version), device=device, options=options, trust_code=trust_code)
        record = dict(loaded.metadata.get(METADATA_KEY) or {})
        record.update({"name": name, "version": version, "root": self.root})
        if isinstance(ref, str) and not ref.isdigit():
            record["alias"] = ref
        metadata = {**loaded.metadata, METADATA_KEY: record}
        return Model(loaded.backend, name=name, metadata=metadata, report=loaded.report, example=loaded.example)

    # -- writing ---------------------------------------------------------------------------------

    def publish(
        self,
        model: Model | Any,
        name: str,
        *,
        metrics: Evaluation | Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        gate: Mapping[str, Any] | None = None,
        alias: str | None = None,
        reference: Any = None,
    ) -> int:
        """Publish ``model`` as the next version of ``name``; returns the version number.

        ``metrics`` (an :class:`~aimass.evaluate.Evaluation` or a mapping) and ``tags`` are stored
        with the version. ``gate`` refuses the publish when the metrics fail it. ``alias`` moves
        that alias to the new version (checked against the alias's stored gate). ``reference``
        (input rows) records the input profile that drift monitoring compares live traffic with.
        ``model`` is a :class:`~aimass.Model` or anything ``Model.load`` takes (loaded first).

        Example:
            >>> lib.publish(m, "fraud", metrics=evaluate(m, x, y), gate={"accuracy": ">=0.9"})  # doctest: +SKIP
            4
        """
        from aimass.model import Model

        check_name(name)
        if not isinstance(model, Model):  # a fitted estimator, as docs/library.md publishes one
            model = Model.load(model)
        recorded = _metrics_dict(metrics)
        require_gate(recorded, gate, what=f"new version of {name!r}")
        if alias is not None:
            check_alias(alias)
            require_gate(recorded, self.gates(name).get(alias), what=f"new version of {name!r} (alias {alias!r})")
        meta = {k: v for k, v in model.metadata.items() if k != METADATA_KEY}
        meta[METADATA_KEY] = {
            "metrics": recorded,
            "tags": {str(k): str(v) for k, v in (tags or {}).items()},
            "published": dt.datetime.now(dt.UTC).isoformat(),
        }
        if isinstance(metrics, Evaluation):
            meta[METADATA_KEY]["evaluation"] = {"task": metrics.task, "rows": metrics.rows}
        if reference is not None:
            from aimass.monitor import Profile

            meta["profile"] = Profile.from_data(model.schema, reference).to_dict()
        published = Model(model.backend, name=name, metadata=meta, report=model.report, example=model.example)
        version = self._driver.publish(name, published)
        if alias is not None:
            self.set_alias(name, alias, version)
        return version

    def set_alias(
        self, name: str, alias: str, target: int | Mapping[int, float], *, gate: Mapping[str, Any] | None = None
    ) -> None:
        """Point ``alias`` at a version, or split it by weight: ``{3: 0.9, 4: 0.1}`` (a canary).

        Every version it points at must pass ``gate`` and the gate stored for the alias
        (:meth:`set_gate`); otherwise :class:`~aimass.errors.GateFailed` and nothing changes.

        Example:
            >>> lib.set_alias("fraud", "production", {3: 0.9, 4: 0.1})   # doctest: +SKIP
        """
        check_name(name)
        check_alias(alias)
        weights = _weights(target)
        with self._driver.lock(name):
            state = self._state(name)
            known = self.versions(name)
            for version in weights:
                if version not in known:
                    raise ModelNotFound(f"model {name!r} has no version {version}; versions: {known}")
                recorded = self.info(name, version).metrics
                for g in (gate, state["gates"].get(alias)):
                    require_gate(recorded, g, what=f"{name!r} version {version} (alias {alias!r})")
            state["aliases"][alias] = {str(v): w for v, w in sorted(weights.items())}
            self._write_state(name, state)

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete an alias (ModelNotFound when it does not exist)."""
        with self._driver.lock(check_name(name)):
            state = self._state(name)
            if state["aliases"].pop(check_alias(alias), None) is None:
                raise ModelNotFound(f"model {name!r} has no alias {alias!r}")
            self._write_state(name, state)

    def set_gate(self, name: str, alias: str, gate: Mapping[str, Any] | None) -> None:
        """Store a gate for an alias (None removes it); later moves of the alias must pass it.

        Example:
            >>> lib.set_gate("fraud", "production", {"accuracy": ">=0.9"})   # doctest: +SKIP
        """
        from aimass.evaluate import parse_gate

        with self._driver.lock(check_name(name)):
            state = self._state(name)
            if gate:
                parse_gate(gate)  # refuse malformed conditions now, not at the next move
                state["gates"][check_alias(alias)] = {str(k): str(v) for k, v in gate.items()}
            else:
                state["gates"].pop(check_alias(alias), None)
            self._write_state(name, state)

    def remove(self, name: str, version: int | None = None, *, force: bool = False) -> None:
        """Delete one version (or the whole model); refused while an alias points at it unless ``force``."""
        check_name(name)
        with self._driver.lock(name):
            aliases = self.aliases(name)
            users = sorted(a for a, t in aliases.items() if version is None or version in t)
            if users and not force:
                what = "model" if version is None else f"version {version}"
                raise StoreError(
                    f"{name!r} {what} is used by aliases {users}: move them first, or remove it anyway "
                    "(aimass store rm --force; in Python, force=True)"
                )
            if version is not None and version not in self._driver.numbers(name):
                raise ModelNotFound(f"model {name!r} has no version {version}; versions: {self.versions(name)}")
            if version is not None and users:
                state = self._state(name)
                for alias in users:
                    targets = state["aliases"][alias]
                    targets.pop(str(version), None)
                    if not targets:
                        del state["aliases"][alias]
                self._write_state(name, state)
            self._driver.remove(name, version)

    def gc(self, max_age: float = 86400.0) -> list[str]:
        """Delete staging leftovers of publishers that died more than ``max_age`` seconds ago; what was removed.

        Raises :class:`~aimass.errors.UnsupportedOperation` when the driver cannot collect them.
        """
        return self._driver.gc(max_age)


def _valid_targets(alias: Any, targets: Any) -> bool:
    """Whether an ``aliases.json`` entry is a valid alias -> ``{"version": weight}`` with a positive total."""
    if not (is_alias(alias) and isinstance(targets, dict) and targets):
        return False
    weights = list(targets.values())
    if not all(isinstance(w, int | float) and math.isfinite(w) and w >= 0 for w in weights):
        return False
    return all(str(v).isdigit() for v in targets) and sum(weights) > 0


def _metrics_dict(metrics: Evaluation | Mapping[str, Any] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    items = metrics.metrics if isinstance(metrics, Evaluation) else metrics
    out = {}
    for k, v in items.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise StoreError(f"metric {k!r} must be a number, got {v!r}") from None
    return out


def _weights(target: int | Mapping[int, float]) -> dict[int, float]:
    if isinstance(target, bool):
        raise StoreError(f"alias target must be a version or {{version: weight}}, got {target!r}")
    if isinstance(target, (int, str)):
        return {int(target): 1.0}
    weights = {int(v): float(w) for v, w in target.items()}
    if not weights or any(w <= 0 for w in weights.values()):
        raise StoreError(f"alias weights must be positive and at least one, got {dict(target)}")
    return weights


# -- the default library (``$AIMASS_STORE`` or ~/.aimass/models) ------------------------------------


def publish(model: Model, name: str, **kwargs: Any) -> int:
    """:meth:`Store.publish` on the default library."""
    return Store().publish(model, name, **kwargs)


def set_alias(name: str, alias: str, target: int | Mapping[int, float], **kwargs: Any) -> None:
    """:meth:`Store.set_alias` on the default library."""
    Store().set_alias(name, alias, target, **kwargs)


def remove_alias(name: str, alias: str) -> None:
    """:meth:`Store.remove_alias` on the default library."""
    Store().remove_alias(name, alias)


def set_gate(name: str, alias: str, gate: Mapping[str, Any] | None) -> None:
    """:meth:`Store.set_gate` on the default library."""
    Store().set_gate(name, alias, gate)


def resolve(name: str, ref: int | str | None = None) -> int:
    """:meth:`Store.resolve` on the default library."""
    return Store().resolve(name, ref)


def load(
    ref: str | Ref, *, device: str = "cpu", options: Mapping[str, Any] | None = None, trust_code: bool = False
) -> Model:
    """Load ``"store://fraud@production"``, ``"fraud:3"``, ``"fraud"`` or a :class:`Ref` from the default library."""
    parsed = to_ref(ref) if isinstance(ref, str) else ref
    return Store().load(parsed.name, parsed.selector, device=device, options=options, trust_code=trust_code)


def pull(name: str, ref: int | str | None = None) -> Path:
    """:meth:`Store.path` on the default library."""
    return Store().path(name, ref)


def remove(name: str, version: int | None = None, *, force: bool = False) -> None:
    """:meth:`Store.remove` on the default library."""
    Store().remove(name, version, force=force)


def show(name: str, version: int | str | None = None) -> VersionInfo:
    """:meth:`Store.info` on the default library (``version`` may be an alias or None for latest)."""
    lib = Store()
    return lib.info(name, lib.resolve(name, version))


def listing(name: str | None = None) -> Listing:
    """:meth:`Store.listing` on the default library."""
    return Store().listing(name)
