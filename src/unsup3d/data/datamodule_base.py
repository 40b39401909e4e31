"""The base of every unsup3d data module: preparation into cached scene folders, datasets with
seeded augmentation, and loaders (the datasets' modules: :mod:`unsup3d.data.indoor_datamodules`,
:mod:`unsup3d.data.lidar_datamodules`).

A method adds its own preparation (PointDC's feature and descriptor passes, STSSL's clusters and
tracks) from its side, in data modules of its package that extend these ones
(:mod:`unsup3d.pointdc.datamodules`, :mod:`unsup3d.stssl.datamodules`): through
:meth:`PointCloudDataModule.conversion_jobs` and the :meth:`PointCloudDataModule.prepare_extra` hook,
which ``prepare_data`` calls once the scenes are prepared. Nothing here knows a method."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from unsup3d.data.collate import collate_scenes
from unsup3d.data.datasets import EpochSampler, FeatureFn, SceneDataset, color_coord_features
from unsup3d.data.prepare import Job, preparation_lock, run_jobs, write_json_atomic
from unsup3d.data.resumable_loader import ResumableDataLoader
from unsup3d.data.scene_folder import TRAINING_KEYS, list_scenes, settings_key, usable_scenes
from unsup3d.data.transforms import Compose, Transform, default_equivariant, default_invariant


class PointCloudDataModule(LightningDataModule):
    """Base of every unsup3d data module (see the module docstring).

    Args:
        data_root: where prepared data (and generated synthetic raw data) is written.
        voxel_size: voxel edge in metres (PointDC: 0.02 ScanNet, 0.05 S3DIS; STSSL 0.05).
        batch_size / val_batch_size: scenes (or frame pairs) per batch.
        num_workers: data loader worker processes.
        prepare_workers: processes for ``prepare_data``.
        augment: invariant + equivariant augmentations on training samples (PointDC Eq. 12).
        crop_extent: horizontal crop (metres) of training samples, or None.
        seed: seeds shuffling and augmentation (a pure function of seed, epoch, index).
        extra_keys: more per-point arrays of the scene folders to load into batches (e.g. CMD's
            ``cmd_target``, ``cmd_seen``).
    """

    name = "pointcloud"
    #: names of the label classes, for per-class logs (None: class ids)
    class_names: tuple[str, ...] | None = None
    #: what the raw data folder holds, and globs of which at least one must match in it (the error
    #: for a missing or wrong ``raw_root`` names both)
    raw_layout: str = ""
    raw_markers: tuple[str, ...] = ()
    #: whether loading reads raw files (LiDAR frames) rather than only the prepared scenes
    loads_raw_files: bool = False

    def __init__(
        self,
        data_root: str = "data",
        voxel_size: float = 0.02,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        prepare_workers: int = 1,
        augment: bool = True,
        crop_extent: float | None = None,
        seed: int = 0,
        extra_keys: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.data_root = Path(data_root)
        self.voxel_size = voxel_size
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.prepare_workers = prepare_workers
        self.augment = augment
        self.crop_extent = crop_extent
        self.seed = seed
        self.extra_keys = list(extra_keys or [])
        self.datasets: dict[str, Dataset | None] = {}

    # -- preparation ------------------------------------------------------------------------------

    def preparation_settings(self) -> dict[str, Any]:
        """Everything that changes what ``prepare_data`` writes (hashed into the folder name)."""
        return {"name": self.name}

    @property
    def prepared_root(self) -> Path:
        return self.data_root / f"{self.name}-{settings_key(self.preparation_settings())}"

    def conversion_jobs(self, out_root: Path) -> list[Job]:
        """The jobs that write this dataset's scene folders under ``out_root``."""
        return []

    def raw_data_root(self) -> Path | None:
        """The folder of raw data this module reads (``raw_root``), or None where it reads none."""
        root = getattr(self, "raw_root", None)
        return None if root is None else Path(root)

    def raw_root_problem(self) -> str | None:
        """Why the raw data folder is unusable (missing, or holding none of ``raw_markers``), naming
        it and what it must hold; None when it is there."""
        root = self.raw_data_root()
        if root is None:
            return None
        what = f"{type(self).__name__}: raw_root {root}"
        hint = f"expected {self.raw_layout} (see the README's 'Using real data' section)"
        if not root.is_dir():
            return f"{what} does not exist: {hint}"
        if self.raw_markers and not any(next(root.glob(m), None) for m in self.raw_markers):
            return f"{what} holds none of {', '.join(self.raw_markers)}: {hint}"
        return None

    def check_raw_root(self) -> None:
        """Raise ``FileNotFoundError`` with :meth:`raw_root_problem`'s message, if any."""
        problem = self.raw_root_problem()
        if problem:
            raise FileNotFoundError(problem)

    def prepare_data(self) -> None:
        """Convert raw files into scene folders once. Resumable (what is finished is skipped, what a
        killed run left half-written is removed) and one process at a time per folder (a second one
        waits, then finds the work done: :func:`unsup3d.data.prepare.preparation_lock`)."""
        self.check_raw_root()
        root = self.prepared_root
        with preparation_lock(root):
            jobs = self.conversion_jobs(root)
            run_jobs(jobs, self.prepare_workers, desc=f"preparing {self.name}")
            # only what defines the folder: a cached rerun finds it unchanged and leaves it alone
            write_json_atomic(root / "prepared.json", {"settings": self.preparation_settings()})
            self.prepare_extra()

    def prepare_extra(self) -> None:
        """The preparation a method adds once the scenes are prepared (PointDC's 2D feature and descriptor
        passes, STSSL's track cache), run by ``prepare_data`` under its lock; each must be resumable and
        skip what is done. Nothing here: a method's data modules override it, calling ``super()``."""

    # -- loading ----------------------------------------------------------------------------------

    def train_transform(self) -> Transform | None:
        if not self.augment:
            return None
        return Compose([default_invariant(), default_equivariant(self.crop_extent)])

    def scene_dirs(self, split: str) -> list[Path]:
        """The readable, non-degenerate scenes of ``split`` (each other one skipped with a warning)."""
        root = self.prepared_root
        found = list_scenes(root, split)
        if found and root != self.raw_data_root() and not (root / "prepared.json").is_file():
            warnings.warn(
                f"{root}: its preparation has not finished (no prepared.json); using the {len(found)} "
                f"{split} scenes written so far (prepare_data finishes it)",
                stacklevel=2,
            )
        dirs = usable_scenes(found, keys=TRAINING_KEYS)
        if not dirs:
            why = f"all {len(found)} scene folders are unusable (see the warnings)" if found else "no scenes"
            raise FileNotFoundError(f"{root / split}: {why} (did prepare_data run? is the raw data there?)")
        return dirs

    def available_extra_keys(self, dirs: Sequence[Path], required: bool) -> list[str]:
        """The ``extra_keys`` every scene of ``dirs`` holds. Training data (``required``) must hold them
        all (FileNotFoundError naming the first scene without one); evaluation data may lack them
        (CMD's targets are computed for training scenes only), and then loads none of the missing."""
        keys = []
        for key in self.extra_keys:
            missing = next((d for d in dirs if not (d / f"{key}.npy").is_file()), None)
            if missing is None:
                keys.append(key)
            elif required:
                raise FileNotFoundError(
                    f"scene {missing}: {key}.npy is missing (extra_keys asks for it; CMD's targets come "
                    "from the data module's feature_targets pass in prepare_data)"
                )
        return keys

    def superpoints_from(self) -> str:
        """The stored array whose segments the stages pool over as super-voxels."""
        return "superpoint"

    def input_features(self) -> FeatureFn:
        """The network's per-point input (PointDC's: RGB and centred coordinates)."""
        return color_coord_features

    def make_dataset(self, split: str, train: bool) -> Dataset:
        dirs = self.scene_dirs(split)
        extra = self.available_extra_keys(dirs, required=split == "train")
        return SceneDataset(
            dirs,
            self.voxel_size,
            features=self.input_features(),
            superpoints_from=self.superpoints_from(),
            transform=self.train_transform() if train else None,
            keys=("coord", "color", "segment", "superpoint", *extra),
            seed=self.seed,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.loads_raw_files or not any(list_scenes(self.prepared_root, s) for s in ("train", "val")):
            self.check_raw_root()
        if "train" not in self.datasets and stage in (None, "fit"):
            self.datasets["train"] = self.make_dataset("train", train=True)
            # The clustering pass of PointDC's SVC reads the training scenes without augmentation.
            self.datasets["train_eval"] = self.make_dataset("train", train=False)
        if "val" not in self.datasets and stage in (None, "fit", "validate", "test"):
            self.datasets["val"] = self.make_dataset("val", train=False) if self.has_split("val") else None

    def has_split(self, split: str) -> bool:
        """Whether ``split`` has data; a module without one (LiDAR pre-training) skips it."""
        return True

    def collate(self, samples: Sequence[Any]) -> dict[str, Any]:
        return collate_scenes(samples)

    def _loader(self, key: str, batch_size: int, shuffle: bool, shard: bool = True) -> DataLoader:
        # resumable: a run restarted from a mid-epoch checkpoint continues the epoch where it stopped
        ds = self.datasets[key]
        return ResumableDataLoader(
            ds,
            batch_size=batch_size,
            sampler=EpochSampler(len(ds), shuffle=shuffle, seed=self.seed, shard=shard),
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.datasets.get("val") is None:
            return []  # no validation split (e.g. LiDAR pre-training): Lightning skips validation
        return self._loader("val", self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def cluster_dataloader(self) -> DataLoader:
        """The training scenes in order, unaugmented: for dataset-wide clustering passes."""
        if "train_eval" not in self.datasets:
            self.setup("fit")
        # every process sees the whole order; the passes share it out themselves (training.common.rank_share)
        return self._loader("train_eval", self.val_batch_size, shuffle=False, shard=False)
