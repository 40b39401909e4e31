"""A diagnostic teacher for the PointDC ablation: CMD targets that know the ground-truth classes.

``write_oracle_targets`` replaces the teacher features that the feature pass lifted onto the seen
points of each training scene by a noisy embedding of the point's ground-truth class (one random
vector per class, the unlabelled points their own, Gaussian noise on every point), keeping which
points were seen, the dimension and the dtype. It uses labels, so what is trained from it is **not**
a result of the method: it is an upper bound on the 2D side that tests the 3D side (distillation into
the point network, clustering, SVC) where the real teacher cannot be had. ``cmd_target.json`` gets an
``"oracle"`` entry saying so; the feature pass's own settings stay, so the next preparation keeps the
targets (use a data root of its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from unsup3d.data.prepare import load_npy, save_npy_atomic, write_json_atomic
from unsup3d.pointdc.feature_pass import SEEN_KEY, SETTINGS_FILE, TARGET_KEY


def class_table(num_classes: int, dim: int, seed: int = 0) -> np.ndarray:
    """``(num_classes + 1, dim)`` float32 standard-normal embeddings; the last row: unlabelled points."""
    return np.random.default_rng(seed).standard_normal((num_classes + 1, dim)).astype(np.float32)


def oracle_features(
    segment: np.ndarray, table: np.ndarray, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """``(P, D)`` float32: row ``i`` is ``table``'s row of class ``segment[i]`` (its last row where the id
    is negative or past the table) plus N(0, ``noise``^2) noise drawn from ``rng``."""
    num_classes = len(table) - 1
    ids = np.where((segment < 0) | (segment >= num_classes), num_classes, segment)
    return (table[ids] + noise * rng.standard_normal((len(segment), table.shape[1]))).astype(np.float32)


def write_oracle_targets(
    scene_dirs: Iterable[Path], *, num_classes: int, noise: float = 0.7, seed: int = 0
) -> int:
    """Overwrite each scene's ``cmd_target.npy`` on its seen points with ``oracle_features`` (see the
    module docstring); points no view saw keep zeros. The class table is the same for every scene
    (``class_table(num_classes, D, seed)``). Returns the number of scenes written."""
    rng = np.random.default_rng(seed + 1)
    written = 0
    for d in map(Path, scene_dirs):
        target = load_npy(d / f"{TARGET_KEY}.npy")
        seen = load_npy(d / f"{SEEN_KEY}.npy").astype(bool)
        segment = load_npy(d / "segment.npy").astype(np.int64)
        feats = oracle_features(segment, class_table(num_classes, target.shape[1], seed), noise, rng)
        save_npy_atomic(d / f"{TARGET_KEY}.npy", np.where(seen[:, None], feats, 0.0).astype(target.dtype))
        record = json.loads((d / SETTINGS_FILE).read_text())
        record["oracle"] = {
            "what": "ground-truth class embeddings + noise (benchmarks/_oracle_teacher.py): a diagnostic, "
            "not a teacher",
            "noise": noise,
            "seed": seed,
        }
        write_json_atomic(d / SETTINGS_FILE, record)
        written += 1
    return written
