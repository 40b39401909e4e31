"""The scene-folder layout every dataset is converted to (Pointcept-compatible).

``<root>/<split>/<scene>/{coord,color,normal,segment,instance}.npy`` plus unsup3d's
``superpoint.npy`` and, after CMD's feature pass, its 2D feature targets. ``coord`` is float32
metres, ``color`` uint8 0-255, ``segment`` int64 class id or -1, ``superpoint`` int64 or -1.

A scene is written into a hidden temporary folder and renamed into place, so a reader never sees a
half-written scene and a killed preparation leaves nothing that looks finished (the next preparation
removes the temporary). Every ``.npy`` is read with ``allow_pickle=False``; a scene with a damaged
array (truncated, pickled, missing) is skipped with a warning that names it (:func:`usable_scenes`),
and a preparation redoes it (:func:`scene_dir_problem` is its jobs' check).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unsup3d.data.prepare import load_npy, npy_problem, replace_dir, save_npy_atomic, temp_path

#: dtype each known array is stored with; other arrays (feature targets, ...) keep theirs.
DTYPES: dict[str, Any] = {
    "coord": np.float32,
    "color": np.uint8,
    "normal": np.float32,
    "strength": np.float32,
    "segment": np.int64,
    "instance": np.int64,
    "superpoint": np.int64,
}
#: the arrays every scene must hold to train (what the data modules load)
TRAINING_KEYS = ("coord", "color", "segment", "superpoint")


def scene_problem(scene: Mapping[str, np.ndarray]) -> str | None:
    """Why a scene cannot train (no points, non-finite coordinates, ragged arrays), or None."""
    coord = scene.get("coord")
    if coord is None:
        return "it has no coord array"
    if coord.ndim != 2 or coord.shape[1] != 3:
        return f"coord has shape {coord.shape}, expected (N, 3)"
    if len(coord) == 0:
        return "it has no points"
    if not np.isfinite(coord).all():
        return f"{int((~np.isfinite(coord).all(1)).sum())} points have NaN or infinite coordinates"
    n = len(coord)
    for key, value in scene.items():
        if key in DTYPES and len(value) != n:
            return f"{key} has {len(value)} rows for {n} points"
    return None


def write_scene(scene_dir: str | os.PathLike, scene: Mapping[str, np.ndarray]) -> Path:
    """Write ``scene`` (name -> array) as ``<scene_dir>/<name>.npy``, atomically.

    Raises ``ValueError`` naming the scene when it cannot train (see :func:`scene_problem`).
    """
    scene_dir = Path(scene_dir)
    problem = scene_problem(scene)
    if problem:
        raise ValueError(f"scene {scene_dir.name}: {problem}")
    scene_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(scene_dir)
    tmp.mkdir()
    try:
        for key, value in scene.items():
            arr = np.asarray(value)
            if key in DTYPES:
                arr = arr.astype(DTYPES[key], copy=False)
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        # Another process may finish the same scene at the same moment; both hold the same arrays.
        replace_dir(tmp, scene_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return scene_dir


def add_arrays(scene_dir: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Add arrays (e.g. 2D feature targets) to a finished scene, each file written atomically.

    Several arrays are not added as one: a caller that needs them together marks them finished with
    a file written last (as CMD's feature pass does with its json).
    """
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise FileNotFoundError(f"scene folder {scene_dir} does not exist")
    for key, value in arrays.items():
        save_npy_atomic(scene_dir / f"{key}.npy", value)


