"""The indoor data modules: ScanNet-v2, S3DIS and any scene folders (Pointcept's layout).

``prepare_data`` turns raw files into scene folders (:mod:`unsup3d.data.scene_folder`) under
``<data_root>/<name>-<settings hash>/``: a changed preparation setting makes a new folder, never a
silent reuse of a stale one. ``setup`` loads them; batches are built by
:func:`unsup3d.data.collate.collate_scenes`. What PointDC adds to these modules (CMD's 2D feature pass,
the teacher-free descriptors) lives in :mod:`unsup3d.pointdc.datamodules`; the synthetic rooms in
:mod:`unsup3d.synthetic.datamodules`.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

from unsup3d.data.datamodule_base import PointCloudDataModule
from unsup3d.data.formats.s3dis import S3DIS_CLASS_NAMES
from unsup3d.data.formats.scannet_labels import SCANNET20_CLASS_NAMES
from unsup3d.data.prepare import STALE, Job, npy_problem, preparation_lock, run_jobs, write_json_atomic
from unsup3d.data.scene_folder import (
    TRAINING_KEYS,
    add_arrays,
    color_scale_problem,
    file_digest,
    list_scenes,
    read_scene,
    scene_dir_problem,
    scene_normals,
    source_digests,
    write_scene,
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


#: what a scene folder's super-voxels computed here record: their settings, sources and file's digest
SUPERPOINT_RECORD = "superpoint.json"


def superpoints_problem(scene_dir: Path, sp: dict[str, Any]) -> str | None:
    """Why a scene folder's ``superpoint.npy`` must be (re)computed with the settings ``sp``, or None.

    Missing or damaged: recomputed. Computed here (``superpoint.json`` records this very file's digest)
    with other settings or from other arrays (``coord.npy``, ``color.npy`` or ``normal.npy`` added,
    replaced or removed since: :func:`~unsup3d.data.scene_folder.source_digests`):
    :data:`~unsup3d.data.prepare.STALE` (redone without a warning). A ``superpoint.npy`` that no record
    describes is the scene's own (e.g. the release's super-voxels, or one written before the records)
    and is kept: delete it to recompute.
    """
    path = scene_dir / "superpoint.npy"
    problem = npy_problem(path)
    if problem:
        return problem
    try:
        recorded = json.loads((scene_dir / SUPERPOINT_RECORD).read_text())
    except (OSError, ValueError):
        return None  # no readable record: the scene's own
    if not isinstance(recorded, dict) or recorded.get("digest") != file_digest(path):
        return None  # a record of another file: this one is the scene's own
    if {k: v for k, v in recorded.items() if k != "digest"} != {**sp, "sources": source_digests(scene_dir)}:
        return STALE
    return None


def _superpoint_output_problem(output: Path, sp: dict[str, Any]) -> str | None:
    # a job's check (module level, so worker processes can unpickle it)
    return superpoints_problem(output.parent, sp)


def _add_superpoints(scene_dir: Path, sp: dict[str, Any]) -> None:
    from unsup3d.data.superpoints import felzenszwalb_superpoints

    (scene_dir / SUPERPOINT_RECORD).unlink(missing_ok=True)
    record = {**sp, "sources": source_digests(scene_dir)}  # before the arrays are read
    scene = read_scene(scene_dir, ["coord", "color"] if (scene_dir / "color.npy").is_file() else ["coord"])
    normal = scene_normals(scene_dir, scene["coord"])
    add_arrays(
        scene_dir,
        {"superpoint": felzenszwalb_superpoints(scene["coord"], scene.get("color"), normal, workers=1, **sp)},
    )
    record["digest"] = file_digest(scene_dir / "superpoint.npy")
    write_json_atomic(scene_dir / SUPERPOINT_RECORD, record)


class IndoorDataModule(PointCloudDataModule):
    """Base of the indoor data modules: scenes prepared into scene folders, and where a dataset has them,
    the raw RGB-D frames of each scene (:meth:`frames_dir`, what a 2D feature pass reads)."""

    def frames_dir(self, scene_dir: Path) -> Path | None:
        """The raw RGB-D frame export of a prepared scene, or None where the dataset has none."""
        return None


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
    normals estimated from the points), recorded in ``superpoint.json``: a later run with other
    ``superpoint_c`` / ``superpoint_min_size``, or after the points, colours or ``normal.npy`` changed,
    recomputes them (:func:`superpoints_problem`); a ``superpoint.npy`` of the scene's own is kept.
    Float colours in [0, 1] are refused (``ValueError``): they are read as 0-255."""

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
        scenes = [d for split in ("train", "val") for d in list_scenes(self.root, split)]
        for d in scenes:
            if problem := color_scale_problem(d):
                raise ValueError(problem)
        with preparation_lock(self.root):
            check = partial(_superpoint_output_problem, sp=self.sp)
            jobs = [
                Job(f"scene {d}", d / "superpoint.npy", _add_superpoints, (d, self.sp), check=check)
                for d in scenes
            ]
            run_jobs(jobs, self.prepare_workers, desc="super-voxels")
            self.prepare_extra()


__all__ = [
    "SUPERPOINT_RECORD",
    "IndoorDataModule",
    "S3DISDataModule",
    "ScanNetDataModule",
    "SceneFolderDataModule",
    "superpoints_problem",
]
