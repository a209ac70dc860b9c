"""Where a library's bytes live: one declared interface (:class:`Driver`), a local directory, any fsspec URL.

:class:`~aimass.store.Store` speaks only :class:`Driver`; it never asks which kind it holds. A
driver either does what a method says or raises :class:`~aimass.errors.UnsupportedOperation`:
none silently does nothing.

* :class:`LocalDriver`: staging + rename for atomicity, a file lock (``filelock``) per model name;
* :class:`FsspecDriver`: S3 and friends; the manifest is uploaded last, version numbers are claimed
  by an exclusive create (``If-None-Match: *``) of ``<version>/.claim``, and packages are
  downloaded, checked and verified into a local cache keyed by the sha256 of their manifest.

Example:
    >>> d = open_driver("/tmp/models", cache=Path("/tmp/cache"))
    >>> type(d).__name__, d.location
    ('LocalDriver', '/tmp/models')
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aimass.dependencies import require
from aimass.errors import IntegrityError, ModelNotFound, StoreError, UnsupportedOperation
from aimass.package import MANIFEST, MAX_MANIFEST_BYTES, Manifest, member, parse_manifest, verify
from aimass.store.refs import is_name
from aimass.tempfiles import staging_file

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from aimass.model import Model

__all__ = ["CLAIM", "LAST_VERSION", "Driver", "FsspecDriver", "LocalDriver", "is_conflict", "open_driver"]

CLAIM = ".claim"  # <name>/<version>/.claim on object stores: who took the number (never deleted)
LAST_VERSION = ".last-version"  # <name>/.last-version locally: the highest number ever assigned


class Driver(abc.ABC):
    """The storage of one library: what :class:`~aimass.store.Store` needs, and nothing else.

    Paths are ``name`` (already validated by the caller) plus a relative path inside it
    (``"aliases.json"``, ``"3/aimass.json"``). Every method does what it says or raises
    :class:`~aimass.errors.UnsupportedOperation`; a driver that cannot collect leftovers keeps the
    default :meth:`gc`, which raises.
    """

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """The root, as the user wrote it (a directory or a URL)."""

    def __str__(self) -> str:
        return self.location

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Every model name with a directory in the library (complete versions or not), sorted."""

    @abc.abstractmethod
    def numbers(self, name: str) -> dict[int, bool]:
        """Every version number used under ``name`` -> whether it is complete (visible)."""

    @abc.abstractmethod
    def read(self, name: str, rel: str) -> bytes | None:
        """The bytes of ``<name>/<rel>``, or None when it does not exist."""

    @abc.abstractmethod
    def write_atomic(self, name: str, rel: str, data: bytes) -> None:
        """Replace ``<name>/<rel>``: readers see the old or the new content, never a mix."""

    @abc.abstractmethod
    def lock(self, name: str) -> AbstractContextManager[None]:
        """Exclude other writers of ``name``'s aliases and removals while held, where the storage has locks.

        Locally a file lock. Object stores have none: there, writes are single atomic PUTs and two
        writers at the same instant mean last write wins (documented in docs/library.md). Version
        numbers never depend on this lock: :meth:`publish` claims them itself.
        """

    @abc.abstractmethod
    def publish(self, name: str, model: Model) -> int:
        """Write ``model`` as the next version of ``name``, visible only once complete; its number."""

    @abc.abstractmethod
    def fetch(self, name: str, version: int) -> Path:
        """A local directory holding the complete package (downloaded and verified if remote)."""

    @abc.abstractmethod
    def remove(self, name: str, version: int | None) -> None:
        """Delete one version (invisible first), or every version of ``name`` when None; numbers are never reused."""

    def gc(self, max_age: float) -> list[str]:
        """Delete leftovers of publishers that died more than ``max_age`` seconds ago; what was removed.

        Drivers must either do it or raise UnsupportedOperation (this default): never return ``[]``
        without looking.
        """
        raise UnsupportedOperation(f"the library at {self.location} ({type(self).__name__}) cannot collect leftovers")


def open_driver(root: str, *, cache: Path, storage_options: Mapping[str, Any] | None = None) -> Driver:
    """The driver for ``root``: an fsspec URL (``s3://bucket/models``) or a local directory (``file://`` too)."""
    if root.startswith("file://"):
        root = root[len("file://") :]
    if "://" in root:
        return FsspecDriver(root, storage_options or {}, cache)
    return LocalDriver(Path(root).expanduser().absolute())


# -- a local directory ----------------------------------------------------------------------------


class LocalDriver(Driver):
    """A library in a local directory: staging + rename for atomicity, a file lock per model name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and is_name(p.name))

    def numbers(self, name: str) -> dict[int, bool]:
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
        fd, tmp = staging_file(target.parent, f".{target.name}.")  # the umask's mode, not mkstemp's 0600
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
        """Delete hidden staging and removal directories older than ``max_age`` seconds."""
        removed = []
        cutoff = time.time() - max_age
        for name in self.names():
            for p in (self.root / name).iterdir():
                if p.name.startswith((".staging-", "..staging-", ".removing-")) and p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(f"{name}/{p.name}")
        return removed


# -- an fsspec filesystem (S3 and friends) ---------------------------------------------------------


class FsspecDriver(Driver):
    """A library on an fsspec filesystem (S3 and friends): manifest last, exclusive-create claims.

    ``fs`` and ``base`` are the filesystem and the root path inside it; ``cache`` is the local
    directory that verified downloads enter.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any], cache: Path) -> None:
        fsspec = require("fsspec", feature="the remote model library", extra="s3")
        try:
            self.fs, base = fsspec.core.url_to_fs(url, **dict(storage_options))
        except ImportError as e:  # s3fs, gcsfs ...: fsspec names the package to install
            raise StoreError(
                f"the model library {url!r} needs a filesystem package ({e}): pip install 'aimass[s3]'"
            ) from e
        self.base: str = base.rstrip("/")
        self.url = url
        self.cache = cache

    @property
    def location(self) -> str:
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
        return sorted(n for n in self._ls(self.base) if is_name(n))

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
        # Object stores have no locks (see Driver.lock): writes are single PUTs, last write wins;
        # version numbers are claimed by exclusive creates in publish, not under this lock.
        yield

    def _claim(self, name: str) -> int:
        claim = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "time": time.time()}).encode()
        version = max(self.numbers(name), default=0) + 1
        for _ in range(1000):
            try:
                self.fs.pipe_file(self._p(name, str(version), CLAIM), claim, mode="create")
                return version
            except (FileExistsError, OSError) as e:
                if not is_conflict(e):
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


def is_conflict(e: BaseException) -> bool:
    """Whether a failed exclusive create lost a race, judged by the storage's error code.

    s3fs turns S3's 412 on ``If-None-Match`` into FileExistsError; other fsspec drivers keep the
    botocore error as the cause, whose response carries the code and HTTP status. The text of a
    message decides nothing.

    Example:
        >>> is_conflict(FileExistsError("exists")), is_conflict(OSError("412 in a request id"))
        (True, False)
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
