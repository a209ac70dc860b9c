"""The model library: named models with integer versions, aliases (canaries too), gates, local or S3.

Layout (the same as the server's model repository, so ``aimass serve <root>`` serves it)::

    <root>/<name>/<version>/      an aimass package (aimass.json + artifacts), version = 1, 2, ...
    <root>/<name>/aliases.json    {"aliases": {"production": {"3": 0.9, "4": 0.1}}, "gates": {...}}

The root is a directory (default ``~/.aimass/models``, or ``$AIMASS_STORE``) or an fsspec URL
such as ``s3://bucket/models`` (needs ``s3fs``). Guarantees, on both:

* a version is visible only once complete: locally it is written as a hidden staging package and
  renamed into place; on object stores its manifest is uploaded last and a version without one is
  not listed. A publisher killed half-way leaves nothing visible, and the next version number
  skips whatever the dead one claimed;
* concurrent publishers get distinct versions: a file lock (``filelock``) locally, an exclusive
  create (``If-None-Match: *``) of ``<version>/.claim`` on object stores;
* checksums are verified on every load (:func:`aimass.package.verify`); remote versions are
  downloaded once into a local cache keyed by the sha256 of their manifest (``$AIMASS_CACHE``);
* names and aliases are validated (no ``/``, no ``..``, no absolute paths).

An alias points at one version or splits traffic by weight (a canary): :meth:`Store.resolve`
picks a version by weight; a server honours the split per request with :meth:`Store.alias` and
:func:`pick_version`. A gate (``{"accuracy": ">=0.9"}``) stored for an alias, or passed when
moving it, refuses versions whose recorded metrics fail it (:class:`~aimass.errors.GateFailed`).

Example:
    >>> from aimass import Model, store
    >>> v = store.publish(model, "fraud", metrics={"accuracy": 0.97})      # doctest: +SKIP
    >>> store.set_alias("fraud", "production", v, gate={"accuracy": ">=0.9"})  # doctest: +SKIP
    >>> Model.load("store://fraud@production"); Model.load("fraud:1")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import html
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimass.dependencies import require
from aimass.errors import IntegrityError, ModelNotFound, StoreError
from aimass.evaluate import Evaluation, require_gate
from aimass.package import MANIFEST, MAX_MANIFEST_BYTES, Manifest, member, parse_manifest, verify

if TYPE_CHECKING:
    from aimass.model import Model

__all__ = [
    "ENV_CACHE",
    "ENV_ROOT",
    "Listing",
    "Ref",
    "Store",
    "VersionInfo",
    "listing",
    "load",
    "parse_ref",
    "pick_version",
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
CLAIM = ".claim"
LAST_VERSION = ".last-version"
METADATA_KEY = "store"  # key of the manifest metadata the library writes at publish

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")  # starts with a letter: never mistaken for a version
_SHORT_REF = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,127}):([A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")


def check_name(name: str) -> str:
    """Validate a model name: letters, digits, ``_ . -``, starting with a letter or digit (no paths).

    Example:
        >>> check_name("fraud-v2")
        'fraud-v2'
    """
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise StoreError(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit, "
            "no '..', at most 128 characters)"
        )
    return name


def check_alias(alias: str) -> str:
    """Validate an alias: a word starting with a letter (``production``, ``staging``, ``canary-1``)."""
    if not isinstance(alias, str) or not _ALIAS.match(alias) or ".." in alias or alias == "latest":
        raise StoreError(
            f"invalid alias {alias!r}: use a word starting with a letter (letters, digits, '_', '.', '-'); "
            "'latest' is reserved for the newest version"
        )
    return alias


# -- references ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference to a model in the library: a name plus a version, an alias, or neither (latest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.alias}" if self.alias else self.name


def _ref(name: str, selector: str | None) -> Ref:
    check_name(name)
    if selector is None or selector in ("", "latest"):
        return Ref(name)
    if selector.isdigit():
        return Ref(name, version=int(selector))
    return Ref(name, alias=check_alias(selector))


def parse_ref(source: str) -> Ref | None:
    """Parse ``store://name[@alias|/version]`` or ``name:version|alias``; None when not a store reference.

    A ``name:ref`` string that is an existing path stays a path.

    Example:
        >>> parse_ref("store://fraud@production"), parse_ref("fraud:3"), parse_ref("model.onnx")
        (Ref(name='fraud', version=None, alias='production'), Ref(name='fraud', version=3, alias=None), None)
    """
    if source.startswith("store://"):
        body = source[len("store://") :].rstrip("/")
        if "@" in body:
            name, _, selector = body.partition("@")
            return _ref(name, selector)
        name, _, selector = body.partition("/")
        return _ref(name, selector or None)
    match = _SHORT_REF.match(source)
    if match and not os.path.exists(source):
        return _ref(match.group(1), match.group(2))
    return None


def pick_version(weights: Mapping[int, float], rng: random.Random | None = None) -> int:
    """One version drawn by weight: ``{3: 0.9, 4: 0.1}`` gives 4 about one time in ten.

    Example:
        >>> pick_version({3: 1.0})
        3
    """
    versions = sorted(weights)
    if len(versions) == 1:
        return versions[0]
    draw = (rng or random).random() * sum(weights[v] for v in versions)
    for v in versions:
        draw -= weights[v]
        if draw < 0:
            return v
    return versions[-1]


# -- what the library reports ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """One published version: its manifest facts, the metrics and tags recorded with it, its aliases."""

    name: str
    version: int
    created: str
    backend: str
    framework: str
    size: int
    schema: str
    metrics: dict[str, float]
    tags: dict[str, str]
    aliases: dict[str, float]  # alias -> share of its traffic
    has_profile: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def _repr_html_(self) -> str:
        return Listing([self.to_dict()], detail=True)._repr_html_()


_COLUMNS = ("name", "version", "aliases", "backend", "size", "created", "metrics")


def _cell(key: str, value: Any) -> str:
    if key == "aliases" and isinstance(value, Mapping):
        return ",".join(a if w >= 1 else f"{a}({w:.0%})" for a, w in value.items())
    if key == "metrics" and isinstance(value, Mapping):
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
    if key == "tags" and isinstance(value, Mapping):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if key == "size" and isinstance(value, int):
        return _human_size(value)
    if key == "created" and isinstance(value, str):
        return value[:19].replace("T", " ")
    return "" if value is None else str(value)


def _human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Listing:
    """Rows of the library (one per version), shown as a text table, an HTML table, or JSON.

    Example:
        >>> print(Listing([{"name": "fraud", "version": 1, "aliases": {"production": 1.0}}]))
        name   version  aliases
        fraud  1        production
    """

    def __init__(self, rows: list[dict[str, Any]], *, detail: bool = False) -> None:
        self.rows = rows
        self.detail = detail

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def _columns(self) -> list[str]:
        keys = {k for row in self.rows for k in row}
        extra = ("tags", "framework") if self.detail else ()
        return [c for c in (*_COLUMNS, *extra) if c in keys]

    def __str__(self) -> str:
        cols = self._columns()
        table = [cols] + [[_cell(c, row.get(c)) for c in cols] for row in self.rows]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table)

    def to_json(self) -> str:
        return json.dumps(self.rows, indent=2, default=str)

    def _repr_html_(self) -> str:
        cols = self._columns()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(c, row.get(c)))}</td>" for c in cols) + "</tr>"
            for row in self.rows
        )
        return f"<table><tr>{head}</tr>{body}</table>"


# -- storage ------------------------------------------------------------------------------------


class _Local:
    """A library in a local directory: staging + rename for atomicity, a file lock per model name."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root

    def __str__(self) -> str:
        return str(self.root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def numbers(self, name: str) -> dict[int, bool]:
        """Every numbered directory of ``name`` -> whether it is a complete (visible) version."""
        d = self.root / name
        if not d.is_dir():
            return {}
        return {int(p.name): (p / MANIFEST).is_file() for p in d.iterdir() if p.name.isdigit()}

    def read(self, name: str, rel: str) -> bytes | None:
        try:
            return (self.root / name / rel).read_bytes()
        except FileNotFoundError:
            return None

    def write_atomic(self, name: str, rel: str, data: bytes) -> None:
        target = self.root / name / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        filelock = require("filelock", feature="the model library", extra="store")
        (self.root / name).mkdir(parents=True, exist_ok=True)
        with filelock.FileLock(str(self.root / name / ".lock"), timeout=60):
            yield

    def publish(self, name: str, model: Model) -> int:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        staging = d / f".staging-{uuid.uuid4().hex}"
        try:
            model.save(staging)  # atomic itself: staging is complete or absent
            with self.lock(name):
                # Numbers are never reused, even after the newest versions were removed.
                last = self.read(name, LAST_VERSION)
                version = max(*self.numbers(name), int(last or 0), 0) + 1
                os.replace(staging, d / str(version))
                self.write_atomic(name, LAST_VERSION, str(version).encode())
                fd = os.open(d, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    def fetch(self, name: str, version: int) -> Path:
        return self.root / name / str(version)

    def remove(self, name: str, version: int | None) -> None:
        target = self.root / name if version is None else self.root / name / str(version)
        if not target.exists():
            return
        # Hide first (a rename is atomic), then delete: readers never see a half-deleted version.
        trash = target.parent / f".removing-{uuid.uuid4().hex}"
        os.replace(target, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def gc(self, max_age: float) -> list[str]:
        removed = []
        cutoff = time.time() - max_age
        for name in self.names():
            for p in (self.root / name).iterdir():
                if p.name.startswith((".staging-", "..staging-", ".removing-")) and p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(f"{name}/{p.name}")
        return removed


class _Remote:
    """A library on an fsspec filesystem (S3 and friends): manifest last, exclusive-create claims."""

    remote = True

    def __init__(self, url: str, storage_options: Mapping[str, Any], cache: Path) -> None:
        fsspec = require("fsspec", feature="the remote model library", extra="s3")
        try:
            self.fs, self.base = fsspec.core.url_to_fs(url, **dict(storage_options))
        except ImportError as e:  # s3fs, gcsfs ...: fsspec names the package to install
            raise StoreError(
                f"the model library {url!r} needs a filesystem package ({e}): pip install 'aimass[s3]'"
            ) from e
        self.base = self.base.rstrip("/")
        self.url = url
        self.cache = cache

    def __str__(self) -> str:
        return self.url

    def _p(self, *parts: str) -> str:
        return "/".join((self.base, *parts))

    def _ls(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        return [str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries]

    def names(self) -> list[str]:
        return sorted(n for n in self._ls(self.base) if _NAME.match(n))

    def numbers(self, name: str) -> dict[int, bool]:
        numbers = {int(n): False for n in self._ls(self._p(name)) if n.isdigit()}
        for path in self.fs.glob(self._p(name, "*", MANIFEST)):
            part = str(path).rstrip("/").split("/")[-2]
            if part.isdigit():
                numbers[int(part)] = True
        return numbers

    def read(self, name: str, rel: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(self._p(name, rel))
        except FileNotFoundError:
            return None
        return data

    def write_atomic(self, name: str, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(name, rel), data)  # one PUT: readers see the old or the new object

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        yield  # object stores have no locks; version claims are exclusive creates instead

    def _claim(self, name: str) -> int:
        claim = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "time": time.time()}).encode()
        version = max(self.numbers(name), default=0) + 1
        for _ in range(1000):
            try:
                self.fs.pipe_file(self._p(name, str(version), CLAIM), claim, mode="create")
                return version
            except (FileExistsError, OSError) as e:
                if not _is_conflict(e):
                    raise
                version += 1
        raise StoreError(f"could not claim a version number for {name!r} after 1000 tries")

    def publish(self, name: str, model: Model) -> int:
        with tempfile.TemporaryDirectory(prefix="aimass-publish-") as tmp:
            pkg = model.save(Path(tmp) / "pkg")
            manifest = Manifest.model_validate_json((pkg / MANIFEST).read_text(encoding="utf-8"))
            version = self._claim(name)
            for art in manifest.artifacts:
                self.fs.put_file(str(pkg / art.path), self._p(name, str(version), art.path))
            # The manifest goes last: until it lands, the version is invisible.
            self.fs.put_file(str(pkg / MANIFEST), self._p(name, str(version), MANIFEST))
        self.fs.invalidate_cache(self._p(name))
        return version

    def fetch(self, name: str, version: int) -> Path:
        where = f"{name}/{version} in {self.url}"
        raw = self._read_limited(self._p(name, str(version), MANIFEST), MAX_MANIFEST_BYTES, where)
        if raw is None:
            raise ModelNotFound(f"model {name!r} has no version {version} in {self.url}")
        digest = hashlib.sha256(raw).hexdigest()
        target = self.cache / digest
        if (target / MANIFEST).is_file():
            return target
        # Every name is checked before a byte is written: the manifest comes from the remote store,
        # which this client does not trust to stay inside its cache.
        manifest = parse_manifest(raw, where)
        self.cache.mkdir(parents=True, exist_ok=True)
        # A private staging directory (mode 0700) that only a verified package leaves, by one rename.
        tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:16]}.", dir=self.cache))
        try:
            for art in manifest.artifacts:
                local = member(tmp, art.path, f"package {where}")
                local.parent.mkdir(parents=True, exist_ok=True)
                self._download(self._p(name, str(version), art.path), local, art.size, where)
            (tmp / MANIFEST).write_bytes(raw)
            verify(tmp)  # sizes and checksums: never cache a corrupt or substituted download
            try:
                os.replace(tmp, target)
            except OSError:  # another process cached the same package first
                if not (target / MANIFEST).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _read_limited(self, path: str, limit: int, where: str) -> bytes | None:
        try:
            with self.fs.open(path, "rb") as f:
                data: bytes = f.read(limit + 1)
        except FileNotFoundError:
            return None
        if len(data) > limit:
            raise IntegrityError(f"package {where}: {path.rsplit('/', 1)[-1]} is larger than {limit} bytes")
        return data

    def _download(self, remote: str, local: Path, size: int, where: str) -> None:
        """Copy one artifact, refusing to write more bytes than the manifest declares."""
        written = 0
        try:
            with self.fs.open(remote, "rb") as src, local.open("xb") as dst:
                while block := src.read(min(1 << 20, size - written + 1)):
                    written += len(block)
                    if written > size:
                        raise IntegrityError(
                            f"package {where}: artifact {local.name!r} is larger than its manifest's {size} bytes"
                        )
                    dst.write(block)
        except FileNotFoundError:
            raise IntegrityError(f"package {where}: artifact {local.name!r} is missing") from None

    def remove(self, name: str, version: int | None) -> None:
        versions = sorted(self.numbers(name)) if version is None else [version]
        for v in versions:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._p(name, str(v), MANIFEST))  # invisible first
            for path in self.fs.find(self._p(name, str(v))):
                if not str(path).endswith("/" + CLAIM):  # the claim stays: numbers are never reused
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(path)
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(self._p(name), recursive=True)
        self.fs.invalidate_cache(self._p(name))

    def gc(self, max_age: float) -> list[str]:
        """Delete what dead publishers left: files of versions that have a claim but no manifest.

        The claim stays, so the number is never reused; a claim younger than ``max_age`` may
        belong to a publisher still uploading and is left alone.
        """
        removed = []
        cutoff = time.time() - max_age
        for name in self.names():
            for version, complete in self.numbers(name).items():
                if complete:
                    continue
                claim = self.read(name, f"{version}/{CLAIM}")
                try:
                    claimed = float(json.loads(claim)["time"]) if claim else 0.0
                except (ValueError, KeyError, TypeError):
                    claimed = 0.0  # an unreadable claim is no evidence of a live publisher
                if claimed >= cutoff:
                    continue
                for path in self.fs.find(self._p(name, str(version))):
                    if not str(path).endswith("/" + CLAIM):
                        with contextlib.suppress(FileNotFoundError):
                            self.fs.rm_file(path)
                removed.append(f"{name}/{version}")
            self.fs.invalidate_cache(self._p(name))
        return removed


