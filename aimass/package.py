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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aimass.errors import IntegrityError, ModelLoadError
from aimass.schema import Schema
from aimass.tempfiles import staging_dir

__all__ = [
    "MANIFEST",
    "MAX_MANIFEST_BYTES",
    "EXAMPLE_FILE",
    "Artifact",
    "Manifest",
    "check_member_name",
    "example_is_saveable",
    "checksummed_names",
    "is_package",
    "member",
    "parse_manifest",
    "read_example",
    "read_manifest",
    "sha256_file",
    "verify",
    "write_example",
    "write_package",
]

MANIFEST = "aimass.json"
EXAMPLE_FILE = "example.npz"
FORMAT_VERSION = 1
# A manifest lists files and metadata: a few KiB. Anything near this size is hostile or broken, and
# reading it whole (then parsing it) would let a package or a store cost the reader that much memory.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


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
    # The artifact holding the model's load-time example inputs (numeric arrays, .npz without pickle).
    example: str | None = None
    # What compress/convert/distill measured on the way to this model (aimass.compress.Report as JSON).
    report: dict[str, Any] | None = None

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
    # The umask's mode, not mkdtemp's 0700: a package in a shared library is readable as the umask says.
    tmp = staging_dir(target.parent, f".{target.name}.tmp-")
    try:
        names = write_artifacts(tmp)
        artifacts = []
        for name in names:
            f = member(tmp, name, f"package {target.name!r}")
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
    file = path / MANIFEST
    if file.is_symlink():
        raise IntegrityError(f"package {path.name!r}: {MANIFEST} is a symbolic link; packages hold plain files only")
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise ModelLoadError(f"{path.name!r} is not an aimass package: no {MANIFEST}") from None
    if size > MAX_MANIFEST_BYTES:
        raise IntegrityError(
            f"package {path.name!r}: {MANIFEST} has {size} bytes, more than the limit of {MAX_MANIFEST_BYTES}"
        )
    return parse_manifest(file.read_bytes(), path.name)


