"""Bring your own data: turn a folder of PLY or NPY scenes into the scene-folder layout.

:func:`import_scenes` reads each scene of a source folder and writes it as
``<root>/<split>/<scene>/{coord,color,normal?,segment}.npy`` (:mod:`unsup3d.data.scene_folder`), which
:class:`~unsup3d.data.indoor_datamodules.SceneFolderDataModule` trains on (its ``prepare_data`` adds the
super-voxels, on the scene's normals where it has them). Accepted scenes, one per entry of the source
folder, named by the file stem or folder name:

- ``<scene>.ply``: a ``vertex`` element with ``x y z``, optionally colour (``red green blue``, or the
  ``diffuse_`` / ``r g b`` spellings), normals (``nx ny nz``) and a per-point label (``label``,
  ``class``, ``semantic``, ``segment``, ``scalar_label`` or ``category``, or the ``label_field`` given);
- ``<scene>.npy``: one ``(N, 3)`` xyz, ``(N, 6)`` xyz + rgb or ``(N, 7)`` xyz + rgb + label array;
- ``<scene>/`` holding ``coord.npy`` ``(N, 3)`` and optionally ``color.npy``, ``normal.npy``, and
  ``segment.npy`` (or ``segment20.npy``, Pointcept's ScanNet-20 labels, or ``label.npy``) ``(N,)``: a
  scene folder of another project (e.g. Pointcept).

Colours may be integers 0-255 or floats; float colours whose maximum is at most 1 are read as
0-1 (the PLY and Open3D convention), larger ones as 0-255. A scene without colour gets mid-grey (128)
so that the colour inputs of the network are zero; a scene without labels gets segment -1 (no
validation metric can be computed on it). Labels pass through ``label_map`` (raw id -> class id,
ids not in it become -1) when one is given; negative labels are -1.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from unsup3d.data.formats.ply import read_ply
from unsup3d.data.scene_folder import write_scene

PathLike = str | os.PathLike

#: PLY vertex properties read as the per-point label, in order of preference.
LABEL_FIELDS: tuple[str, ...] = ("label", "class", "semantic", "segment", "scalar_label", "category")
_COLOR_FIELDS = (("red", "green", "blue"), ("diffuse_red", "diffuse_green", "diffuse_blue"), ("r", "g", "b"))
#: colour of a scene that has none: mid-grey, whose network input (colour / 255 - 0.5) is about zero.
NO_COLOR = 128
_NPY_LAYOUTS = "(N, 3) xyz, (N, 6) xyz + rgb, or (N, 7) xyz + rgb + label"


def as_uint8_color(color: np.ndarray, source: PathLike) -> np.ndarray:
    """``(N, 3)`` colours as uint8 0-255: floats with maximum <= 1 are scaled by 255, other values kept.

    ``ValueError`` naming ``source`` for a wrong shape or values outside 0-255 (after scaling).
    """
    color = np.asarray(color)
    if color.ndim != 2 or color.shape[1] != 3:
        raise ValueError(f"{source}: colours must be (N, 3), got shape {color.shape}")
    if color.dtype == np.uint8:
        return color
    if color.dtype.kind not in "fiu":
        raise ValueError(f"{source}: colours must be numbers, got dtype {color.dtype}")
    values = color.astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{source}: colours hold NaN or infinite values")
    if color.dtype.kind == "f" and len(values) and values.max() <= 1.0:
        values = values * 255.0
    if len(values) and (values.min() < 0 or values.max() > 255):
        raise ValueError(
            f"{source}: colours span [{color.min()}, {color.max()}]; expected 0-255 or floats in 0-1"
        )
    return np.rint(values).astype(np.uint8)


def _labels(raw: np.ndarray, source: PathLike, label_map: Mapping[int, int] | None) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise ValueError(f"{source}: labels must be one id a point, got shape {raw.shape}")
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
            raise ValueError(f"{source}: labels must be whole numbers (got non-integer floats)")
    elif raw.dtype.kind not in "iu":
        raise ValueError(f"{source}: labels must be integer ids, got dtype {raw.dtype}")
    ids = raw.astype(np.int64)
    if label_map is not None:
        uniq, inverse = np.unique(ids, return_inverse=True)
        ids = np.array([label_map.get(int(u), -1) for u in uniq], dtype=np.int64)[inverse]
    return np.where(ids >= 0, ids, -1)


def _read_ply_scene(path: Path, label_field: str | None) -> dict[str, np.ndarray]:
    mesh = read_ply(path)
    names = mesh.vertex.dtype.names or ()
    scene = {"coord": np.stack([mesh.field(k) for k in ("x", "y", "z")], axis=1)}
    triple = next((t for t in _COLOR_FIELDS if all(k in names for k in t)), None)
    if triple is not None:
        scene["color"] = np.stack([mesh.vertex[k] for k in triple], axis=1)
    if all(k in names for k in ("nx", "ny", "nz")):
        scene["normal"] = np.stack([mesh.vertex[k] for k in ("nx", "ny", "nz")], axis=1)
    if label_field is not None:
        scene["segment"] = mesh.field(label_field)
    else:
        found = next((k for k in LABEL_FIELDS if k in names), None)
        if found is not None:
            scene["segment"] = mesh.vertex[found]
    return scene


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot be read as a plain numpy array ({e})") from None


def _read_npy_scene(path: Path) -> dict[str, np.ndarray]:
    arr = _load_npy(path)
    if arr.ndim != 2 or arr.shape[1] not in (3, 6, 7):
        raise ValueError(f"{path}: array of shape {arr.shape}; expected {_NPY_LAYOUTS}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{path}: array of dtype {arr.dtype}; expected numbers")
    scene = {"coord": arr[:, :3]}
    if arr.shape[1] >= 6:
        scene["color"] = arr[:, 3:6]
    if arr.shape[1] == 7:
        scene["segment"] = arr[:, 6]
    return scene


def _read_folder_scene(path: Path) -> dict[str, np.ndarray]:
    if not (path / "coord.npy").is_file():
        raise ValueError(
            f"{path}: a scene folder needs coord.npy (found {sorted(p.name for p in path.iterdir())})"
        )
    scene = {"coord": _load_npy(path / "coord.npy")}
    names = {"color": ["color"], "normal": ["normal"], "segment": ["segment", "segment20", "label"]}
    for key, files in names.items():
        f = next((path / f"{n}.npy" for n in files if (path / f"{n}.npy").is_file()), None)
        if f is not None:
            scene[key] = _load_npy(f)
    return scene


def read_user_scene(
    path: PathLike, *, label_field: str | None = None, label_map: Mapping[int, int] | None = None
) -> dict[str, np.ndarray]:
    """One scene (a ``.ply``, a ``.npy`` or a scene folder; see the module docstring) as the arrays of a
    scene folder: ``coord`` float32, ``color`` uint8, ``segment`` int64 (-1 unlabelled), ``normal``
    float32 when the source has normals. Points with non-finite coordinates are dropped with a warning.

    ``ValueError`` naming the file for anything malformed (unknown layout, wrong shapes, colours out of
    range, ragged arrays).
    """
    path = Path(path)
    if path.is_dir():
        raw = _read_folder_scene(path)
    elif path.suffix.lower() == ".ply":
        raw = _read_ply_scene(path, label_field)
    elif path.suffix.lower() == ".npy":
        raw = _read_npy_scene(path)
    elif not path.exists():
        raise FileNotFoundError(f"{path}: does not exist")
    else:
        raise ValueError(f"{path}: not a scene (expected a .ply, a .npy or a folder with coord.npy)")

    coord = np.asarray(raw["coord"])
    if coord.ndim != 2 or coord.shape[1] != 3 or coord.dtype.kind not in "fiu":
        raise ValueError(
            f"{path}: coordinates must be numbers of shape (N, 3), got {coord.dtype} {coord.shape}"
        )
    n = len(coord)
    for key, value in raw.items():
        if np.shape(value)[:1] != (n,):
            raise ValueError(f"{path}: {key} has shape {np.shape(value)} for {n} points")
    scene = {"coord": coord.astype(np.float32)}
    scene["color"] = (
        as_uint8_color(raw["color"], path) if "color" in raw else np.full((n, 3), NO_COLOR, np.uint8)
    )
    if "normal" in raw:
        normal = np.asarray(raw["normal"], dtype=np.float32)
        if normal.shape != (n, 3):
            raise ValueError(f"{path}: normals must be (N, 3), got shape {normal.shape}")
        scene["normal"] = np.nan_to_num(normal, nan=0.0, posinf=0.0, neginf=0.0)
    scene["segment"] = (
        _labels(raw["segment"], path, label_map) if "segment" in raw else np.full(n, -1, np.int64)
    )
    finite = np.isfinite(scene["coord"]).all(axis=1)
    if not finite.all():
        warnings.warn(
            f"{path}: dropping {int((~finite).sum())} of {n} points with NaN or infinite coordinates",
            stacklevel=2,
        )
        scene = {k: v[finite] for k, v in scene.items()}
    return scene


def find_scenes(src: PathLike) -> list[Path]:
    """The scenes of a source folder, sorted by name: ``*.ply``, ``*.npy`` and sub-folders.

    Hidden entries are ignored; any other file is skipped with a warning naming it.
    """
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source folder does not exist")
    scenes = []
    for p in sorted(src.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_dir() or p.suffix.lower() in (".ply", ".npy"):
            scenes.append(p)
        else:
            warnings.warn(f"{p}: not a scene (.ply, .npy or folder), ignored", stacklevel=2)
    return scenes


def _scene_name(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def assign_splits(
    names: Sequence[str],
    split: str | Mapping[str, Sequence[str]] = "train",
    val_fraction: float = 0.0,
    seed: int = 0,
) -> dict[str, str]:
    """Scene name -> split.

    ``split`` is one split for every scene, or ``{split: [scene names]}`` naming every scene
    explicitly. With a single split and ``val_fraction > 0``, ``round(val_fraction * n)`` scenes (at
    least one, and never all) drawn by a generator seeded with ``seed`` go to ``"val"`` instead.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"import_scenes: val_fraction must be in [0, 1), got {val_fraction}")
    if isinstance(split, str):
        out = dict.fromkeys(names, split)
        if val_fraction > 0 and len(names) > 1:
            k = min(max(1, round(val_fraction * len(names))), len(names) - 1)
            for i in np.random.default_rng(seed).permutation(len(names))[:k]:
                out[names[int(i)]] = "val"
        return out
    if val_fraction > 0:
        raise ValueError("import_scenes: give either explicit splits or a val_fraction, not both")
    out = {}
    for name, members in split.items():
        for scene in members:
            if scene in out:
                raise ValueError(
                    f"import_scenes: scene {scene!r} is listed in splits {out[scene]!r} and {name!r}"
                )
            out[scene] = name
    unknown = sorted(set(out) - set(names))
    if unknown:
        raise ValueError(f"import_scenes: splits name scenes that are not in the source: {unknown}")
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(f"import_scenes: scenes in no split: {missing} (list them, or use one split name)")
    return out


