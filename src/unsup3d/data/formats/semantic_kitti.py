"""Readers for KITTI odometry / SemanticKITTI sequences (STSSL's pre-training and fine-tuning data).

Layout of one sequence folder (``dataset/sequences/<NN>/``)::

    velodyne/<frame>.bin   float32 x, y, z, intensity per point (LiDAR frame, metres)
    labels/<frame>.label   uint32 per point: low 16 bits semantic raw id, high 16 bits instance id
    calib.txt              "P0: 12 numbers" ... "Tr: 12 numbers" (Tr: LiDAR -> camera 0)
    poses.txt              12 numbers a row: the 3x4 pose of camera 0 in the first camera frame
    times.txt              one timestamp (seconds) a row

Plain KITTI odometry has no ``labels/``; every reader here works without it. SemanticPOSS uses the same
layout and these same readers (see ``semantic_poss``).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._checks import (
    PathLike,
    check_count,
    check_finite,
    existing_file,
    parse_floats,
    read_binary,
    read_float_rows,
    read_points,
)

# Official split of semantic-kitti.yaml: labels exist for 00-10, 11-21 are the hidden test set.
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"),
    "val": ("08",),
    "test": tuple(f"{i:02d}" for i in range(11, 22)),
}

# fmt: off
# semantic-kitti.yaml ``learning_map``, shifted down by one so that the 19 classes are 0..18 and the
# yaml's class 0 ("unlabeled", plus outlier / other-structure / other-object) is our ignore value -1.
LEARNING_MAP: dict[int, int] = {
    0: -1, 1: -1, 10: 0, 11: 1, 13: 4, 15: 2, 16: 4, 18: 3, 20: 4, 30: 5, 31: 6, 32: 7,
    40: 8, 44: 9, 48: 10, 49: 11, 50: 12, 51: 13, 52: -1, 60: 8, 70: 14, 71: 15, 72: 16,
    80: 17, 81: 18, 99: -1,
    # Moving objects: the multi-scan benchmark separates them; single-scan segmentation does not.
    252: 0, 253: 6, 254: 5, 255: 7, 256: 4, 257: 4, 258: 3, 259: 4,
}

CLASS_NAMES: tuple[str, ...] = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
    "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk",
    "terrain", "pole", "traffic-sign",
)
# fmt: on

# semantic-kitti.yaml ``learning_map_inv``: class -> the raw id a benchmark submission must contain.
CLASS_RAW_IDS: tuple[int, ...] = (10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81)

IGNORE_INDEX = -1
_UNKNOWN = -2  # a LUT entry for a raw id the learning map does not know


class Frame(NamedTuple):
    """One frame of a sequence: its id (``"000000"``), scan file, and label file or None."""

    frame_id: str
    scan: Path
    labels: Path | None


def split_sequences(split: str) -> tuple[str, ...]:
    """The sequence names of an official split: ``train`` (00-07, 09-10), ``val`` (08), ``test`` (11-21)."""
    if split not in SPLITS:
        raise ValueError(f"unknown SemanticKITTI split {split!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[split]


def read_scan(path: PathLike, *, drop_nonfinite: bool = False) -> np.ndarray:
    """Read a velodyne ``.bin`` scan: float32 ``(N, 4)`` of x, y, z, intensity.

    A NaN or infinite value is an error naming the file; ``drop_nonfinite=True`` removes those points
    instead, with a warning (the labels of such a scan then no longer line up, so use it only on
    unlabelled data).
    """
    return read_points(path, 4, drop_nonfinite)


def read_labels(path: PathLike, num_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``.label`` file: ``(semantic, instance)``, both int64 ``(N,)``.

    ``semantic`` is the raw SemanticKITTI id (the low 16 bits; map it with ``map_labels``),
    ``instance`` the high 16 bits (0 where none). ``num_points`` checks the count against the scan.
    """
    raw = read_binary(path, np.uint32)
    check_count(len(raw), num_points, path)
    return (raw & 0xFFFF).astype(np.int64), (raw >> 16).astype(np.int64)


def label_lut(learning_map: dict[int, int]) -> np.ndarray:
    """A lookup table ``raw id -> class`` over 0..max raw id; ids the map lacks hold -2."""
    lut = np.full(max(learning_map) + 1, _UNKNOWN, dtype=np.int64)
    for raw, cls in learning_map.items():
        lut[raw] = cls
    return lut


_LUT = label_lut(LEARNING_MAP)


