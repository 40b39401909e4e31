"""Lightning data modules: one base, a subclass per dataset.

``prepare_data`` turns raw files into scene folders (:mod:`unsup3d.data.scene_folder`) under
``<data_root>/<name>-<settings hash>/``: a changed preparation setting makes a new folder, never a
silent reuse of a stale one. ``setup`` loads them; batches are built by
:func:`unsup3d.data.collate.collate_scenes`. The LiDAR modules live in
:mod:`unsup3d.data.lidar_datamodules` and are exported here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from unsup3d.data.collate import collate_scenes
from unsup3d.data.datasets import EpochSampler, SceneDataset
from unsup3d.data.prepare import Job, run_jobs, write_json_atomic
from unsup3d.data.scene_folder import (
    add_arrays,
    list_scenes,
    read_scene,
    settings_key,
    usable_scenes,
    write_scene,
)
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

    def prepare_data(self) -> None:
        """Convert raw files into scene folders once (resumable: what is finished is skipped)."""
        root = self.prepared_root
        marker = root / "prepared.json"
        skipped = run_jobs(self.conversion_jobs(root), self.prepare_workers, desc=f"preparing {self.name}")
        write_json_atomic(marker, {"settings": self.preparation_settings(), "skipped": skipped})

    # -- loading ----------------------------------------------------------------------------------

    def train_transform(self) -> Transform | None:
        if not self.augment:
            return None
        return Compose([default_invariant(), default_equivariant(self.crop_extent)])

    def scene_dirs(self, split: str) -> list[Path]:
        dirs = usable_scenes(list_scenes(self.prepared_root, split))
        if not dirs:
            raise FileNotFoundError(
                f"{self.prepared_root / split}: no prepared scenes "
                "(did prepare_data run? is the raw data there?)"
            )
        return dirs

    def make_dataset(self, split: str, train: bool) -> Dataset:
        return SceneDataset(
            self.scene_dirs(split),
            self.voxel_size,
            transform=self.train_transform() if train else None,
            keys=("coord", "color", "segment", "superpoint", *self.extra_keys),
            seed=self.seed,
        )

    def setup(self, stage: str | None = None) -> None:
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

    def _loader(self, key: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self.datasets[key]
        return DataLoader(
            ds,
            batch_size=batch_size,
            sampler=EpochSampler(len(ds), shuffle=shuffle, seed=self.seed),
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
        return self._loader("train_eval", self.val_batch_size, shuffle=False)


# -- indoor datasets ------------------------------------------------------------------------------


def _convert_scannet(scene_dir: Path, out_dir: Path, label_table: str | None) -> None:
    from unsup3d.data.formats import scannet

    write_scene(out_dir, scannet.read_scene(scene_dir, label_table))


def _convert_s3dis(room_dir: Path, out_dir: Path, ignore_clutter: bool, sp: dict[str, Any]) -> None:
    from unsup3d.data.formats import s3dis
    from unsup3d.data.superpoints import estimate_normals, felzenszwalb_superpoints

    room = s3dis.read_room(room_dir, ignore_clutter=ignore_clutter, skip_bad_lines=True)
    room["normal"] = estimate_normals(room["coord"], workers=1)
    room["superpoint"] = felzenszwalb_superpoints(
        room["coord"], room["color"], room["normal"], workers=1, **sp
    )
    write_scene(out_dir, room)


def _add_superpoints(scene_dir: Path, sp: dict[str, Any]) -> None:
    from unsup3d.data.superpoints import felzenszwalb_superpoints

    scene = read_scene(scene_dir, ["coord", "color"] if (scene_dir / "color.npy").is_file() else ["coord"])
    add_arrays(
        scene_dir,
        {"superpoint": felzenszwalb_superpoints(scene["coord"], scene.get("color"), workers=1, **sp)},
    )


class ScanNetDataModule(PointCloudDataModule):
    """ScanNet-v2 from its raw release (``scans/<scene>/``), super-voxels from the mesh segments.

    Args:
        raw_root: the ScanNet root holding ``scans/`` (and the label table).
        label_table: path of ``scannetv2-labels.combined.tsv`` if not under ``raw_root``.
        train_list / val_list: scene-id list files; the official v2 splits when None.
    """

    name = "scannet"

    def __init__(
        self,
        raw_root: str,
        label_table: str | None = None,
        train_list: str | None = None,
        val_list: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("voxel_size", 0.02)
        super().__init__(**kwargs)
        self.raw_root, self.label_table = Path(raw_root), label_table
        self.split_lists = {"train": train_list, "val": val_list}

    def preparation_settings(self) -> dict[str, Any]:
        return {"name": self.name, "raw_root": str(self.raw_root.resolve()), **self.split_lists}

    def conversion_jobs(self, out_root: Path) -> list[Job]:
        from unsup3d.data.formats import scannet

        jobs = []
        for split, split_file in self.split_lists.items():
            for scene_id in scannet.read_split(split, split_file):
                scene_dir = scannet.find_scene_dir(self.raw_root, scene_id)
                out = out_root / split / scene_id
                jobs.append(
                    Job(
                        f"ScanNet scene {scene_dir}",
                        out,
                        _convert_scannet,
                        (scene_dir, out, self.label_table),
                    )
                )
        return jobs


class S3DISDataModule(PointCloudDataModule):
    """S3DIS rooms (``Area_N/<room>/Annotations``); Area ``val_area`` validates; super-voxels by
    Felzenszwalb-Huttenlocher on a k-NN graph of estimated normals and colours (the release's VCCS
    + region growing was never published)."""

    name = "s3dis"

    def __init__(
        self,
        raw_root: str,
        val_area: int = 5,
        ignore_clutter: bool = False,
        superpoint_c: float = 0.05,
        superpoint_min_size: int = 20,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("voxel_size", 0.05)
        super().__init__(**kwargs)
        self.raw_root, self.val_area, self.ignore_clutter = Path(raw_root), val_area, ignore_clutter
        self.sp = {"c": superpoint_c, "min_size": superpoint_min_size}

    def preparation_settings(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "raw_root": str(self.raw_root.resolve()),
            "val_area": self.val_area,
            "ignore_clutter": self.ignore_clutter,
            **self.sp,
        }

    def conversion_jobs(self, out_root: Path) -> list[Job]:
        from unsup3d.data.formats import s3dis

        jobs = []
        for room in s3dis.list_rooms(self.raw_root):
            area = room.parent.name
            split = "val" if area == f"Area_{self.val_area}" else "train"
            out = out_root / split / f"{area}_{room.name}"
            args = (room, out, self.ignore_clutter, self.sp)
            jobs.append(Job(f"S3DIS room {room}", out, _convert_s3dis, args))
        return jobs


class SceneFolderDataModule(PointCloudDataModule):
    """Any data already in the scene-folder layout (``<root>/<split>/<scene>/*.npy``), e.g. prepared
    by Pointcept. Scenes without ``superpoint.npy`` get Felzenszwalb-Huttenlocher super-voxels
    added in place by ``prepare_data``."""

    name = "scene_folder"

    def __init__(
        self, root: str, superpoint_c: float = 0.05, superpoint_min_size: int = 20, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.sp = {"c": superpoint_c, "min_size": superpoint_min_size}

    @property
    def prepared_root(self) -> Path:
        return self.root

    def has_split(self, split: str) -> bool:
        return bool(list_scenes(self.root, split))

    def prepare_data(self) -> None:
        jobs = [
            Job(f"scene {d}", d / "superpoint.npy", _add_superpoints, (d, self.sp))
            for split in ("train", "val")
            for d in list_scenes(self.root, split)
        ]
        run_jobs(jobs, self.prepare_workers, desc="super-voxels")


class SyntheticRoomsDataModule(ScanNetDataModule):
    """The built-in synthetic rooms (:mod:`unsup3d.data.synthetic.rooms`), generated into
    ``<data_root>/synthetic_rooms-raw-<hash>/`` in ScanNet's raw layout, then read like ScanNet."""

    name = "synthetic_rooms"

    def __init__(
        self,
        num_scenes: int = 8,
        num_val: int = 2,
        generator_seed: int = 0,
        frames_per_scene: int = 8,
        **kwargs: Any,
    ) -> None:
        from unsup3d.data.synthetic.rooms import SyntheticRoomsConfig

        self.config = SyntheticRoomsConfig(
            num_scenes=num_scenes, num_val=num_val, seed=generator_seed, frames_per_scene=frames_per_scene
        )
        data_root = Path(kwargs.get("data_root", "data"))
        raw = data_root / f"synthetic_rooms-raw-{settings_key(vars(self.config))}"
        super().__init__(
            raw_root=str(raw),
            train_list=str(raw / "scannetv2_train.txt"),
            val_list=str(raw / "scannetv2_val.txt"),
            **kwargs,
        )

    def preparation_settings(self) -> dict[str, Any]:
        return {"name": self.name, "generator": vars(self.config)}

    def prepare_data(self) -> None:
        from unsup3d.data.synthetic.rooms import generate_rooms

        generate_rooms(self.raw_root, self.config)
        super().prepare_data()


from unsup3d.data.lidar_datamodules import (  # noqa: E402  (exported here; they build on the base above)
    LidarDataModule,
    NuScenesDataModule,
    SemanticKITTIDataModule,
    SemanticPOSSDataModule,
    SyntheticLidarDataModule,
)

__all__ = [
    "LidarDataModule",
    "NuScenesDataModule",
    "PointCloudDataModule",
    "S3DISDataModule",
    "ScanNetDataModule",
    "SceneFolderDataModule",
    "SemanticKITTIDataModule",
    "SemanticPOSSDataModule",
    "SyntheticLidarDataModule",
    "SyntheticRoomsDataModule",
]
