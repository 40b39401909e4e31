"""Validation shared by the dataset readers: every failure names the file and the fault.

Readers call these instead of bare ``np.fromfile`` / ``json.load`` so that a truncated download, a
label file from another frame or a hand-edited table fails loudly at the file that is wrong, not as
a shape error three modules later.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

PathLike = str | os.PathLike


def existing_file(path: PathLike) -> Path:
    """Return ``path`` as a ``Path``; raise ``FileNotFoundError`` naming it when it is not a file."""
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise FileNotFoundError(f"{p}: {what}")
    return p


def read_binary(path: PathLike, dtype: np.dtype | type | str, columns: int | None = None) -> np.ndarray:
    """Read a headerless binary file of fixed-size records.

    Returns ``(N,)`` when ``columns`` is None, else ``(N, columns)``. Raises ``ValueError`` when the
    file size is not a whole number of records (a truncated or foreign file).
    """
    p = existing_file(path)
    dt = np.dtype(dtype)
    record = dt.itemsize * (columns or 1)
    size = p.stat().st_size
    if size % record:
        layout = f"{columns} x {dt.name}" if columns else dt.name
        raise ValueError(
            f"{p}: size {size} bytes is not a multiple of the {record}-byte record ({layout}); "
            "the file is truncated or not of this kind"
        )
    data = np.fromfile(p, dtype=dt)
    return data if columns is None else data.reshape(-1, columns)


def check_finite(array: np.ndarray, path: PathLike, what: str = "coordinates") -> np.ndarray:
    """Return ``array`` unchanged; raise ``ValueError`` naming ``path`` if any value is NaN or infinite."""
    finite = np.isfinite(array)
    if not finite.all():
        rows = int((~finite).reshape(len(array), -1).any(axis=1).sum()) if array.ndim else 1
        raise ValueError(f"{path}: {rows} row(s) of {what} hold NaN or infinite values")
    return array


def finite_rows(array: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of a 2D array whose values are all finite."""
    return np.isfinite(array).reshape(len(array), -1).all(axis=1)


def read_points(path: PathLike, columns: int, drop_nonfinite: bool = False) -> np.ndarray:
    """A float32 ``(N, columns)`` point file; NaN or infinite values are an error naming the file,
    unless ``drop_nonfinite`` (those points are then removed, with a warning naming the file)."""
    points = read_binary(path, np.float32, columns)
    if not drop_nonfinite:
        return check_finite(points, path, "points")
    keep = finite_rows(points)
    if not keep.all():
        dropped = int((~keep).sum())
        warnings.warn(f"{path}: dropped {dropped} points with NaN or infinite values", stacklevel=3)
    return points[keep]


def check_count(count: int, expected: int | None, path: PathLike, what: str = "labels") -> None:
    """Raise ``ValueError`` naming ``path`` when ``count`` differs from ``expected`` (None: no check)."""
    if expected is not None and count != expected:
        raise ValueError(f"{path}: holds {count} {what} but the point cloud has {expected} points")


def read_float_rows(path: PathLike, columns: int) -> np.ndarray:
    """Read a whitespace-separated text table of floats, ``columns`` a row, blank lines skipped.

    Returns float64 ``(N, columns)``; raises ``ValueError`` naming the file and line on a short row
    or a token that is not a number, and on an empty file.
    """
    p = existing_file(path)
    rows = []
    for lineno, line in enumerate(p.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != columns:
            raise ValueError(f"{p}:{lineno}: expected {columns} numbers, found {len(tokens)}")
        rows.append(parse_floats(tokens, p, lineno))
    if not rows:
        raise ValueError(f"{p}: no rows")
    return np.asarray(rows, dtype=np.float64)


def parse_floats(tokens: list[str], path: PathLike, lineno: int | None = None) -> list[float]:
    """Convert tokens to floats; raise ``ValueError`` naming the file (and line) on a bad token."""
    try:
        values = [float(t) for t in tokens]
    except ValueError as err:
        where = f"{path}:{lineno}" if lineno is not None else f"{path}"
        raise ValueError(f"{where}: not a number ({err})") from None
    return values


def read_json(path: PathLike) -> Any:
    """Parse a JSON file; raise ``ValueError`` naming the file and position on malformed JSON."""
    p = existing_file(path)
    try:
        with p.open("rb") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{p}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{p}: not UTF-8 text ({err.reason})") from None