# Error codes an object store answers a conditional create with when the object exists already.
_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_CONFLICT_STATUS = frozenset({409, 412})


def _valid_targets(alias: Any, targets: Any) -> bool:
    if not (isinstance(alias, str) and _ALIAS.match(alias) and isinstance(targets, dict) and targets):
        return False
    weights = list(targets.values())
    if not all(isinstance(w, int | float) and math.isfinite(w) and w >= 0 for w in weights):
        return False
    return all(str(v).isdigit() for v in targets) and sum(weights) > 0


def _is_conflict(e: BaseException) -> bool:
    """Whether a failed exclusive create lost a race, judged by the storage's error code.

    s3fs turns S3's 412 on ``If-None-Match`` into FileExistsError; other fsspec drivers keep the
    botocore error as the cause, whose response carries the code and HTTP status.
    """
    seen: BaseException | None = e
    for _ in range(8):  # the cause chain is short; bound it anyway
        if seen is None:
            return False
        if isinstance(seen, FileExistsError):
            return True
        response = getattr(seen, "response", None)
        if isinstance(response, Mapping):
            error = response.get("Error") or {}
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return error.get("Code") in _CONFLICT_CODES or status in _CONFLICT_STATUS
        seen = seen.__cause__ or seen.__context__
    return False


# -- the library --------------------------------------------------------------------------------


