"""The on-disk model package: artifacts plus a manifest with schema and sha256 checksums.

Layout of a package directory::

    pkg/
      aimass.json     the Manifest (written last, so its presence means the package is complete)
      model.onnx      artifacts written by the backend (names listed in the manifest)

Saving is atomic: everything is written into a temporary sibling directory, fsynced, and renamed
into place, so a crash leaves either no package or a complete one. Loading verifies every
checksum (and refuses links, absolute paths and ``..``) before any framework reads a byte.

Example:
    >>> from aimass import Model
    >>> m = Model.load("mlp.onnx")          # doctest: +SKIP
    >>> m.save("pkg/")                       # doctest: +SKIP
    >>> read_manifest("pkg/").backend        # doctest: +SKIP
    'onnx'
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimass.errors import IntegrityError, ModelLoadError
from aimass.schema import Schema

__all__ = ["MANIFEST", "Artifact", "Manifest", "is_package", "read_manifest", "sha256_file", "verify", "write_package"]

MANIFEST = "aimass.json"
FORMAT_VERSION = 1


class Artifact(BaseModel):
    """One file of a package, with its size and sha256."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    size: int


class Manifest(BaseModel):
    """What a package holds: backend, schema, framework versions, checksums, metadata."""

    model_config = ConfigDict(populate_by_name=True)

    format_version: int = FORMAT_VERSION
    name: str | None = None
    backend: str
    framework: str
    framework_version: str | None = None
    aimass_version: str
    model_schema: Schema = Field(alias="schema")
    artifacts: list[Artifact]
    created: dt.datetime
    metadata: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, by_alias=True)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_package(
    target: str | os.PathLike[str],
    write_artifacts: Callable[[Path], list[str]],
    manifest_fields: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a package atomically: artifacts via ``write_artifacts(tmpdir)``, then the manifest, then rename.

    ``manifest_fields`` are the Manifest fields other than ``artifacts`` and ``created``.
    """
    target = Path(target).absolute()
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target.name!r} exists and is not empty: pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        names = write_artifacts(tmp)
        artifacts = []
        for name in names:
            f = tmp / name
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
            artifacts.append(Artifact(path=name, sha256=sha256_file(f), size=f.stat().st_size))
        manifest = Manifest(artifacts=artifacts, created=dt.datetime.now(dt.UTC), **manifest_fields)
        with (tmp / MANIFEST).open("w", encoding="utf-8") as fh:
            fh.write(manifest.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if target.exists():
            # Move the old package aside first, so the target name always holds a complete package.
            trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, trash / "pkg")
            os.replace(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def is_package(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding an aimass manifest."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Parse a package's manifest (no checksum verification; see :func:`verify`)."""
    path = Path(path)
    try:
        text = (path / MANIFEST).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelLoadError(f"{path.name!r} is not an aimass package: no {MANIFEST}") from None
    try:
        manifest = Manifest.model_validate_json(text)
    except ValidationError as e:
        raise IntegrityError(f"package {path.name!r}: manifest is invalid: {e.errors()[0]['msg']}") from None
    if manifest.format_version > FORMAT_VERSION:
        raise ModelLoadError(
            f"package {path.name!r} has format {manifest.format_version}; this aimass reads up to {FORMAT_VERSION}"
        )
    return manifest


def _safe_member(root: Path, name: str) -> Path:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts or not name:
        raise IntegrityError(f"package artifact name {name!r} leaves the package directory")
    member = root / pure
    if member.is_symlink():
        raise IntegrityError(f"package artifact {name!r} is a symbolic link; packages hold plain files only")
    return member


def verify(path: str | os.PathLike[str]) -> Manifest:
    """Read the manifest and check every artifact's presence, size and sha256.

    Raises :class:`~aimass.errors.IntegrityError` on any mismatch.
    """
    root = Path(path)
    manifest = read_manifest(root)
    if not manifest.artifacts:
        raise IntegrityError(f"package {root.name!r} lists no artifacts")
    for art in manifest.artifacts:
        member = _safe_member(root, art.path)
        if not member.is_file():
            raise IntegrityError(f"package {root.name!r}: artifact {art.path!r} is missing")
        size = member.stat().st_size
        if size != art.size:
            raise IntegrityError(
                f"package {root.name!r}: artifact {art.path!r} has {size} bytes, manifest says {art.size}"
            )
        digest = sha256_file(member)
        if digest != art.sha256:
            raise IntegrityError(
                f"package {root.name!r}: artifact {art.path!r} fails its checksum "
                f"(sha256 {digest[:12]}..., manifest {art.sha256[:12]}...): the file was modified or corrupted"
            )
    return manifest
