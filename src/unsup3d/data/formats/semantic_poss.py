"""SemanticPOSS: the SemanticKITTI layout (``sequences/00..05/{velodyne,labels,calib.txt,poses.txt}``)
with its own label set. STSSL fine-tunes on it; the authors never released their loader.

The file readers are SemanticKITTI's, re-exported here so that code reads ``semantic_poss.read_scan``;
only the learning map and the split differ. SemanticPOSS also ships ``tag/*.tag`` range-image masks,
which nothing in unsup3d uses.
"""

from __future__ import annotations

import numpy as np

from ._checks import PathLike
from .semantic_kitti import (
    Frame,
    apply_lut,
    label_lut,
    list_frames,
    read_calib,
    read_labels,
    read_poses,
    read_scan,
    read_times,
)

__all__ = [
    "CLASS_NAMES",
    "Frame",
    "IGNORE_INDEX",
    "LEARNING_MAP",
    "SPLITS",
    "list_frames",
    "map_labels",
    "read_calib",
    "read_labels",
    "read_poses",
    "read_scan",
    "read_times",
    "split_sequences",
]

# The split every published SemanticPOSS result we know of uses (SqueezeSegV2-derived code, PolarMix,
# the semantic-poss yaml configs in public repos): sequence 03 held out, the rest for training.
# There is no official test set.
SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("00", "01", "02", "04", "05"),
    "val": ("03",),
}

# fmt: off
# semantic-poss.yaml: raw ids 4/5 (one / several people) merge to person, the three traffic-sign ids
# merge; 0 unlabeled and the unused ids 1-3, 18-20 are ignored (-1). 13 classes, 0..12.
LEARNING_MAP: dict[int, int] = {
    0: -1, 1: -1, 2: -1, 3: -1, 4: 0, 5: 0, 6: 1, 7: 2, 8: 3, 9: 4, 10: 5, 11: 5, 12: 5,
    13: 6, 14: 7, 15: 8, 16: 9, 17: 10, 18: -1, 19: -1, 20: -1, 21: 11, 22: 12,
}

CLASS_NAMES: tuple[str, ...] = (
    "person", "rider", "car", "trunk", "plants", "traffic-sign", "pole", "trashcan", "building",
    "cone/stone", "fence", "bike", "ground",
)
# fmt: on

IGNORE_INDEX = -1

_LUT = label_lut(LEARNING_MAP)


def split_sequences(split: str) -> tuple[str, ...]:
    """Sequence names of a split: ``train`` (00-02, 04-05) or ``val`` (03)."""
    if split not in SPLITS:
        raise ValueError(f"unknown SemanticPOSS split {split!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[split]


def map_labels(semantic_raw: np.ndarray, path: PathLike | None = None) -> np.ndarray:
    """Raw SemanticPOSS ids -> int64 classes 0..12 (``CLASS_NAMES``), -1 ignored."""
    return apply_lut(semantic_raw, _LUT, "SemanticPOSS", path)
