"""Lightning data modules: one base, a subclass per dataset.

``prepare_data`` turns raw files into scene folders (:mod:`unsup3d.data.scene_folder`) under
``<data_root>/<name>-<settings hash>/``: a changed preparation setting makes a new folder, never a
silent reuse of a stale one. ``setup`` loads them; batches are built by
:func:`unsup3d.data.collate.collate_scenes`. The LiDAR modules live in
:mod:`unsup3d.data.lidar_datamodules` (the base) and :mod:`unsup3d.data.lidar_dataset_modules`
(one per dataset), and are exported here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from unsup3d.data.datamodule_base import PointCloudDataModule
from unsup3d.data.datasets import FeatureFn, color_coord_descriptor_features
from unsup3d.data.formats.s3dis import S3DIS_CLASS_NAMES
from unsup3d.data.formats.scannet_labels import SCANNET20_CLASS_NAMES
from unsup3d.data.lidar_datamodules import LidarDataModule
from unsup3d.data.lidar_dataset_modules import (
    NuScenesDataModule,
    SemanticKITTIDataModule,
    SemanticPOSSDataModule,
    SyntheticLidarDataModule,
)
from unsup3d.data.prepare import Job, npy_problem, preparation_lock, run_jobs
from unsup3d.data.scene_folder import (
    TRAINING_KEYS,
    add_arrays,
    list_scenes,
    read_scene,
    scene_dir_problem,
    scene_normals,
    settings_key,
    usable_scenes,
    write_scene,
)
from unsup3d.pointdc.descriptor_pass import DESCRIPTOR_KEY, Descriptors, as_descriptors, run_descriptor_pass
from unsup3d.pointdc.feature_pass import (
    SEEN_KEY,
    TARGET_KEY,
    FeatureTargets,
    as_feature_targets,
    run_feature_pass,
)

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


def _prepared_scene_problem(scene_dir: Path) -> str | None:
    # a conversion job's check: a prepared scene missing or damaging an array it needs is redone
    return scene_dir_problem(scene_dir, TRAINING_KEYS)


def _add_superpoints(scene_dir: Path, sp: dict[str, Any]) -> None:
    from unsup3d.data.superpoints import felzenszwalb_superpoints

    scene = read_scene(scene_dir, ["coord", "color"] if (scene_dir / "color.npy").is_file() else ["coord"])
    normal = scene_normals(scene_dir, len(scene["coord"]))
    add_arrays(
        scene_dir,
        {"superpoint": felzenszwalb_superpoints(scene["coord"], scene.get("color"), normal, workers=1, **sp)},
    )


class IndoorDataModule(PointCloudDataModule):
    """Base of the indoor (PointDC) data modules: the common base plus CMD's feature pass and the
    teacher-free path's descriptor pass.

    Args:
        feature_targets: settings of CMD's 2D feature pass
            (:class:`~unsup3d.pointdc.feature_pass.FeatureTargets`). When set, ``prepare_data`` writes
            ``cmd_target.npy`` / ``cmd_seen.npy`` into the scenes of its ``splits`` (resumable), and
            batches carry them as per-point ``cmd_target`` / ``cmd_seen``.
        descriptors: settings of the teacher-free path's descriptor pass
            (:class:`~unsup3d.pointdc.descriptor_pass.Descriptors`; ``true`` for the defaults). When
            set, ``prepare_data`` writes ``descriptor.npy`` into the scenes (resumable), and batches
            carry it as the per-point ``descriptor``.
        descriptor_inputs: the network also reads the descriptors: its input becomes RGB, centred
            coordinates and the 14 descriptor columns (``in_channels: 20``;
            :func:`~unsup3d.data.datasets.color_coord_descriptor_features`).
        units: the segments every stage pools over as super-voxels: ``superpoint`` (the dataset's), or
            ``region``, the descriptor pass's grown super-voxels (the teacher-free recipe's: a floor or a
            wall is a few regions, so Eq. 8's K-means, which counts segments, does not spend half its
            clusters on them).
    """

    def __init__(
        self,
        feature_targets: FeatureTargets | None = None,
        descriptors: Descriptors | bool | None = None,
        descriptor_inputs: bool = False,
        units: Literal["superpoint", "region"] = "superpoint",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.descriptor_inputs, self.units = descriptor_inputs, units
        if units not in ("superpoint", "region"):
            raise ValueError(f"units must be 'superpoint' or 'region', got {units!r}")
        if (descriptor_inputs or units == "region") and descriptors in (None, False):
            raise ValueError("descriptor_inputs and units: region need the descriptor pass: set descriptors")
        self.feature_targets = as_feature_targets(feature_targets)
        if self.feature_targets is not None:
            self.extra_keys += [k for k in (TARGET_KEY, SEEN_KEY) if k not in self.extra_keys]
        self.descriptors = as_descriptors(descriptors)
        if self.descriptors is not None and DESCRIPTOR_KEY not in self.extra_keys:
            self.extra_keys.append(DESCRIPTOR_KEY)

    def frames_dir(self, scene_dir: Path) -> Path | None:
        """The raw RGB-D frame export of a prepared scene, or None where the dataset has none."""
        return None

    def superpoints_from(self) -> str:
        return self.units

    def input_features(self) -> FeatureFn:
        if self.descriptor_inputs:  # every split needs them then: the network reads them
            return color_coord_descriptor_features
        return super().input_features()

    def prepare_feature_targets(self) -> dict[str, int]:
        """Run CMD's feature pass over the prepared scenes of ``feature_targets.splits``."""
        cfg = self.feature_targets
        if cfg is None:
            return {"computed": 0, "skipped": 0}
        dirs = [d for split in cfg.splits for d in usable_scenes(list_scenes(self.prepared_root, split))]
        return run_feature_pass(dirs, cfg, self.frames_dir, desc=f"CMD targets ({self.name})")

    def prepare_descriptors(self) -> None:
        """The teacher-free path's hand-made descriptors for the scenes of ``descriptors.splits``."""
        cfg = self.descriptors
        if cfg is not None:
            dirs = [d for split in cfg.splits for d in usable_scenes(list_scenes(self.prepared_root, split))]
            run_descriptor_pass(dirs, cfg, self.prepare_workers)

    def prepare_data(self) -> None:
        self.check_raw_root()
        with preparation_lock(self.prepared_root):
            super().prepare_data()
            self.prepare_feature_targets()
            self.prepare_descriptors()