class Store:
    """A model library rooted at a directory or an fsspec URL.

    Example:
        >>> lib = Store("/tmp/models")                       # doctest: +SKIP
        >>> v = lib.publish(model, "fraud", metrics=result)  # doctest: +SKIP
        >>> lib.set_alias("fraud", "production", v)          # doctest: +SKIP
        >>> lib.load("fraud", "production").predict(rows)    # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        text = str(root if root is not None else os.environ.get(ENV_ROOT) or DEFAULT_ROOT)
        cache = Path(cache_dir or os.environ.get(ENV_CACHE) or DEFAULT_CACHE).expanduser()
        if text.startswith("file://"):
            text = text[len("file://") :]
        self._io: _Local | _Remote
        if "://" in text:
            self._io = _Remote(text, storage_options or {}, cache)
        else:
            self._io = _Local(Path(text).expanduser().absolute())

    @property
    def root(self) -> str:
        return str(self._io)

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # -- reading ---------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Model names that have at least one complete version."""
        return [n for n in self._io.names() if any(self._io.numbers(n).values())]

    def versions(self, name: str) -> list[int]:
        """Complete versions of ``name``, oldest first (empty when there are none)."""
        return sorted(v for v, complete in self._io.numbers(check_name(name)).items() if complete)

    def _manifest(self, name: str, version: int) -> Manifest:
        raw = self._io.read(name, f"{version}/{MANIFEST}")
        if raw is None:
            raise ModelNotFound(f"model {name!r} has no version {version}; versions: {self.versions(name)}")
        return parse_manifest(raw, f"{name}/{version}")

    def _state(self, name: str) -> dict[str, Any]:
        raw = self._io.read(name, ALIASES)
        if raw is None:
            return {"aliases": {}, "gates": {}}
        try:
            state = json.loads(raw)
        except json.JSONDecodeError as e:
            raise StoreError(f"{name}/{ALIASES} is not valid JSON: {e}") from None
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
        return dict(state)

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
        """What is recorded about one version."""
        manifest = self._manifest(check_name(name), version)
        meta = manifest.metadata.get(METADATA_KEY) or {}
        aliases = {}
        for alias, targets in self.aliases(name).items():
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
        return pick_version(self.alias(name, ref), rng)

    def path(self, name: str, ref: int | str | None = None) -> Path:
        """A local directory holding the package (downloaded into the cache for remote libraries)."""
        return self._io.fetch(check_name(name), self.resolve(name, ref))

    pull = path

    def load(
        self,
        name: str,
        ref: int | str | None = None,
        *,
        device: str = "cpu",
        options: Mapping[str, Any] | None = None,
    ) -> Model:
        """Load a version as a Model (checksums verified); ``model.metadata["store"]`` says which.

        Example:
            >>> m = lib.load("fraud", "production")   # doctest: +SKIP
        """
        from aimass.model import Model

        version = self.resolve(name, ref)
        path = self._io.fetch(name, version)
        model = Model.load(path, device=device, options=options)
        model.name = name
        meta = dict(model.metadata.get(METADATA_KEY) or {})
        meta.update({"name": name, "version": version, "root": self.root})
        if isinstance(ref, str) and not ref.isdigit():
            meta["alias"] = ref
        model.metadata[METADATA_KEY] = meta
        return model

    # -- writing ---------------------------------------------------------------------------------

    def publish(
        self,
        model: Model,
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

        Example:
            >>> lib.publish(m, "fraud", metrics=evaluate(m, x, y), gate={"accuracy": ">=0.9"})  # doctest: +SKIP
            4
        """
        from aimass.model import Model

        check_name(name)
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
        version = self._io.publish(name, Model(model.backend, name=name, metadata=meta))
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
        with self._io.lock(name):
            state = self._state(name)
            known = self.versions(name)
            for version in weights:
                if version not in known:
                    raise ModelNotFound(f"model {name!r} has no version {version}; versions: {known}")
                recorded = self.info(name, version).metrics
                for g in (gate, state["gates"].get(alias)):
                    require_gate(recorded, g, what=f"{name!r} version {version} (alias {alias!r})")
            state["aliases"][alias] = {str(v): w for v, w in sorted(weights.items())}
            self._io.write_atomic(name, ALIASES, json.dumps(state, indent=2).encode())

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete an alias (ModelNotFound when it does not exist)."""
        with self._io.lock(check_name(name)):
            state = self._state(name)
            if state["aliases"].pop(check_alias(alias), None) is None:
                raise ModelNotFound(f"model {name!r} has no alias {alias!r}")
            self._io.write_atomic(name, ALIASES, json.dumps(state, indent=2).encode())

    def set_gate(self, name: str, alias: str, gate: Mapping[str, Any] | None) -> None:
        """Store a gate for an alias (None removes it); later moves of the alias must pass it.

        Example:
            >>> lib.set_gate("fraud", "production", {"accuracy": ">=0.9"})   # doctest: +SKIP
        """
        from aimass.evaluate import parse_gate

        with self._io.lock(check_name(name)):
            state = self._state(name)
            if gate:
                parse_gate(gate)  # refuse malformed conditions now, not at the next move
                state["gates"][check_alias(alias)] = {str(k): str(v) for k, v in gate.items()}
            else:
                state["gates"].pop(check_alias(alias), None)
            self._io.write_atomic(name, ALIASES, json.dumps(state, indent=2).encode())

    def remove(self, name: str, version: int | None = None, *, force: bool = False) -> None:
        """Delete one version (or the whole model); refused while an alias points at it unless ``force``."""
        check_name(name)
        with self._io.lock(name):
            aliases = self.aliases(name)
            users = sorted(a for a, t in aliases.items() if version is None or version in t)
            if users and not force:
                what = "model" if version is None else f"version {version}"
                raise StoreError(f"{name!r} {what} is used by aliases {users}: move them first or pass force=True")
            if version is not None and version not in self._io.numbers(name):
                raise ModelNotFound(f"model {name!r} has no version {version}; versions: {self.versions(name)}")
            if version is not None and users:
                state = self._state(name)
                for alias in users:
                    targets = state["aliases"][alias]
                    targets.pop(str(version), None)
                    if not targets:
                        del state["aliases"][alias]
                self._io.write_atomic(name, ALIASES, json.dumps(state, indent=2).encode())
            self._io.remove(name, version)

    def gc(self, max_age: float = 86400.0) -> list[str]:
        """Delete staging leftovers of publishers that died more than ``max_age`` seconds ago."""
        return self._io.gc(max_age)


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


def load(ref: str | Ref, *, device: str = "cpu", options: Mapping[str, Any] | None = None) -> Model:
    """Load ``"store://fraud@production"``, ``"fraud:3"`` or a :class:`Ref` from the default library."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    if parsed is None:
        parsed = _ref(str(ref), None)
    selector: int | str | None = parsed.version if parsed.version is not None else parsed.alias
    return Store().load(parsed.name, selector, device=device, options=options)


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