def parse_manifest(raw: bytes | str, where: str) -> Manifest:
    """Validate a manifest's text (from a file or a download): size, fields, format, artifact names.

    Every artifact name is checked with :func:`check_member_name`, so nothing read from a manifest
    can name a file outside its package; a name listed twice is refused.

    Example:
        >>> parse_manifest(open("pkg/aimass.json", "rb").read(), "pkg").backend   # doctest: +SKIP
        'onnx'
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"package {where!r}: manifest has {len(raw)} bytes, more than {MAX_MANIFEST_BYTES}")
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as e:
        raise IntegrityError(f"package {where!r}: manifest is invalid ({MANIFEST}): {e.errors()[0]['msg']}") from None
    if manifest.format_version > FORMAT_VERSION:
        raise ModelLoadError(
            f"package {where!r} has format {manifest.format_version}; this aimass reads up to {FORMAT_VERSION}"
        )
    seen: set[str] = set()
    for art in manifest.artifacts:
        name = check_member_name(art.path, f"package {where!r}")
        if name in seen or name == MANIFEST:
            raise IntegrityError(f"package {where!r}: artifact {art.path!r} is listed twice or names the manifest")
        seen.add(name)
        if art.size < 0:
            raise IntegrityError(f"package {where!r}: artifact {art.path!r} has a negative size")
    return manifest


def check_member_name(name: str, where: str = "package") -> str:
    """``name`` as a normalised relative POSIX path, or IntegrityError if it could leave its root.

    Refused: empty names, absolute paths (POSIX, Windows drive or UNC), ``..`` and ``.`` components,
    empty components, backslashes, and control characters.

    Example:
        >>> check_member_name("parts/0/model.onnx")
        'parts/0/model.onnx'
    """
    ok = (
        isinstance(name, str)
        and bool(name)
        and not name.startswith("/")
        and "\\" not in name
        and not any(ord(c) < 32 for c in name)
        and not (len(name) > 1 and name[1] == ":")
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )
    if not ok:
        raise IntegrityError(
            f"{where}: file name {name!r} leaves the package directory or is not a plain relative path"
        )
    return name


def member(root: Path, name: str, where: str | None = None) -> Path:
    """The path of file ``name`` inside ``root``, refusing names and links that lead outside it.

    Every component below ``root`` is checked: none may be a symbolic link (so ``sub/model.onnx``
    with ``sub`` linked elsewhere is refused), and the result must resolve inside ``root``.

    Example:
        >>> member(Path("pkg"), "parts/0/model.onnx")   # doctest: +SKIP
        PosixPath('pkg/parts/0/model.onnx')
    """
    where = where or f"package {root.name!r}"
    check_member_name(name, where)
    current = root
    for part in name.split("/"):
        current = current / part
        if current.is_symlink():
            raise IntegrityError(
                f"{where}: {name!r} goes through a symbolic link ({part!r}); packages hold plain files only"
            )
    if not current.resolve().is_relative_to(root.resolve()):
        raise IntegrityError(f"{where}: {name!r} resolves outside the package directory")
    return current


def verify(path: str | os.PathLike[str]) -> Manifest:
    """Read the manifest and check every artifact's presence, size and sha256.

    Raises :class:`~aimass.errors.IntegrityError` on any mismatch.
    """
    root = Path(path)
    manifest = read_manifest(root)
    if not manifest.artifacts:
        raise IntegrityError(f"package {root.name!r} lists no artifacts")
    for art in manifest.artifacts:
        file = member(root, art.path)
        if not file.is_file():
            raise IntegrityError(f"package {root.name!r}: artifact {art.path!r} is missing")
        size = file.stat().st_size
        if size != art.size:
            raise IntegrityError(
                f"package {root.name!r}: artifact {art.path!r} has {size} bytes, manifest says {art.size}"
            )
        digest = sha256_file(file)
        if digest != art.sha256:
            raise IntegrityError(
                f"package {root.name!r}: artifact {art.path!r} fails its checksum "
                f"(sha256 {digest[:12]}..., manifest {art.sha256[:12]}...): the file was modified or corrupted"
            )
    return manifest


def checksummed_names(root: Path, depth: int = 8) -> tuple[str, set[str]]:
    """``(prefix, names)``: the files under ``root`` that the enclosing package's manifest checksums.

    A backend loaded from a package (or from a part nested ``depth`` levels deep in one) walks up to
    that package's manifest, which :func:`verify` has just checked, so a spec file cannot name a
    file the checksums do not cover. ``names`` are relative to ``root``; ``prefix`` is ``root``'s
    place inside the package (``""`` at its top, ``"parts/0/"`` below). Outside any package both are
    empty: nothing is covered.

    Example:
        >>> checksummed_names(Path("pkg"))   # doctest: +SKIP
        ('', {'python.json', 'code/clf.py'})
    """
    prefix = ""
    for directory in (root, *root.parents[:depth]):
        if is_package(directory):
            names = {a.path for a in read_manifest(directory).artifacts}
            return prefix, {n[len(prefix) :] for n in names if n.startswith(prefix)}
        prefix = f"{directory.name}/{prefix}"
    return "", set()


def example_is_saveable(example: Mapping[str, np.ndarray]) -> bool:
    """Whether ``example`` can be kept in a package: numeric or boolean arrays (read back without pickle)."""
    return all(np.asarray(v).dtype.kind in "biuf" for v in example.values())


def write_example(directory: Path, example: Mapping[str, np.ndarray], *, taken: Sequence[str] = ()) -> str | None:
    """Write ``example`` as :data:`EXAMPLE_FILE` into ``directory``; its name, or None when it cannot be kept.

    Example:
        >>> write_example(Path("pkg-tmp"), {"x": np.zeros((2, 4), np.float32)})   # doctest: +SKIP
        'example.npz'
    """
    if not example or not example_is_saveable(example) or EXAMPLE_FILE in taken:
        return None
    with (directory / EXAMPLE_FILE).open("wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in example.items()})
    return EXAMPLE_FILE


def read_example(root: Path, manifest: Manifest) -> dict[str, np.ndarray] | None:
    """The example inputs a verified package keeps, or None; read without pickle.

    Example:
        >>> read_example(Path("pkg"), verify("pkg"))["x"].shape   # doctest: +SKIP
        (2, 4)
    """
    if manifest.example is None:
        return None
    if manifest.example not in {a.path for a in manifest.artifacts}:
        raise IntegrityError(f"package {root.name!r}: example {manifest.example!r} is not a checksummed artifact")
    try:
        with np.load(member(root, manifest.example), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as e:  # zipfile and numpy raise BadZipFile, NotImplementedError, EOFError ... on damage
        raise IntegrityError(f"package {root.name!r}: example {manifest.example!r} does not read: {e}") from e
