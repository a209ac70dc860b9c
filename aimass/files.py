"""Reading back the documents aimass writes (manifests, specs, aliases, configs), with typed errors.

Every file aimass reads back may have been truncated, corrupted or edited by hand. Decoding is the
step that otherwise leaks an untyped ``UnicodeDecodeError`` or ``json.JSONDecodeError`` from the
standard library; these helpers turn any such failure into the caller's error class from
:mod:`aimass.errors`, with a message that names the file and says what is wrong with it.

Example:
    >>> from aimass.errors import StoreError
    >>> try:
    ...     parse_json(b'{"aliases": \\xff}', "fraud/aliases.json", StoreError)
    ... except StoreError as e:
    ...     print(e)
    fraud/aliases.json is not UTF-8 text (byte 0xff at offset 12)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aimass.errors import AimassError, IntegrityError

__all__ = ["decode_text", "parse_json", "read_json", "read_text"]


def decode_text(raw: bytes | str, where: str, error: type[AimassError] = IntegrityError) -> str:
    """``raw`` as UTF-8 text, or ``error`` naming ``where`` and the first bad byte.

    Example:
        >>> decode_text(b"ok", "a.json")
        'ok'
    """
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{where} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})") from None


def parse_json(raw: bytes | str, where: str, error: type[AimassError] = IntegrityError) -> Any:
    """The JSON document in ``raw``, or ``error`` naming ``where`` (not UTF-8, not JSON, nested too deep).

    Example:
        >>> parse_json(b'{"url": "http://mass:8000"}', "remote.json")
        {'url': 'http://mass:8000'}
    """
    text = decode_text(raw, where, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{where} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise error(f"{where} is not a usable JSON document: nested too deeply") from None


def read_text(
    path: str | os.PathLike[str],
    error: type[AimassError] = IntegrityError,
    *,
    where: str | None = None,
    max_bytes: int | None = None,
) -> str:
    """A text file as ``str``; unreadable, too large or not UTF-8 raise ``error`` naming the file.

    ``where`` is how messages name the file (default: its name, never the whole server path).

    Example:
        >>> read_text("aimass.toml", ModelLoadError)   # doctest: +SKIP
    """
    file = Path(path)
    where = where or file.name
    try:
        with file.open("rb") as fh:
            raw = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    except OSError as e:
        raise error(f"cannot read {where}: {e.strerror or e}") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise error(f"{where} is larger than the limit of {max_bytes} bytes")
    return decode_text(raw, where, error)


def read_json(
    path: str | os.PathLike[str],
    error: type[AimassError] = IntegrityError,
    *,
    where: str | None = None,
    max_bytes: int | None = None,
) -> Any:
    """The JSON document in a file; every failure is ``error`` naming the file (see :func:`parse_json`).

    Example:
        >>> read_json("pkg/remote.json")["url"]   # doctest: +SKIP
        'http://mass:8000/v2/models/fraud'
    """
    where = where or Path(path).name
    return parse_json(read_text(path, error, where=where, max_bytes=max_bytes), where, error)