class ScanNetDataModule(IndoorDataModule):
    """ScanNet-v2 from its raw release (``scans/<scene>/``), super-voxels from the mesh segments.

    Args:
        raw_root: the ScanNet root holding ``scans/`` (and the label table).
        label_table: path of ``scannetv2-labels.combined.tsv`` if not under ``raw_root``.
        train_list / val_list: scene-id list files; the official v2 splits when None.
        frames_root: where SensReader exports live for CMD's feature pass (``<frames_root>/<scene>/
            {color,depth,pose,intrinsic}``); default: the raw scene folders themselves.
    """

    name = "scannet"
    class_names = SCANNET20_CLASS_NAMES
    raw_layout = (
        "the ScanNet-v2 root: scans/<scene>/ (the mesh <scene>_vh_clean_2.ply and its annotations) and "
        "scannetv2-labels.combined.tsv"
    )
    raw_markers = ("scans", "scene*")

    def __init__(
        self,
        raw_root: str,
        label_table: str | None = None,
        train_list: str | None = None,
        val_list: str | None = None,
        frames_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("voxel_size", 0.02)
        super().__init__(**kwargs)
        self.raw_root, self.label_table = Path(raw_root), label_table
        self.split_lists = {"train": train_list, "val": val_list}
        self.frames_root = Path(frames_root) if frames_root else None

    def frames_dir(self, scene_dir: Path) -> Path | None:
        if self.frames_root is not None:
            return self.frames_root / scene_dir.name
        from unsup3d.data.formats import scannet

        try:
            return scannet.find_scene_dir(self.raw_root, scene_dir.name)
        except FileNotFoundError:
            return None

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
                        check=_prepared_scene_problem,
                    )
                )
        return jobs


class S3DISDataModule(IndoorDataModule):
    """S3DIS rooms (``Area_N/<room>/Annotations``); Area ``val_area`` validates; super-voxels by
    Felzenszwalb-Huttenlocher on a k-NN graph of estimated normals and colours (the release's VCCS
    + region growing was never published)."""

    name = "s3dis"
    class_names = S3DIS_CLASS_NAMES
    raw_layout = "Stanford3dDataset_v1.2_Aligned_Version/: Area_N/<room>/Annotations/*.txt"
    raw_markers = ("Area_*",)

    def __init__(
        self,
        raw_root: str,
        val_area: int = 5,
        ignore_clutter: bool = False,
        superpoint_c: float = 0.1,
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
            jobs.append(Job(f"S3DIS room {room}", out, _convert_s3dis, args, check=_prepared_scene_problem))
        return jobs


class SceneFolderDataModule(IndoorDataModule):
    """Any data already in the scene-folder layout (``<root>/<split>/<scene>/*.npy``), e.g. prepared
    by Pointcept. Scenes without ``superpoint.npy`` get Felzenszwalb-Huttenlocher super-voxels
    added in place by ``prepare_data``, on the scene's own normals where it has ``normal.npy`` (else
    normals estimated from the points)."""

    name = "scene_folder"
    raw_layout = "scene folders <root>/<split>/<scene>/{coord,color,segment}.npy (Pointcept's layout)"
    raw_markers = ("train/*/coord.npy", "val/*/coord.npy")

    def __init__(
        self, root: str, superpoint_c: float = 0.1, superpoint_min_size: int = 20, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.root = Path(root)
        self.sp = {"c": superpoint_c, "min_size": superpoint_min_size}

    @property
    def prepared_root(self) -> Path:
        return self.root

    def raw_data_root(self) -> Path:
        return self.root

    def has_split(self, split: str) -> bool:
        return bool(list_scenes(self.root, split))

    def prepare_data(self) -> None:
        self.check_raw_root()
        with preparation_lock(self.root):
            jobs = [
                Job(f"scene {d}", d / "superpoint.npy", _add_superpoints, (d, self.sp), check=npy_problem)
                for split in ("train", "val")
                for d in list_scenes(self.root, split)
            ]
            run_jobs(jobs, self.prepare_workers, desc="super-voxels")
            self.prepare_feature_targets()
            self.prepare_descriptors()


class SyntheticRoomsDataModule(ScanNetDataModule):
    """The built-in synthetic rooms (:mod:`unsup3d.synthetic.rooms`), generated into
    ``<data_root>/synthetic_rooms-raw-<hash>/`` in ScanNet's raw layout, then read like ScanNet."""

    name = "synthetic_rooms"
    raw_layout = "the synthetic rooms in ScanNet's layout, which prepare_data generates"

    def __init__(
        self,
        num_scenes: int = 8,
        num_val: int = 2,
        generator_seed: int = 0,
        frames_per_scene: int = 8,
        **kwargs: Any,
    ) -> None:
        from unsup3d.synthetic.rooms import SyntheticRoomsConfig

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
        from unsup3d.synthetic.rooms import generate_rooms

        with preparation_lock(self.prepared_root):
            generate_rooms(self.raw_root, self.config)
            super().prepare_data()


__all__ = [
    "IndoorDataModule",
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
