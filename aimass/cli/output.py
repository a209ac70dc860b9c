"""What CLI commands share: text tables, JSON output, input files, and exit codes.

Exit codes: 0 success, 2 user error (bad arguments, unknown model, invalid input, failed gate: any
:class:`~aimass.errors.AimassError` with a 4xx status, and typer's own usage errors), 1 failure
(anything else). :func:`handle_errors` keeps this contract for every command: ``aimass.cli.app``
applies it to each one it registers, so no command can skip it. A reader that stops early
(``aimass store list | head -1``) ends the command quietly with 0: no ``BrokenPipeError``.

Example:
    >>> print(table([{"name": "fraud", "version": 3}]))
    name   version
    fraud  3
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import typer

from aimass.errors import AimassError

__all__ = ["USER_ERROR", "FAILURE", "echo_json", "handle_errors", "json_text", "read_input", "stdout_gone", "table"]

USER_ERROR = 2
FAILURE = 1

F = TypeVar("F", bound=Callable[..., Any])

# typer.BadParameter and the other usage errors derive from click's ClickException, or from typer's
# own copy of it (recent typer vendors click): the class is found the same way in both.
_USAGE_ERROR: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def handle_errors(fn: F) -> F:
    """Turn exceptions into one line on stderr and the exit code that tells user error from failure.

    Applied once per command (again on a wrapped command, it returns it as it is).
    """
    if getattr(fn, "__aimass_handles_errors__", False):
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:  # the reader went away (| head): what it read was what it wanted
            stdout_gone()
            raise typer.Exit(0) from None
        except _USAGE_ERROR as e:  # a bad value found in the command's body (typer.BadParameter ...)
            code, line = USER_ERROR, f"error: {e.format_message()}"  # type: ignore[attr-defined]
        except AimassError as e:
            code, line = (USER_ERROR if 400 <= e.status_code < 500 else FAILURE), f"error: {e}"
        except (FileNotFoundError, ValueError, KeyError) as e:
            code, line = USER_ERROR, f"error: {e}"
        except Exception as e:  # a failure, not the user's fault: say what it was
            code, line = FAILURE, f"failed: {type(e).__name__}: {e}"
        typer.echo(" ".join(part.strip() for part in line.splitlines() if part.strip()), err=True)
        raise typer.Exit(code)

    wrapper.__aimass_handles_errors__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def stdout_gone() -> None:
    """After a broken pipe: send what is left of stdout to /dev/null, so that Python's flush at exit
    does not print "Exception ignored ... BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (a test runner's capture): nothing to silence
        pass


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain text table, columns padded to their widest cell."""
    cols = list(columns or (list(rows[0]) if rows else []))
    cells = [cols] + [[_text(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def echo_json(data: Any, *, compact: bool = False) -> None:
    """Print ``data`` as JSON: indented for reports, on one line (``compact``) for arrays of numbers.

    Example:
        >>> echo_json({"probabilities": np.array([[0.25, 0.75]], np.float32)}, compact=True)
        {"probabilities":[[0.25,0.75]]}
    """
    typer.echo(json_text(data, compact=compact))


def json_text(data: Any, *, compact: bool = False) -> str:
    """``data`` as JSON text; numpy arrays and scalars as numbers, bytes as UTF-8 text.

    Example:
        >>> json_text({"label": np.array([b"toxic"], dtype=object)}, compact=True)
        '{"label":["toxic"]}'
    """
    if compact:  # indent=2 put every number of an output array on its own line
        return json.dumps(data, separators=(",", ":"), default=_json_default)
    return json.dumps(data, indent=2, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def read_input(path: Path, input_names: Sequence[str]) -> Any:
    """Read ``.json`` (an array, or an object of name -> array), ``.npy``, ``.npz`` or ``.csv`` (numbers).

    A CSV whose header names every input column-by-column gives one column per input; otherwise
    its numeric rows are the single input.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no such input file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "inputs" in data and isinstance(data["inputs"], list):
            # V2 request body: {"inputs": [{"name", "shape", "datatype", "data"}]}
            return {t["name"]: np.asarray(t["data"]).reshape(t["shape"]) for t in data["inputs"]}
        if isinstance(data, dict):
            return {k: np.asarray(v) for k, v in data.items()}
        return np.asarray(data)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    if suffix == ".csv":
        with path.open(encoding="utf-8") as f:
            first = f.readline().strip().split(",")
        has_header = any(not _is_number(c) for c in first)
        matrix = np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0, ndmin=2)
        header = [c.strip() for c in first]
        if has_header and len(input_names) > 1 and all(n in header for n in input_names):
            return {n: matrix[:, header.index(n)] for n in input_names}
        return matrix
    raise ValueError(f"input file {path.name!r}: use .json, .npy, .npz or .csv")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