def import_scenes(
    src: PathLike | Sequence[PathLike],
    root: PathLike,
    *,
    split: str | Mapping[str, Sequence[str]] = "train",
    val_fraction: float = 0.0,
    seed: int = 0,
    label_field: str | None = None,
    label_map: Mapping[int, int] | None = None,
) -> list[Path]:
    """Convert PLY / NPY scenes into ``<root>/<split>/<scene>/*.npy`` and return the folders written.

    ``src`` is a folder whose entries are scenes (:func:`find_scenes`) or a list of scene paths; the
    formats and conventions are those of the module docstring. ``split`` / ``val_fraction`` / ``seed``
    place the scenes (:func:`assign_splits`). Each scene is written atomically, replacing a scene of the
    same name in its split; a scene with no finite point is skipped with a warning naming it.
    ``ValueError`` naming the file for a malformed scene, and before anything is written for two
    sources with one scene name.
    """
    if isinstance(src, (str, os.PathLike)):
        paths = [Path(src)] if Path(src).is_file() else find_scenes(src)
    else:
        paths = [Path(p) for p in src]
    by_name: dict[str, Path] = {}
    for p in paths:
        name = _scene_name(p)
        if name in by_name:
            raise ValueError(f"import_scenes: {by_name[name]} and {p} are both scene {name!r}")
        by_name[name] = p
    splits = assign_splits(list(by_name), split, val_fraction, seed)
    root = Path(root)
    written = []
    for name, path in tqdm(by_name.items(), desc="importing scenes", unit="scene", dynamic_ncols=True):
        scene = read_user_scene(path, label_field=label_field, label_map=label_map)
        if len(scene["coord"]) == 0:
            warnings.warn(
                f"{path}: scene {name!r} has no points with finite coordinates; skipped", stacklevel=2
            )
            continue
        # A scene left in another split by an earlier import would be trained or validated on twice.
        for old in root.glob(f"*/{name}"):
            if old.is_dir() and old.parent.name != splits[name]:
                warnings.warn(
                    f"scene {name!r} is also in {old} (an earlier import?); remove it", stacklevel=2
                )
        written.append(write_scene(root / splits[name] / name, scene))
    return written


__all__ = [
    "LABEL_FIELDS",
    "NO_COLOR",
    "as_uint8_color",
    "assign_splits",
    "find_scenes",
    "import_scenes",
    "read_user_scene",
]
