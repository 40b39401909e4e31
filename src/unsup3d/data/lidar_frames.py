"""LiDAR frames as training samples (STSSL): reading a frame, the growing frame interval, the dataset of
single frames or pairs of views, and their collation.

A frame's files are read at load time through the dataset's own reader; the cached DBSCAN clusters
(``cluster``) and track ids (``track``, :mod:`unsup3d.stssl.track_cache`) are per-point arrays next to
``coord``, ``strength``, ``segment`` and ``point_index``, so they follow augmentation crops. Pairs are
``{"view0", "view1", "interval"}``: augmented views of frame ``t`` and ``t + k`` of one sequence, ``k``
drawn from ``[0, interval(epoch)]`` (STSSL's schedule); with ``p2c_view`` also ``view2``, a second
view of frame ``t`` for the point-to-cluster term of STSSL Eq. 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unsup3d.data.collate import collate_scenes, voxelize
from unsup3d.data.datasets import sample_rng, xyz_intensity_features
from unsup3d.data.prepare import load_npy
from unsup3d.data.transforms import Transform, select_points
from unsup3d.sparse import sparse_quantize

__all__ = [
    "FrameRef",
    "LidarFrameDataset",
    "SharedPath",
    "collate_frames",
    "interval_at",
    "limit_voxels",
    "read_frame",
]


@dataclass
class FrameRef:
    """Where one frame's files are: ``dataset`` picks the reader and the label map."""

    dataset: str  # "semantic_kitti", "semantic_poss" or "nuscenes"
    sequence: str
    index: int  # position in its sequence
    scan: Path
    labels: Path | None
    pose: np.ndarray | None  # (4, 4) LiDAR -> world, when the dataset has poses


def read_frame(ref: FrameRef) -> dict[str, np.ndarray]:
    """``coord`` float32 (N, 3), ``strength`` float32 (N,), ``segment`` int64 (-1 ignored or unlabelled)
    and ``instance`` int64 of one frame, through the dataset's own reader."""
    if ref.dataset == "nuscenes":
        from unsup3d.data.formats import nuscenes as fmt

        pts = fmt.read_sweep(ref.scan)
        segment = (
            fmt.map_labels(fmt.read_lidarseg(ref.labels, len(pts)), path=ref.labels) if ref.labels else None
        )
        instance = None
    else:
        from unsup3d.data.formats import semantic_kitti as kitti
        from unsup3d.data.formats import semantic_poss as poss

        fmt = poss if ref.dataset == "semantic_poss" else kitti
        pts = kitti.read_scan(ref.scan)
        segment = instance = None
        if ref.labels is not None:
            raw, instance = kitti.read_labels(ref.labels, len(pts))
            segment = fmt.map_labels(raw, path=ref.labels)
    n = len(pts)
    return {
        "coord": np.ascontiguousarray(pts[:, :3], dtype=np.float32),
        "strength": np.ascontiguousarray(pts[:, 3], dtype=np.float32),
        "segment": segment if segment is not None else np.full(n, -1, np.int64),
        "instance": instance if instance is not None else np.full(n, -1, np.int64),
    }


