"""The LiDAR data modules: a base, and one subclass per dataset (SemanticKITTI / KITTI, SemanticPOSS,
nuScenes) that lists its frames.

Frames are read from their raw files at load time (no copy). Training samples can be single frames or
*pairs* (:mod:`unsup3d.data.lidar_frames`): two augmented views of frame ``t`` and of frame ``t + k`` of
the same sequence, with ``k`` drawn from ``[0, interval(epoch)]`` and the interval growing on STSSL's
schedule (0 -> 5, +1 every 7 epochs); ``k = 0`` gives P2C's two views of one frame. For fine-tuning, the
training frames can be restricted to a label split (:mod:`unsup3d.data.label_splits`: 0.1 %, 1 %, 10 %,
100 % of the scans, by seed). STSSL's cached clusters and tracks are added to these modules by
:mod:`unsup3d.stssl.datamodules`; the synthetic sequences are :mod:`unsup3d.synthetic.datamodules`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from unsup3d.data.datamodule_base import PointCloudDataModule
from unsup3d.data.label_splits import restrict_to_split
from unsup3d.data.lidar_frames import FrameRef, LidarFrameDataset, collate_frames
from unsup3d.data.transforms import Compose, GaussianNoise, Transform, default_equivariant

__all__ = [
    "LidarDataModule",
    "NuScenesDataModule",
    "SemanticKITTIDataModule",
    "SemanticPOSSDataModule",
]


class LidarDataModule(PointCloudDataModule):
    """Base of the LiDAR modules (see the module docstring).

    Args:
        pairs: serve pairs of views (P2C and inter-frame pre-training) instead of single frames.
        interval_start / interval_max / interval_every: the frame-interval schedule of pairs.
        p2c_view: with pairs, also serve ``view2``, a second view of frame ``t`` (STSSL Eq. 4's P2C term).
        max_voxels: voxels kept per training view (STSSL: 20,000), or None for all.
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
        self._frames: dict[str, list[FrameRef]] = {}
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

    # -- loading ----------------------------------------------------------------------------------

    def train_transform(self) -> Transform | None:
        if not self.augment:
            return None
        return Compose(
            [GaussianNoise(coord_sigma=0.01, color_sigma=0.0), default_equivariant(self.crop_extent)]
        )

    def frame_caches(self, split: str) -> dict[str, Path | None]:
        """Folders of cached per-point ids that ``split``'s frames carry (``cluster_root`` and ``track_root``
        of :class:`~unsup3d.data.lidar_frames.LidarFrameDataset`); none here, STSSL's data modules add
        their clusters and tracks (:mod:`unsup3d.stssl.datamodules`)."""
        return {}

    def make_dataset(self, split: str, train: bool) -> Dataset:
        frames = self.split_frames(split)
        if not frames:
            raise FileNotFoundError(f"{type(self).__name__}: no {split} frames found")
        return LidarFrameDataset(
            frames,
            self.voxel_size,
            transform=self.train_transform() if train else None,
            pairs=self.pairs and train,
            interval=self.interval,
            max_voxels=self.max_voxels if train else None,
            seed=self.seed,
            p2c_view=self.p2c_view and self.pairs and train,
            **self.frame_caches(split),
        )

    def collate(self, samples: Sequence[Any]) -> dict[str, Any]:
        return collate_frames(samples)


# -- datasets --------------------------------------------------------------------------------------


def _kitti_frames(dataset: str, raw_root: Path, sequences: Sequence[str]) -> list[FrameRef]:
    from unsup3d.data.formats import semantic_kitti as kitti

    refs = []
    for seq in sequences:
        seq_dir = raw_root / "sequences" / seq
        poses_path, calib_path = seq_dir / "poses.txt", seq_dir / "calib.txt"
        poses = (
            kitti.read_poses(poses_path, calib_path)
            if poses_path.is_file() and calib_path.is_file()
            else None
        )
        for i, f in enumerate(kitti.list_frames(seq_dir)):
            pose = poses[i] if poses is not None and i < len(poses) else None
            refs.append(FrameRef(dataset, seq, i, f.scan, f.labels, pose))
    return refs


class SemanticKITTIDataModule(LidarDataModule):
    """SemanticKITTI (and plain KITTI odometry, without labels): ``<raw_root>/sequences/NN/``.

    Args:
        raw_root: the folder holding ``sequences/``.
        train_sequences / val_sequences: sequence names; the official splits when None.
    """

    name = "semantic_kitti"
    dataset = "semantic_kitti"
    raw_layout = "sequences/NN/{velodyne/*.bin, labels/*.label, calib.txt, poses.txt}"
    raw_markers = ("sequences",)

    def __init__(
        self,
        raw_root: str,
        train_sequences: list[str] | None = None,
        val_sequences: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.raw_root = Path(raw_root)
        self.sequences = {"train": train_sequences, "val": val_sequences}

    def preparation_settings(self) -> dict[str, Any]:
        return {**super().preparation_settings(), "raw_root": str(self.raw_root.resolve()), **self.sequences}

    def frames(self, split: str) -> list[FrameRef]:
        import importlib

        fmt = importlib.import_module(f"unsup3d.data.formats.{self.dataset}")
        seqs = self.sequences[split] or fmt.split_sequences(split)
        return _kitti_frames(
            self.dataset, self.raw_root, [s for s in seqs if (self.raw_root / "sequences" / s).is_dir()]
        )


class SemanticPOSSDataModule(SemanticKITTIDataModule):
    """SemanticPOSS: SemanticKITTI's layout with its own 13-class label map and splits."""

    name = "semantic_poss"
    dataset = "semantic_poss"


class NuScenesDataModule(LidarDataModule):
    """nuScenes LIDAR_TOP keyframes, each scene a sequence with ego poses; lidarseg labels when present.

    Args:
        raw_root: the nuScenes root (``samples/``, ``lidarseg/``, ``<version>/*.json``).
        version: table folder, e.g. ``v1.0-trainval`` or ``v1.0-mini``.
        train_split / val_split: official split names (``train``, ``val``, ``mini_train``, ``mini_val``).
        train_scenes: only these scenes of the training split (STSSL pre-trains on scenes 0-149 only).
    """

    name = "nuscenes"
    dataset = "nuscenes"

    @property
    def raw_layout(self) -> str:  # type: ignore[override]
        return f"the nuScenes root: {self.version}/*.json tables, samples/LIDAR_TOP/ and lidarseg/"

    @property
    def raw_markers(self) -> tuple[str, ...]:  # type: ignore[override]
        return (self.version,)

    def __init__(
        self,
        raw_root: str,
        version: str = "v1.0-trainval",
        train_split: str = "train",
        val_split: str = "val",
        train_scenes: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.raw_root, self.version = Path(raw_root), version
        self.splits = {"train": train_split, "val": val_split}
        self.train_scenes = train_scenes

    def preparation_settings(self) -> dict[str, Any]:
        root = str(self.raw_root.resolve())
        return {
            **super().preparation_settings(), "raw_root": root, "version": self.version, **self.splits,
            "train_scenes": self.train_scenes,
        }  # fmt: skip

    def frames(self, split: str) -> list[FrameRef]:
        from unsup3d.data.formats.nuscenes import NuScenesTables

        tables = NuScenesTables(self.raw_root, self.version)
        refs = []
        scenes = tables.scenes_in_split(self.splits[split])
        if split == "train" and self.train_scenes is not None:
            unknown = sorted(set(self.train_scenes) - set(scenes))
            if unknown:
                raise ValueError(
                    f"{self.raw_root}: train_scenes not in split {self.splits[split]!r}: {unknown[:5]}"
                )
            scenes = [s for s in scenes if s in set(self.train_scenes)]
        for scene in scenes:
            seq = tables.sequence(scene)
            for i, (scan, labels) in enumerate(zip(seq.lidar_paths, seq.lidarseg_paths)):
                refs.append(FrameRef("nuscenes", scene, i, scan, labels, seq.poses[i]))
        return refs
