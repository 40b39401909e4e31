"""The teacher-free path's preparation: hand-made descriptors written into every scene folder, once.

Each scene of the data module's splits receives ``region.npy`` (int64 ``(N,)``, grown super-voxels:
:func:`grow_regions`), ``descriptor.npy`` (float32 ``(N, 14)``,
:func:`unsup3d.pointdc.geometric.point_descriptors` on its points, colours and regions) and
``descriptor.json`` (the settings and digests of the arrays they are computed from:
:func:`scene_settings`), written last: a scene whose json records the same is skipped, a changed setting
(or a ``coord.npy``, ``color.npy`` or ``normal.npy`` added, replaced or removed) recomputes it, an
interrupted scene never looks finished. Batches carry the
descriptors as the per-point ``descriptor`` key: SVC joins them to its clustering features
(``SVCModule(descriptor_weights=...)``) and CMD can distil them (``CMDModule(target_key="descriptor")``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsup3d.clustering import kmeans
from unsup3d.data.prepare import STALE, Job, npy_problem, run_jobs, write_json_atomic
from unsup3d.data.scene_folder import add_arrays, read_scene, scene_normals, source_digests
from unsup3d.data.superpoints import estimate_normals, felzenszwalb_superpoints
from unsup3d.pointdc.geometric import check_outline, point_descriptors, weight_columns
from unsup3d.vision.projection import superpoint_mean

#: bump when the descriptors a given setting produces change
DESCRIPTOR_VERSION = 3
DESCRIPTOR_KEY = "descriptor"
REGION_KEY = "region"
MERGED_KEY = "merged"
#: group weights of the descriptors that :func:`merge_regions` compares (the teacher-free recipe's)
MERGE_WEIGHTS = {"color": 0.5, "normal": 1.0, "shape": 1.0, "height": 1.0, "context": 1.0, "segment": 1.0}


@dataclass
class Descriptors:
    """Settings of the descriptor pass (a data module's ``descriptors`` init arg).

    Args:
        k: neighbours of the local shape (covariance) features.
        column: cell side (metres) of the vertical-column context.
        column_cap: points higher than this (metres above the floor) do not count as a column's top
            (None: all do). Real scans often hold patches of ceiling, which would otherwise be the top
            of every column under them: on the scan-like rooms with a partial ceiling
            (``benchmarks/rooms_as_scene_folders.py --ceiling``) K-means of the descriptors over the
            regions went from 15.6 to 17.3 % mIoU with the cap (3 seeds), and without a ceiling it
            stayed within the seeds' spread (17.65 against 17.42).
        outline: ``"footprint"`` (the edge of the cells holding points) or ``"hull"`` (the convex
            hull) for the distance-to-outline descriptor. On scan-like rooms with a corner cut out
            (``--l-shaped``) the footprint gave 17.89 against 16.67 % mIoU over the regions (K-means,
            3 seeds), on the convex ones 17.97 against 17.42; the teacher-free SVC row did not gain
            from it (README, stress tests).
        region_c: scale of the grown super-voxels (``region.npy``): Felzenszwalb-Huttenlocher with this
            ``c`` (the super-voxels use 0.1), so that a floor or a wall becomes a few regions instead of
            dozens of super-voxels. The descriptors' ``segment`` group describes these regions, and SVC
            can cluster them (the data module's ``units: region``).
        region_color_weight: weight of the colour difference in the regions' edge weights, beside the
            normals' (the super-voxels use 1.0 too); 0 grows them on the normals alone. Doors, windows,
            pictures and curtains lie in a wall's plane and differ from it by their colour only: on
            normals alone they are part of the wall's region (majority-label ceiling over the regions,
            scan-like rooms: door 7 %, window 9 %, picture 10 % IoU; 62.7 % mIoU), with colour at 1.0
            they are mostly their own (37 / 59 / 77; 75.2 %), and K-means of the descriptors over the
            regions went from 17.97 to 20.05 % mIoU (3 seeds). With the colours made noisier
            (``rooms_as_scene_folders.py --noisy-colour``: sigma 20 and a +-25 % lighting field) 1.0
            still gained (17.17 -> 18.70), where 4.0 cut walls into pieces and lost (17.37).
        merge_regions: with a number ``G``, the pass also writes ``merged.npy``: each scene's regions
            merged into at most ``G`` groups (:func:`merge_regions`, after GrowSP's growing superpoints,
            which ends at 30 a ScanNet scene), that SVC can pool over (the data module's
            ``units: merged``). None (default): not written.
        merge_position_weight: weight of the regions' mean positions (metres) beside their mean
            descriptors when they are merged: how far apart two regions may lie and still merge.
        splits: splits that get descriptors (SVC's validation reads them only where it pools with them).
    """

    k: int = 16
    column: float = 0.3
    column_cap: float | None = 2.0
    outline: str = "footprint"
    region_c: float = 2.0
    region_color_weight: float = 1.0
    merge_regions: int | None = None
    merge_position_weight: float = 0.2
    splits: list[str] = field(default_factory=lambda: ["train", "val"])

    def __post_init__(self) -> None:
        check_outline(self.outline)
        if self.column_cap is not None and self.column_cap <= 0:
            raise ValueError(f"descriptors.column_cap must be positive or null, got {self.column_cap}")
        if self.region_color_weight < 0:
            raise ValueError(f"descriptors.region_color_weight must be >= 0, got {self.region_color_weight}")
        if self.merge_regions is not None and self.merge_regions < 1:
            raise ValueError(f"descriptors.merge_regions must be >= 1 or null, got {self.merge_regions}")
        if self.merge_position_weight < 0:
            w = self.merge_position_weight
            raise ValueError(f"descriptors.merge_position_weight must be >= 0, got {w}")

    def settings(self) -> dict[str, Any]:
        out = {
            "version": DESCRIPTOR_VERSION,
            "k": self.k,
            "column": self.column,
            "region_c": self.region_c,
            "region_color_weight": self.region_color_weight,
            "column_cap": self.column_cap,
            "outline": self.outline,
        }
        if self.merge_regions is not None:  # absent otherwise, so that caches without them stay current
            out.update(merge_regions=self.merge_regions, merge_position_weight=self.merge_position_weight)
        return out


def as_descriptors(value: Descriptors | dict[str, Any] | bool | None) -> Descriptors | None:
    """Accept the dataclass, a plain dict, True (defaults) or None / False (no descriptors)."""
    if value is None or value is False:
        return None
    if value is True:
        return Descriptors()
    if isinstance(value, Descriptors):
        return value
    return Descriptors(**dict(value))


def _settings_file(scene_dir: Path) -> Path:
    return scene_dir / f"{DESCRIPTOR_KEY}.json"


def scene_settings(scene_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What a scene's ``descriptor.json`` records: the pass's ``settings`` (:meth:`Descriptors.settings`)
    and the arrays they are computed from (:func:`~unsup3d.data.scene_folder.source_digests`)."""
    return {**settings, "sources": source_digests(scene_dir)}


def descriptors_problem(scene_dir: Path, settings: dict[str, Any]) -> str | None:
    """Why a scene's descriptors must be (re)computed for the pass's ``settings``, or None when they are
    current: :data:`~unsup3d.data.prepare.STALE` where they were computed with other settings or from
    other arrays (redone without a warning)."""
    f = _settings_file(scene_dir)
    if not f.is_file():
        return "no descriptor.json"
    try:
        recorded = json.loads(f.read_text())
    except (OSError, ValueError):
        return "descriptor.json is unreadable"
    if recorded != scene_settings(scene_dir, settings):
        return STALE
    keys = (DESCRIPTOR_KEY, REGION_KEY) + ((MERGED_KEY,) if "merge_regions" in settings else ())
    for key in keys:  # the pass's output
        problem = npy_problem(scene_dir / f"{key}.npy")
        if problem:
            return f"{key}.npy: {problem}"
    return None


def grow_regions(
    coord: np.ndarray,
    normal: np.ndarray | None,
    c: float,
    color: np.ndarray | None = None,
    color_weight: float = 0.0,
) -> np.ndarray:
    """Grown super-voxels (after GrowSP's growing): Felzenszwalb-Huttenlocher at scale ``c`` on the
    normals and, with ``color`` (0-255) and ``color_weight`` > 0, the colours (edge weight
    ``1 - |n_i . n_j| + color_weight |c_i - c_j| / (255 sqrt 3)``), separately over the
    horizontal-facing points (``|n_z| > 0.7``: floors, table tops, seats) and the others (walls,
    sides), so that a region never turns a corner from a floor into a wall through the blended normals
    there. Fine super-voxels cut a floor or a wall into dozens of pieces, which K-means, counting
    pieces, then splits over several clusters; grown, each is a few regions. The colour keeps what
    lies in a wall's plane and differs only by its colour (a door, a picture) out of the wall's
    region. Ids are 0..R-1."""
    n = len(coord)
    if n < 3:
        return np.zeros(n, dtype=np.int64)
    if normal is None:
        normal = estimate_normals(coord, workers=1)
    out = np.full(n, -1, dtype=np.int64)
    flat = np.abs(normal[:, 2]) > 0.7
    if color is None or color_weight == 0:
        color, color_weight = None, 0.0
    offset = 0
    for part in (flat, ~flat):
        idx = np.flatnonzero(part)
        if len(idx) == 0:
            continue
        if len(idx) < 2:
            seg = np.zeros(len(idx), dtype=np.int64)
        else:
            col = None if color is None else color[idx]
            seg = felzenszwalb_superpoints(
                coord[idx], col, normal[idx], c=c, color_weight=color_weight, workers=1
            )
        out[idx] = seg + offset
        offset += int(seg.max()) + 1
    return out


def merge_regions(
    coord: np.ndarray,
    region: np.ndarray,
    descriptor: np.ndarray,
    groups: int,
    position_weight: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Each point's group of regions: the scene's regions merged into ``min(groups, R)`` groups by
    Euclidean K-means (k-means++, 3 restarts) of their mean descriptors (weighted by
    :data:`MERGE_WEIGHTS`) beside ``position_weight`` times their mean position (metres). After GrowSP's
    growing superpoints (Zhang et al., CVPR 2023; its release: per scene, K-means of the superpoints'
    features, colours, normals and positions into a number that shrinks from 80 to 30), on the
    hand-made descriptors instead of the network's features, once. Regions are planar patches (a
    chair is its seat, its back and its legs); merged, a unit pools a piece of furniture's parts, and
    K-means of the units counts the furniture instead of its parts. Points without a region (-1) keep
    -1; ids are 0..G-1."""
    region = np.asarray(region, dtype=np.int64)
    out = np.full(len(region), -1, dtype=np.int64)
    has = region >= 0
    if not has.any():
        return out
    ids, inverse = np.unique(region[has], return_inverse=True)
    feats = np.concatenate(
        [weight_columns(descriptor[has], MERGE_WEIGHTS), position_weight * np.asarray(coord)[has]], axis=1
    ).astype(np.float64)
    means, _ = superpoint_mean(torch.from_numpy(feats), torch.from_numpy(inverse), len(ids))
    k = min(int(groups), len(ids))
    if k == len(ids):
        assign = np.arange(len(ids))
    else:
        result = kmeans(means.float(), k, niter=80, nredo=3, seed=seed, distributed=False)
        assign = result.assignments.numpy()
    out[has] = np.unique(assign[inverse], return_inverse=True)[1]
    return out


def _output_problem(output: Path, settings: dict[str, Any]) -> str | None:
    # a job's check (module level, so worker processes can unpickle it)
    return descriptors_problem(output.parent, settings)


def scene_descriptors(scene_dir: Path, cfg: Descriptors) -> None:
    """Compute and write one scene's descriptors (the json last)."""
    _settings_file(scene_dir).unlink(missing_ok=True)
    recorded = scene_settings(scene_dir, cfg.settings())  # before the arrays are read
    keys = [k for k in ("coord", "color") if (scene_dir / f"{k}.npy").is_file()]
    scene = read_scene(scene_dir, keys)
    normal = scene_normals(scene_dir, scene["coord"])
    region = grow_regions(scene["coord"], normal, cfg.region_c, scene.get("color"), cfg.region_color_weight)
    desc = point_descriptors(
        scene["coord"],
        scene.get("color"),
        region,
        k=cfg.k,
        column=cfg.column,
        column_cap=cfg.column_cap,
        outline=cfg.outline,
    )
    arrays = {DESCRIPTOR_KEY: desc, REGION_KEY: region}
    if cfg.merge_regions is not None:
        arrays[MERGED_KEY] = merge_regions(
            scene["coord"], region, desc, cfg.merge_regions, cfg.merge_position_weight
        )
    add_arrays(scene_dir, arrays)
    write_json_atomic(_settings_file(scene_dir), recorded)


def run_descriptor_pass(scene_dirs: Sequence[Path], cfg: Descriptors, workers: int = 1) -> list[str]:
    """Descriptors for every scene of ``scene_dirs`` whose own are missing or stale; returns the names
    of scenes skipped as unusable."""
    settings = cfg.settings()
    jobs = [
        Job(
            f"scene {d}",
            _settings_file(d),
            scene_descriptors,
            (d, cfg),
            check=partial(_output_problem, settings=settings),
        )
        for d in scene_dirs
    ]
    return run_jobs(jobs, workers, desc="descriptors")


__all__ = [
    "DESCRIPTOR_KEY",
    "MERGED_KEY",
    "MERGE_WEIGHTS",
    "REGION_KEY",
    "Descriptors",
    "grow_regions",
    "merge_regions",
    "as_descriptors",
    "descriptors_problem",
    "run_descriptor_pass",
    "scene_settings",
]