def read_scene(scene_dir: str | os.PathLike, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Load the arrays of one scene folder (all of them, or ``keys``); no pickles are loaded."""
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        raise FileNotFoundError(f"scene folder {scene_dir} does not exist")
    files = sorted(scene_dir.glob("*.npy")) if keys is None else [scene_dir / f"{k}.npy" for k in keys]
    out = {}
    for f in files:
        if f.name.startswith("."):
            continue
        if not f.is_file():
            raise FileNotFoundError(f"scene {scene_dir.name}: {f.name} is missing ({f})")
        out[f.stem] = load_npy(f)
    return out


def list_scenes(root: str | os.PathLike, split: str) -> list[Path]:
    """Finished scene folders of ``<root>/<split>``, sorted by name (temporary folders excluded)."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        return []
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scene_dir_problem(scene_dir: str | os.PathLike, keys: Sequence[str] = ("coord",)) -> str | None:
    """Why a scene folder cannot be read or train, or None: a missing array of ``keys``, an array file
    that is truncated, pickled or not ``.npy`` (names the file), or a problem of :func:`scene_problem`.
    Reads array headers and ``coord``; the other arrays are only mapped."""
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir():
        return "the folder is missing"
    for key in keys:
        if not (scene_dir / f"{key}.npy").is_file():
            return f"{key}.npy is missing"
    arrays = {}
    for f in sorted(scene_dir.glob("*.npy")):
        if f.name.startswith("."):
            continue
        problem = npy_problem(f)
        if problem:
            return f"{f.name}: {problem}"
        if f.stem in DTYPES:
            arrays[f.stem] = np.load(f, allow_pickle=False, mmap_mode="r")
    if "coord" in arrays:
        arrays["coord"] = np.asarray(arrays["coord"])
    return scene_problem(arrays)


def usable_scenes(scene_dirs: Iterable[Path], keys: Sequence[str] = ("coord",)) -> list[Path]:
    """Scenes that can be read (every array of ``keys`` present, no damaged array) and can train;
    each one that cannot is skipped with a warning naming it and why."""
    keep = []
    for d in scene_dirs:
        problem = scene_dir_problem(d, keys)
        if problem:
            warnings.warn(f"skipping scene {d}: {problem}", stacklevel=2)
        else:
            keep.append(d)
    return keep


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short stable hash of preparation settings: a changed setting gives a new cache folder."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-1 of a file's bytes (16 hex digits): what a cache records of an input it was computed from."""
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


#: the arrays a scene's super-voxels, grown regions and descriptors are computed from
SOURCE_KEYS = ("coord", "color", "normal")


def source_digests(scene_dir: Path, keys: Sequence[str] = SOURCE_KEYS) -> dict[str, str | None]:
    """What the caches computed from a scene's arrays record of them: the :func:`file_digest` of each
    ``<key>.npy`` of ``keys`` (by default ``coord``, ``color`` and ``normal``, what the super-voxels,
    grown regions and descriptors read), None where the scene has no such file (no colour, or normals
    estimated from the points), so that an array added, replaced or removed since makes them stale."""
    paths = {key: Path(scene_dir) / f"{key}.npy" for key in keys}
    return {key: file_digest(path) if path.is_file() else None for key, path in paths.items()}


def color_scale_problem(scene_dir: str | os.PathLike) -> str | None:
    """Why ``color.npy`` looks like colours in 0-1 where 0-255 are read (every reader divides by 255, so
    they would pass as near-black, silently), or None. Only float arrays are checked: a uint8 array is
    0-255 whatever its values. ``unsup3d import`` converts 0-1 colours as it writes them."""
    path = Path(scene_dir) / "color.npy"
    if not path.is_file():
        return None
    color = np.load(path, mmap_mode="r", allow_pickle=False)
    if not np.issubdtype(color.dtype, np.floating) or color.size == 0:
        return None
    top = float(np.nanmax(color))
    if top <= 1.0:
        return (
            f"{path}: colours in [{float(np.nanmin(color)):g}, {top:g}], read as 0-255 they are "
            "near-black; write them times 255 (or as uint8), or write the scenes with `unsup3d import`, "
            "which converts them"
        )
    return None


def scene_normals(scene_dir: Path, coord: np.ndarray) -> np.ndarray | None:
    """The scene's own unit normals (``normal.npy``, e.g. from the scanner or the mesh) for the super-voxel
    graph and the grown regions, or None to estimate them all from the points ``coord`` (N, 3): where
    the file is missing, of the wrong shape or holds no usable row (a warning names it).

    Rows that are non-finite or zero (a mesh vertex that no face touches has no normal) are estimated
    from the points (PCA of 16 neighbours, as without the file) and the others kept, scaled to unit
    length, so that a few bad rows do not cost the whole scene its normals; a warning counts them.
    """
    path = scene_dir / "normal.npy"
    if not path.is_file():
        return None
    n = len(coord)
    normal = load_npy(path).astype(np.float32)
    if normal.shape != (n, 3):
        warnings.warn(
            f"{path}: shape {normal.shape}, not ({n}, 3); super-voxels use normals estimated from the "
            "points instead",
            stacklevel=2,
        )
        return None
    with np.errstate(invalid="ignore", over="ignore"):
        length = np.linalg.norm(normal, axis=1)
    ok = np.isfinite(normal).all(axis=1) & (length > 1e-6)
    bad = int((~ok).sum())
    if bad and (bad == n or n < 3):  # none usable, or too few points to estimate the bad rows alone
        what = f"no usable normal among {n}" if bad == n else f"{bad} of {n} normals unusable, too few points"
        warnings.warn(
            f"{path}: {what} (non-finite or zero); super-voxels use normals estimated from the points "
            "instead",
            stacklevel=2,
        )
        return None
    out = normal / np.where(ok, length, 1.0)[:, None]
    if bad:
        from unsup3d.data.superpoints import estimate_normals  # scipy's k-NN, only where it is needed

        warnings.warn(
            f"{path}: {bad} of {n} normals are non-finite or zero; those are estimated from "
            "the points, the others kept",
            stacklevel=2,
        )
        out[~ok] = estimate_normals(coord, workers=1)[~ok]
    return out.astype(np.float32)
