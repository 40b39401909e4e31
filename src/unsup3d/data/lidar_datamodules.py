"""The LiDAR data module base (STSSL); one subclass per dataset in :mod:`unsup3d.data.lidar_dataset_modules`.

Frames are read from their raw files at load time (no copy); ``prepare_data`` computes what is
heavy and deterministic into ``<data_root>/<name>-<settings hash>/``: the ground and DBSCAN clusters
of every training frame (STSSL Sec. 3.1) under ``clusters/<sequence>/<frame>.npy``, and, with
``tracks=True``, their location-only tracks under ``tracks/<key>/`` (:mod:`unsup3d.stssl.track_cache`;
:meth:`LidarDataModule.refresh_tracks` re-tracks with a backbone's features, Eq. 1). Training samples
can be single frames or *pairs* (:mod:`unsup3d.data.lidar_frames`): two augmented views of frame ``t``
and of frame ``t + k`` of the same sequence, with ``k`` drawn from ``[0, interval(epoch)]`` and the
interval growing on STSSL's schedule (0 -> 5, +1 every 7 epochs); ``k = 0`` gives P2C's two views of
one frame. For fine-tuning, the training frames can be restricted to a label split
(:mod:`unsup3d.data.label_splits`: 0.1 %, 1 %, 10 %, 100 % of the scans, by seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from unsup3d.data.datamodule_base import PointCloudDataModule
from unsup3d.data.label_splits import restrict_to_split
from unsup3d.data.lidar_frames import (
    FrameRef,
    LidarFrameDataset,
    collate_frames,
    interval_at,
    limit_voxels,
    read_frame,
)
from unsup3d.data.prepare import (
    Job,
    npy_problem,
    preparation_lock,
    run_jobs,
    save_npy_atomic,
    write_json_atomic,
)
from unsup3d.data.transforms import Compose, GaussianNoise, Transform, default_equivariant
from unsup3d.stssl.track_cache import TrackSettings, feature_tracks, location_jobs, track_dir

__all__ = [
    "FrameRef",
    "LidarDataModule",
    "LidarFrameDataset",
    "collate_frames",
    "interval_at",
    "limit_voxels",
    "read_frame",
]


def _cluster_frame(ref: FrameRef, out: Path, settings: dict[str, Any]) -> None:
    from unsup3d.stssl.ground_clusters import cluster_points, remove_ground

    xyz = read_frame(ref)["coord"]
    ground = remove_ground(xyz, settings["ground_threshold"], settings["ground_iterations"], seed=0)
    clusters = cluster_points(
        xyz, settings["cluster_eps"], settings["cluster_min_points"], settings["max_clusters"], ground=ground
    )
    save_npy_atomic(out, clusters.astype(np.int32))


class LidarDataModule(PointCloudDataModule):
    """Base of the LiDAR modules (see the module docstring).

    Args:
        pairs: serve pairs of views (P2C and inter-frame pre-training) instead of single frames.
        interval_start / interval_max / interval_every: the frame-interval schedule of pairs.
        p2c_view: with pairs, also serve ``view2``, a second view of frame ``t`` (STSSL Eq. 4's P2C term).
        max_voxels: voxels kept per training view (STSSL: 20,000), or None for all.
        clusters: cache DBSCAN clusters of the training frames and serve them (``cluster``).
        cluster_eps / cluster_min_points / max_clusters / ground_threshold / ground_iterations:
            STSSL's DBSCAN and RANSAC settings for the cached clusters.
        tracks: cache tracks of the training frames' clusters and serve them (``track``).
        track_alpha / track_gate / track_min_points / track_max_points / track_max_gap:
            the tracking settings (:class:`unsup3d.stssl.track_cache.TrackSettings`).
        track_use_poses: match clusters in the world frame through the sequence's poses (KITTI's
            ``poses.txt``, nuScenes' ego poses) instead of in each scan's own sensor frame. Default
            False: the paper tracks without any pose sensor.
        track_cluster_features: the cluster features of ``D_feat`` when re-tracking with a backbone:
            ``"mean"`` (mean point features, cosine distance) or ``"max_projection"`` (the release's:
            max-pooled, through the stage's projection head, Euclidean distance).
        label_fraction: train on this fraction of the labelled training scans (fine-tuning), drawn by
            ``split_seed`` and saved to ``split_file`` (default ``<prepared root>/splits/...``).
        split_file: a label split to read (or, with ``label_fraction``, to write when missing).
        split_seed: the seed of the label split's draw.
        train_labels: training frames must have labels (fine-tuning); a missing label file is an error.
        max_frames: use only the first frames of each split (quick runs).
    """

    name = "lidar"
    dataset = "semantic_kitti"
    loads_raw_files = True

    def __init__(
        self,
        pairs: bool = False,
        interval_start: int = 0,
        interval_max: int = 5,
        interval_every: int = 7,
        p2c_view: bool = False,
        max_voxels: int | None = 20000,
        clusters: bool = True,
        cluster_eps: float = 0.25,
        cluster_min_points: int = 10,
        max_clusters: int = 50,
        ground_threshold: float = 0.25,
        ground_iterations: int = 200,
        tracks: bool = False,
        track_alpha: float = 0.5,
        track_gate: float = 5.0,
        track_min_points: int = 200,
        track_max_points: int = 20000,
        track_max_gap: int = 0,
        track_use_poses: bool = False,
        track_cluster_features: str = "mean",
        label_fraction: float | None = None,
        split_file: str | None = None,
        split_seed: int = 0,
        train_labels: bool = False,
        max_frames: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("voxel_size", 0.05)
        super().__init__(**kwargs)
        self.pairs, self.interval = pairs, (interval_start, interval_max, interval_every)
        self.p2c_view = p2c_view
        self.max_voxels, self.max_frames = max_voxels, max_frames
        self.clusters, self.tracks = clusters, tracks
        if tracks and not clusters:
            raise ValueError(f"{type(self).__name__}: tracks=True needs clusters=True (tracks link clusters)")
        self._frames: dict[str, list[FrameRef]] = {}
        self.cluster_settings = {
            "cluster_eps": cluster_eps,
            "cluster_min_points": cluster_min_points,
            "max_clusters": max_clusters,
            "ground_threshold": ground_threshold,
            "ground_iterations": ground_iterations,
        }
        self.track_settings = TrackSettings(
            track_alpha, track_gate, track_min_points, track_max_points, track_max_gap, track_use_poses,
            track_cluster_features,
        )  # fmt: skip
        #: the features of the tracks in use: None (location only) or a backbone's weights digest
        self.track_features: str | None = None
        if label_fraction is not None and not 0 < label_fraction <= 1:
            raise ValueError(f"{type(self).__name__}: label_fraction must be in (0, 1], got {label_fraction}")
        self.label_fraction, self.split_file, self.split_seed = label_fraction, split_file, split_seed
        self.train_labels = train_labels

    # -- frames -----------------------------------------------------------------------------------

    def frames(self, split: str) -> list[FrameRef]:
        """The frames of ``split`` ("train" or "val"), grouped by sequence in time order."""
        raise NotImplementedError(f"{type(self).__name__} must list its frames")

    @property
    def format_module(self) -> Any:
        import importlib

        return importlib.import_module(f"unsup3d.data.formats.{self.dataset}")

    @property
    def class_names(self) -> list[str]:
        """The evaluation classes (ids 0..C-1 of ``segment``)."""
        return list(self.format_module.CLASS_NAMES)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def has_split(self, split: str) -> bool:
        return bool(self.split_frames(split))

    def split_frames(self, split: str) -> list[FrameRef]:
        """The frames of ``split`` in use: ``max_frames`` first, and for "train" the label split."""
        if split not in self._frames:
            frames = self.frames(split)
            frames = frames[: self.max_frames] if self.max_frames else frames
            if split == "train" and (self.label_fraction is not None or self.split_file is not None):
                frames = self._restrict_to_label_split(frames)
            if split == "train" and self.train_labels:
                missing = [f.scan for f in frames if f.labels is None]
                if missing:
                    raise FileNotFoundError(
                        f"{missing[0]}: no label file for this training scan ({len(missing)} such)"
                    )
            self._frames[split] = frames
        return self._frames[split]

    def label_split_path(self, num_available: int) -> Path:
        if self.split_file is not None:
            return Path(self.split_file)
        name = f"fraction{self.label_fraction:g}-seed{self.split_seed}-of{num_available}.json"
        return self.prepared_root / "splits" / name

    def _restrict_to_label_split(self, frames: list[FrameRef]) -> list[FrameRef]:
        path = self.label_split_path(len(frames))
        keys = restrict_to_split(
            [(f.sequence, f.index) for f in frames], path, self.label_fraction, self.split_seed
        )
        return [f for f in frames if (f.sequence, f.index) in keys]

    # -- preparation ------------------------------------------------------------------------------

    def preparation_settings(self) -> dict[str, Any]:
        return {"name": self.name, **self.cluster_settings}

    def conversion_jobs(self, out_root: Path) -> list[Job]:
        if not self.clusters:
            return []
        jobs = []
        for ref in self.split_frames("train"):
            out = out_root / "clusters" / ref.sequence / f"{ref.index:06d}.npy"
            args = (ref, out, self.cluster_settings)
            jobs.append(Job(f"frame {ref.scan}", out, _cluster_frame, args, check=npy_problem))
        return jobs

    def prepare_data(self) -> None:
        """Clusters of the training frames, then (``tracks=True``) their location-only tracks; one
        process at a time per cache folder, resumable (see the base class)."""
        self.check_raw_root()
        with preparation_lock(self.prepared_root):
            super().prepare_data()
            if self.tracks:
                root = track_dir(self.prepared_root, self.track_settings)
                jobs = location_jobs(
                    self.split_frames("train"), self.prepared_root / "clusters", root, self.track_settings
                )
                run_jobs(jobs, self.prepare_workers, desc=f"tracking {self.name}")
                record = {"settings": vars(self.track_settings), "features": None}
                write_json_atomic(root / "tracks.json", record)

    # -- tracks -----------------------------------------------------------------------------------

    @property
    def track_root(self) -> Path:
        """The folder of the tracks in use (``track_features`` picks the version)."""
        return track_dir(self.prepared_root, self.track_settings, self.track_features)

    def use_tracks(self, features: str | None) -> Path:
        """Serve the finished track version of ``features`` (None: location only) from now on."""
        root = track_dir(self.prepared_root, self.track_settings, features)
        if not (root / "tracks.json").is_file():
            raise FileNotFoundError(f"{root}: no finished tracks (run prepare_data or refresh_tracks)")
        self.track_features = features
        for ds in self.datasets.values():
            if isinstance(ds, LidarFrameDataset) and ds.track_root.get() is not None:
                ds.track_root.set(root)
        return root

    def refresh_tracks(
        self,
        backbone: torch.nn.Module,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
        barrier: Callable[[], None] | None = None,
        projector: torch.nn.Module | None = None,
    ) -> str:
        """Re-track the training frames with ``backbone``'s features (STSSL Eq. 1, ``track_alpha``) into a
        new cache version named by the weights' digest (reused when present), and serve it; returns
        the digest. ``projector`` maps the pooled cluster features when ``track_cluster_features`` is
        ``"max_projection"``. Every rank must call it (see
        :func:`unsup3d.stssl.track_cache.feature_tracks`)."""
        tag = feature_tracks(
            self.split_frames("train"), self.prepared_root, self.track_settings, backbone, self.voxel_size,
            device, rank, world_size, barrier, projector,
        )  # fmt: skip
        self.use_tracks(tag)
        return tag

    # -- loading ----------------------------------------------------------------------------------

    def train_transform(self) -> Transform | None:
        if not self.augment:
            return None
        return Compose(
            [GaussianNoise(coord_sigma=0.01, color_sigma=0.0), default_equivariant(self.crop_extent)]
        )

    def make_dataset(self, split: str, train: bool) -> Dataset:
        frames = self.split_frames(split)
        if not frames:
            raise FileNotFoundError(f"{type(self).__name__}: no {split} frames found")
        cached = split == "train"
        return LidarFrameDataset(
            frames,
            self.voxel_size,
            transform=self.train_transform() if train else None,
            cluster_root=self.prepared_root / "clusters" if cached and self.clusters else None,
            pairs=self.pairs and train,
            interval=self.interval,
            max_voxels=self.max_voxels if train else None,
            seed=self.seed,
            track_root=self.track_root if cached and self.tracks else None,
            p2c_view=self.p2c_view and self.pairs and train,
        )

    def collate(self, samples: Sequence[Any]) -> dict[str, Any]:
        return collate_frames(samples)