def interval_at(epoch: int, start: int = 0, maximum: int = 5, every: int = 7) -> int:
    """STSSL's growing frame interval: ``start`` at epoch 0, +1 every ``every`` epochs, up to ``maximum``."""
    return min(maximum, start + epoch // max(every, 1))


class SharedPath:
    """A path held in shared memory: set in the main process, read by data-loader workers (persistent
    ones included, forked or spawned), so re-tracking mid-training reaches every worker."""

    def __init__(self, path: Path | None = None, capacity: int = 4096) -> None:
        self._buf = torch.zeros(capacity, dtype=torch.uint8).share_memory_()
        self.set(path)

    def set(self, path: Path | None) -> None:
        raw = b"" if path is None else str(path).encode()
        if len(raw) >= len(self._buf):
            raise ValueError(f"SharedPath: path longer than {len(self._buf) - 1} bytes: {path}")
        self._buf.zero_()
        if raw:
            self._buf[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)

    def get(self) -> Path | None:
        raw = self._buf.numpy().tobytes().rstrip(b"\0")
        return Path(raw.decode()) if raw else None


class LidarFrameDataset(Dataset):
    """Frames (or pairs of frames) of LiDAR sequences, augmented and voxelised.

    ``cluster_root`` / ``track_root``: folders of the cached per-point cluster and track ids
    (``<root>/<sequence>/<index:06d>.npy``), or None to serve none.
    """

    def __init__(
        self,
        frames: Sequence[FrameRef],
        voxel_size: float,
        transform: Transform | None = None,
        cluster_root: Path | None = None,
        pairs: bool = False,
        interval: tuple[int, int, int] = (0, 5, 7),
        max_voxels: int | None = None,
        seed: int = 0,
        track_root: Path | None = None,
        p2c_view: bool = False,
    ) -> None:
        self.frames, self.voxel_size, self.transform = list(frames), voxel_size, transform
        self.cluster_root, self.pairs, self.interval = cluster_root, pairs, interval
        self.max_voxels, self.seed, self.p2c_view = max_voxels, seed, p2c_view
        self.track_root = SharedPath(track_root)
        # the last index of each frame's sequence, so a partner never crosses into another sequence
        last: dict[str, int] = {}
        for i, f in enumerate(self.frames):
            last[f.sequence] = i
        self._last = np.array([last[f.sequence] for f in self.frames])

    def __len__(self) -> int:
        return len(self.frames)

    def cluster_path(self, ref: FrameRef) -> Path:
        assert self.cluster_root is not None
        return self.cluster_root / ref.sequence / f"{ref.index:06d}.npy"

    def _cached(self, path: Path, n: int, what: str) -> np.ndarray:
        try:
            ids = load_npy(path)  # a damaged or pickled cache file is an error naming it
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: no cached {what} (did prepare_data run with these settings?)"
            ) from None
        if ids.shape != (n,):
            raise ValueError(f"{path}: cached {what} has shape {ids.shape}, the frame has {n} points")
        return ids.astype(np.int64)

    def load(self, index: int) -> dict[str, np.ndarray]:
        ref = self.frames[index]
        frame = read_frame(ref)
        n = len(frame["coord"])
        if self.cluster_root is not None:
            frame["cluster"] = self._cached(self.cluster_path(ref), n, "clusters")
        track_root = self.track_root.get()
        if track_root is not None:
            frame["track"] = self._cached(track_root / ref.sequence / f"{ref.index:06d}.npy", n, "tracks")
        frame["point_index"] = np.arange(n, dtype=np.int64)
        return frame

    def _view(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        sample = self.load(index)
        if self.transform is not None:
            sample = self.transform(sample, rng)
        if self.max_voxels is not None:
            sample = limit_voxels(sample, self.voxel_size, self.max_voxels, rng)
        sample["scene_index"] = np.array(index)
        return voxelize(sample, self.voxel_size, xyz_intensity_features(sample))

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        rng = sample_rng(self.seed, epoch, index)
        if not self.pairs:
            return self._view(index, rng)
        k = int(rng.integers(0, interval_at(epoch, *self.interval) + 1))
        partner = min(index + k, int(self._last[index]))
        out = {
            "view0": self._view(index, rng),
            "view1": self._view(partner, rng),
            "interval": partner - index,
        }
        if self.p2c_view:
            out["view2"] = self._view(index, rng)
        return out


def limit_voxels(
    sample: dict[str, np.ndarray], voxel_size: float, max_voxels: int, rng
) -> dict[str, np.ndarray]:
    """Keep the points of at most ``max_voxels`` voxels drawn at random (STSSL: 20k voxels a view)."""
    _, inverse = sparse_quantize(sample["coord"], voxel_size, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    num_voxels = int(inverse.max()) + 1 if len(inverse) else 0
    if num_voxels <= max_voxels:
        return sample
    keep = np.zeros(num_voxels, bool)
    keep[rng.choice(num_voxels, max_voxels, replace=False)] = True
    return select_points(sample, keep[inverse])


def collate_frames(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Single frames as :func:`collate_scenes`; pairs as ``{"view0": batch, "view1": batch, ...,
    "interval"}``."""
    if "view0" not in samples[0]:
        return collate_scenes(samples)
    views = sorted(k for k in samples[0] if k.startswith("view"))
    out: dict[str, Any] = {v: collate_scenes([s[v] for s in samples]) for v in views}
    out["interval"] = torch.tensor([s["interval"] for s in samples])
    return out
