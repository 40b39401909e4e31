"""The scene-folder layout every dataset is converted to (Pointcept-compatible).

``<root>/<split>/<scene>/{coord,color,normal,segment,instance}.npy`` plus unsup3d's
``superpoint.npy`` and, after CMD's feature pass, its 2D feature targets. ``coord`` is float32
metres, ``color`` uint8 0-255, ``segment`` int64 class id or -1, ``superpoint`` int64 or -1.

A scene is written into a hidden temporary folder and renamed into place, so a reader never sees a
half-written scene and a killed preparation leaves nothing that looks finished. Every ``.npy`` is
read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
    tmp = scene_dir.parent / f".{scene_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for key, value in scene.items():
            arr = np.asarray(value)
            if key in DTYPES:
                arr = arr.astype(DTYPES[key], copy=False)
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        _replace_dir(tmp, scene_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return scene_dir


def add_arrays(scene_dir: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Add arrays (e.g. 2D feature targets) to a finished scene, each file written atomically."""
    scene_dir = Path(scene_dir)
    for key, value in arrays.items():
        tmp = scene_dir / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy"
        np.save(tmp, np.ascontiguousarray(value), allow_pickle=False)
        os.replace(tmp, scene_dir / f"{key}.npy")


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists():
        # Another process may have finished the same scene first: both wrote the same bytes, so
        # keeping theirs is correct; but a re-preparation must replace, so move the old one aside.
        old = dst.parent / f".{dst.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dst, old)
        os.rename(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(src, dst)


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
        try:
            out[f.stem] = np.load(f, allow_pickle=False)
        except ValueError as e:
            raise ValueError(f"{f}: cannot be read as a plain numpy array ({e})") from e
    return out


def list_scenes(root: str | os.PathLike, split: str) -> list[Path]:
    """Finished scene folders of ``<root>/<split>``, sorted by name (temporary folders excluded)."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        return []
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def usable_scenes(scene_dirs: Iterable[Path]) -> list[Path]:
    """Scenes that can train; each one that cannot is skipped with a warning naming it."""
    keep = []
    for d in scene_dirs:
        coord = np.load(d / "coord.npy", allow_pickle=False, mmap_mode="r")
        problem = scene_problem({"coord": np.asarray(coord)})
        if problem:
            warnings.warn(f"skipping scene {d}: {problem}", stacklevel=2)
        else:
            keep.append(d)
    return keep


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short stable hash of preparation settings: a changed setting gives a new cache folder."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]