def apply_lut(raw: np.ndarray, lut: np.ndarray, dataset: str, path: PathLike | None = None) -> np.ndarray:
    """Map raw ids through ``lut``; a raw id the map lacks is a ``ValueError`` naming it (and the file)."""
    raw = np.asarray(raw)
    out = np.full(raw.shape, _UNKNOWN, dtype=np.int64)
    inside = (raw >= 0) & (raw < len(lut))
    out[inside] = lut[raw[inside]]
    if (out == _UNKNOWN).any():
        unknown = np.unique(raw[out == _UNKNOWN])[:10].tolist()
        where = f"{path}: " if path is not None else ""
        raise ValueError(f"{where}raw label ids {unknown} are not in the {dataset} learning map")
    return out


def map_labels(semantic_raw: np.ndarray, path: PathLike | None = None) -> np.ndarray:
    """Raw SemanticKITTI ids -> int64 classes 0..18 (``CLASS_NAMES``), -1 ignored (semantic-kitti.yaml).

    STSSL's fine-tuning numbers the same classes 1..19 with 0 ignored: ours is theirs minus one.
    """
    return apply_lut(semantic_raw, _LUT, "SemanticKITTI", path)


def read_calib(path: PathLike) -> dict[str, np.ndarray]:
    """Read ``calib.txt``: ``{"P0".."P3": float64 (3, 4), "Tr": float64 (4, 4)}``.

    Every ``KEY: numbers`` line is kept: 12 numbers become a 3x4 matrix, or 4x4 with the row
    ``0 0 0 1`` for keys starting with ``Tr`` (rigid transforms); other counts stay flat.
    """
    p = existing_file(path)
    calib: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(p.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        key = key.strip()
        if not sep or not key or " " in key:
            raise ValueError(f"{p}:{lineno}: expected 'KEY: numbers', found {line[:40]!r}")
        values = np.asarray(parse_floats(rest.split(), p, lineno), dtype=np.float64)
        check_finite(values, f"{p}:{lineno}", "calibration values")
        if len(values) == 12:
            values = values.reshape(3, 4)
            if key.startswith("Tr"):
                values = np.vstack([values, [0.0, 0.0, 0.0, 1.0]])
        calib[key] = values
    if not calib:
        raise ValueError(f"{p}: no calibration entries")
    return calib


def read_camera_poses(path: PathLike) -> np.ndarray:
    """Read ``poses.txt`` as given: float64 ``(T, 4, 4)`` poses of camera 0 (KITTI's convention)."""
    rows = read_float_rows(path, 12)
    check_finite(rows, path, "poses")
    poses = np.zeros((len(rows), 4, 4))
    poses[:, :3, :] = rows.reshape(-1, 3, 4)
    poses[:, 3, 3] = 1.0
    return poses


def read_poses(poses_path: PathLike, calib_path: PathLike) -> np.ndarray:
    """Poses of the LiDAR: float64 ``(T, 4, 4)`` mapping frame t's points into frame 0's LiDAR frame.

    KITTI's poses are of camera 0, and ``Tr`` maps LiDAR to camera 0, so
    ``pose_lidar = inv(Tr) @ pose_cam @ Tr`` (as the semantic-kitti-api does).
    """
    calib = read_calib(calib_path)
    tr = calib.get("Tr")
    if tr is None or tr.shape != (4, 4):
        raise ValueError(f"{calib_path}: no 12-number 'Tr' entry (LiDAR -> camera transform)")
    cam = read_camera_poses(poses_path)
    return np.linalg.inv(tr) @ cam @ tr


def read_times(path: PathLike) -> np.ndarray:
    """Read ``times.txt``: float64 ``(T,)`` seconds since the start of the sequence."""
    times = read_float_rows(path, 1)[:, 0]
    return check_finite(times, path, "timestamps")


def list_frames(sequence_dir: PathLike, *, require_labels: bool = False) -> list[Frame]:
    """The frames of a sequence folder, sorted by id; ``labels`` is None where a frame has no label file.

    ``require_labels=True`` makes a missing label file an error (a labelled split must be complete).
    """
    seq = Path(sequence_dir)
    velodyne = seq / "velodyne"
    if not velodyne.is_dir():
        raise FileNotFoundError(f"{velodyne}: no velodyne folder in sequence {seq}")
    frames = []
    for scan in sorted(velodyne.glob("*.bin")):
        label = seq / "labels" / f"{scan.stem}.label"
        if not label.is_file():
            if require_labels:
                raise FileNotFoundError(f"{label}: label file missing for scan {scan}")
            label = None
        frames.append(Frame(scan.stem, scan, label))
    if not frames:
        raise ValueError(f"{velodyne}: no .bin scans")
    return frames
