"""STSSL's data modules: each LiDAR data module plus STSSL's preparation steps.

:class:`STSSLDataModule` adds to a LiDAR data module what STSSL computes once and caches under
``<data_root>/<name>-<settings hash>/``: the ground and DBSCAN clusters of every training frame (Sec. 3.1,
:mod:`unsup3d.stssl.ground_clusters`) under ``clusters/<sequence>/<frame>.npy``, as conversion jobs of
``prepare_data``, and, with ``tracks=True``, their location-only tracks under ``tracks/<key>/``
(:mod:`unsup3d.stssl.track_cache`) in the data module's
:meth:`~unsup3d.data.datamodule_base.PointCloudDataModule.prepare_extra` hook;
:meth:`STSSLDataModule.refresh_tracks` re-tracks with a backbone's features (Eq. 1). Training frames then
carry the per-point ``cluster`` and ``track`` ids. The modules below are the generic ones of
:mod:`unsup3d.data.lidar_datamodules` and :mod:`unsup3d.synthetic.datamodules` with these steps, under the
same names, so a recipe picks STSSL's SemanticKITTI as ``unsup3d.stssl.datamodules.SemanticKITTIDataModule``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unsup3d.data import lidar_datamodules as lidar
from unsup3d.data.lidar_frames import FrameRef, LidarFrameDataset, read_frame
from unsup3d.data.prepare import Job, npy_problem, run_jobs, save_npy_atomic, write_json_atomic
from unsup3d.stssl.track_cache import TrackSettings, feature_tracks, location_jobs, track_dir
from unsup3d.synthetic import datamodules as synthetic

__all__ = [
    "NuScenesDataModule",
    "STSSLDataModule",
    "SemanticKITTIDataModule",
    "SemanticPOSSDataModule",
    "SyntheticLidarDataModule",
]


def _cluster_frame(ref: FrameRef, out: Path, settings: dict[str, Any]) -> None:
    from unsup3d.stssl.ground_clusters import cluster_points, remove_ground

    xyz = read_frame(ref)["coord"]
    ground = remove_ground(xyz, settings["ground_threshold"], settings["ground_iterations"], seed=0)
    clusters = cluster_points(
        xyz, settings["cluster_eps"], settings["cluster_min_points"], settings["max_clusters"], ground=ground
    )
    save_npy_atomic(out, clusters.astype(np.int32))


class STSSLDataModule(lidar.LidarDataModule):
    """A LiDAR data module with STSSL's cached clusters and tracks (see the module docstring); the modules
    below put it before a dataset's module (``class X(STSSLDataModule, lidar.X)``).

    Args:
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
    """

    def __init__(
        self,
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clusters, self.tracks = clusters, tracks
        if tracks and not clusters:
            raise ValueError(f"{type(self).__name__}: tracks=True needs clusters=True (tracks link clusters)")
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

    # -- preparation ------------------------------------------------------------------------------

    def preparation_settings(self) -> dict[str, Any]:
        return {**super().preparation_settings(), **self.cluster_settings}

    def conversion_jobs(self, out_root: Path) -> list[Job]:
        jobs = super().conversion_jobs(out_root)
        if not self.clusters:
            return jobs
        for ref in self.split_frames("train"):
            out = out_root / "clusters" / ref.sequence / f"{ref.index:06d}.npy"
            args = (ref, out, self.cluster_settings)
            jobs.append(Job(f"frame {ref.scan}", out, _cluster_frame, args, check=npy_problem))
        return jobs

    def prepare_extra(self) -> None:
        """With ``tracks=True``, the location-only tracks of the training frames' clusters (resumable)."""
        super().prepare_extra()
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

    def frame_caches(self, split: str) -> dict[str, Path | None]:
        cached = split == "train"
        return {
            "cluster_root": self.prepared_root / "clusters" if cached and self.clusters else None,
            "track_root": self.track_root if cached and self.tracks else None,
        }


class SemanticKITTIDataModule(STSSLDataModule, lidar.SemanticKITTIDataModule):
    """SemanticKITTI / KITTI (:class:`unsup3d.data.lidar_datamodules.SemanticKITTIDataModule`) with
    STSSL's clusters and tracks."""


class SemanticPOSSDataModule(STSSLDataModule, lidar.SemanticPOSSDataModule):
    """SemanticPOSS (:class:`unsup3d.data.lidar_datamodules.SemanticPOSSDataModule`) with STSSL's
    clusters and tracks."""


class NuScenesDataModule(STSSLDataModule, lidar.NuScenesDataModule):
    """nuScenes (:class:`unsup3d.data.lidar_datamodules.NuScenesDataModule`) with STSSL's clusters and
    tracks."""


class SyntheticLidarDataModule(STSSLDataModule, synthetic.SyntheticLidarDataModule):
    """The synthetic sequences (:class:`unsup3d.synthetic.datamodules.SyntheticLidarDataModule`) with
    STSSL's clusters and tracks."""
