"""W&B point clouds of STSSL's unsupervised tracks (STSSL Sec. 3.1, Eq. 1): a few consecutive training
frames of one sequence, every point coloured by the id of its cluster's track, so one object keeps one
colour from frame to frame.

The tracks are read from the LiDAR data module's track cache (:mod:`unsup3d.stssl.track_cache`), not
from the batches (which are augmented crops): once when training starts (the location-only tracks of
``prepare_data``, or the version a resumed inter-frame run serves), and again whenever the data module
starts serving another version (the inter-frame stage re-tracks with the backbone's features at the
start of the stage and every ``retrack_every`` epochs). Without tracks (P2C's data), the frames'
DBSCAN clusters are drawn instead, each frame's ids on their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Callback, LightningModule, Trainer

from unsup3d.callbacks.media import log_media, object3d, sample_rows, wandb_logger

__all__ = ["TrackMedia", "sequence_frames"]


def sequence_frames(datamodule: Any, sequence: str | None, num_frames: int) -> list[Any]:
    """The first ``num_frames`` training frames (``FrameRef``) of ``sequence`` (default: the first)."""
    from unsup3d.stssl.track_cache import by_sequence

    groups = by_sequence(datamodule.split_frames("train"))
    if not groups:
        return []
    if sequence is None:
        sequence = sorted(groups)[0]
    if sequence not in groups:
        raise ValueError(f"TrackMedia: no training sequence {sequence!r} (have {sorted(groups)[:10]})")
    return groups[sequence][:num_frames]


class TrackMedia(Callback):
    """Log ``wandb.Object3D`` clouds of ``num_frames`` consecutive frames coloured by track id.

    Keys: ``tracks/<source>/frame<index>`` (``<source>`` is ``location`` for the tracks of
    ``prepare_data``, ``features`` for tracks re-made with a backbone's features) and
    ``tracks/<source>/all``, the frames together; ``clusters/frame<index>`` when the data module serves
    clusters but no tracks. Points without a track (ground, noise, clusters out of the size range) are
    grey. Nothing happens without a W&B logger or with a data module that has neither.

    Args:
        num_frames: consecutive frames drawn.
        sequence: the training sequence (default: the first).
        max_points: points a frame's cloud holds at most (a seeded random subset above it).
        world_frame: place the frames in one frame with the sequence's poses (relative to the first
            frame), so static objects stay put and moving ones leave a trail of their track's colour.
        seed: seed of the point sub-sample.
    """

    def __init__(
        self,
        num_frames: int = 4,
        sequence: str | None = None,
        max_points: int = 20000,
        world_frame: bool = True,
        seed: int = 0,
    ) -> None:
        if num_frames < 1 or max_points < 1:
            raise ValueError(f"TrackMedia: need num_frames, max_points >= 1, got {num_frames}, {max_points}")
        self.num_frames, self.sequence, self.max_points = num_frames, sequence, max_points
        self.world_frame, self.seed = world_frame, seed
        self._logged: Path | str | None = None  # the track version (or "clusters") last drawn

    @staticmethod
    def _source(datamodule: Any) -> Path | str | None:
        if getattr(datamodule, "tracks", False):
            root = datamodule.track_root
            return root if (root / "tracks.json").is_file() else None
        if getattr(datamodule, "clusters", False) and hasattr(datamodule, "prepared_root"):
            return "clusters"
        return None

    def _maybe_log(self, trainer: Trainer) -> None:
        logger = wandb_logger(trainer)
        datamodule = getattr(trainer, "datamodule", None)
        if logger is None or datamodule is None or not hasattr(datamodule, "split_frames"):
            return
        source = self._source(datamodule)
        if source is None or source == self._logged:
            return
        self._logged = source
        log_media(logger, trainer, self.media(datamodule))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._logged = None
        self._maybe_log(trainer)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # the stage's own on_train_epoch_start (which re-tracks) runs after the callbacks' one
        if batch_idx == 0:
            self._maybe_log(trainer)

    def media(self, datamodule: Any) -> dict[str, Any]:
        """The clouds of the data module's current tracks (or clusters), keyed as the class docstring says."""
        from unsup3d.data.lidar_frames import read_frame
        from unsup3d.viz import label_colors

        source = self._source(datamodule)
        if source is None:
            return {}
        refs = sequence_frames(datamodule, self.sequence, self.num_frames)
        world = self.world_frame and bool(refs) and all(r.pose is not None for r in refs)
        origin = np.linalg.inv(refs[0].pose) if world else None
        if source == "clusters":
            root, prefix = Path(datamodule.prepared_root) / "clusters", "clusters"
        else:
            features = getattr(datamodule, "track_features", None)
            root, prefix = Path(source), f"tracks/{'location' if features is None else 'features'}"
        media: dict[str, Any] = {}
        clouds = []
        for ref in refs:
            xyz = read_frame(ref)["coord"].astype(np.float64)
            path = root / ref.sequence / f"{ref.index:06d}.npy"
            ids = np.load(path, allow_pickle=False).astype(np.int64)
            if ids.shape != (len(xyz),):
                raise ValueError(f"{path}: {ids.shape} ids for the {len(xyz)} points of {ref.scan}")
            rows = sample_rows(len(xyz), self.max_points, self.seed + ref.index)
            xyz, ids = xyz[rows], ids[rows]
            if world:
                pose = origin @ ref.pose
                xyz = xyz @ pose[:3, :3].T + pose[:3, 3]
            rgb = label_colors(ids)
            media[f"{prefix}/frame{ref.index}"] = object3d(xyz, rgb)
            clouds.append((xyz, rgb))
        if clouds and prefix != "clusters":  # cluster ids are per frame: a joint cloud would mix them
            xyz, rgb = np.concatenate([c[0] for c in clouds]), np.concatenate([c[1] for c in clouds])
            rows = sample_rows(len(xyz), self.max_points, self.seed)
            media[f"{prefix}/all"] = object3d(xyz[rows], rgb[rows])
        return media
