"""One LiDAR data module per dataset (STSSL): SemanticKITTI / KITTI, SemanticPOSS, nuScenes, and the
built-in synthetic sequences. What they share (clusters, tracks, pairs, label splits) is
:class:`unsup3d.data.lidar_datamodules.LidarDataModule`; each subclass only lists its frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unsup3d.data.lidar_datamodules import LidarDataModule
from unsup3d.data.lidar_frames import FrameRef
from unsup3d.data.prepare import preparation_lock

__all__ = [
    "NuScenesDataModule",
    "SemanticKITTIDataModule",
    "SemanticPOSSDataModule",
    "SyntheticLidarDataModule",
]


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


class SyntheticLidarDataModule(SemanticKITTIDataModule):
    """The built-in synthetic LiDAR sequences (:mod:`unsup3d.synthetic.lidar`) in SemanticKITTI's
    layout, generated into ``<data_root>/synthetic_lidar-raw-<hash>/``; the last ``num_val``
    sequences validate. ``azimuth_steps`` and ``beams`` set the sensor's resolution (1024 x 64, about
    55k points a frame; fewer for quick runs)."""

    name = "synthetic_lidar"
    raw_layout = "the synthetic sequences in SemanticKITTI's layout, which prepare_data generates"

    def __init__(
        self,
        num_sequences: int = 3,
        num_val: int = 1,
        frames_per_sequence: int = 20,
        generator_seed: int = 0,
        azimuth_steps: int = 1024,
        beams: int = 64,
        **kwargs: Any,
    ) -> None:
        from unsup3d.data.scene_folder import settings_key
        from unsup3d.synthetic.lidar import SyntheticLidarConfig

        self.config = SyntheticLidarConfig(
            num_sequences=num_sequences, frames_per_sequence=frames_per_sequence, seed=generator_seed,
            azimuth_steps=azimuth_steps, beams=beams,
        )  # fmt: skip
        raw = Path(kwargs.get("data_root", "data")) / f"synthetic_lidar-raw-{settings_key(vars(self.config))}"
        names = [f"{i:02d}" for i in range(num_sequences)]
        super().__init__(
            raw_root=str(raw),
            train_sequences=names[: num_sequences - num_val],
            val_sequences=names[num_sequences - num_val :],
            **kwargs,
        )

    def preparation_settings(self) -> dict[str, Any]:
        from unsup3d.synthetic.lidar import GENERATOR_VERSION

        settings = super().preparation_settings()
        return {**settings, "generator": vars(self.config), "version": GENERATOR_VERSION}

    def prepare_data(self) -> None:
        from unsup3d.synthetic.lidar import generate_sequences

        with preparation_lock(self.prepared_root):
            generate_sequences(self.raw_root, self.config)
            super().prepare_data()
