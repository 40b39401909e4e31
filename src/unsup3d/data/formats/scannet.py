"""ScanNet-v2 scenes as downloaded: mesh, annotations, mesh segments, and the official splits.

A scene folder ``<scene>/`` (e.g. ``scans/scene0000_00/``) holds

- ``<scene>_vh_clean_2.ply``: the low-resolution mesh (binary PLY, xyz + rgba + triangles);
- ``<scene>_vh_clean_2.0.010000.segs.json``: its over-segmentation, ``segIndices`` one a vertex;
  PointDC's ScanNet super-voxels;
- ``<scene>.aggregation.json``: the annotated objects, each a list of segments and a raw name;
- ``<scene>_vh_clean_2.labels.ply``: the same mesh with a per-vertex ``label``.

Semantic labels follow the path Pointcept takes where the aggregation, the segments and a label
table are all present (object name -> table -> NYU40 -> ScanNet-20; instance = object id);
``labels.ply`` is the fallback (it carries no instances). See ``scannet_labels`` for the releases.
2D frames exported from ``.sens`` are read by ``scannet_frames``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from unsup3d.data.formats._checks import PathLike, check_count, existing_file, read_json
from unsup3d.data.formats.ply import read_ply, vertex_normals
from unsup3d.data.formats.scannet_labels import (
    IGNORE_INDEX,
    LABEL_TABLE_NAMES,
    NUM_NYU40,
    LabelTable,
    find_label_table,
    nyu40_to_scannet20,
    read_label_table,
)

MESH_SUFFIX = "_vh_clean_2.ply"
LABELS_PLY_SUFFIX = "_vh_clean_2.labels.ply"
SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGGREGATION_SUFFIX = ".aggregation.json"

#: Official ScanNet-v2 splits and their sizes (scans, not distinct rooms).
SPLIT_SIZES = {"train": 1201, "val": 312, "test": 100}


@dataclass(frozen=True)
class SceneFiles:
    """Where each file of a scene folder is expected (whether or not it exists)."""

    scene_id: str
    mesh: Path
    labels_ply: Path
    segs: Path
    aggregation: Path

    @classmethod
    def of(cls, scene_dir: PathLike) -> SceneFiles:
        d = Path(scene_dir)
        sid = d.resolve().name
        return cls(
            scene_id=sid,
            mesh=d / f"{sid}{MESH_SUFFIX}",
            labels_ply=d / f"{sid}{LABELS_PLY_SUFFIX}",
            segs=d / f"{sid}{SEGS_SUFFIX}",
            aggregation=d / f"{sid}{AGGREGATION_SUFFIX}",
        )


@dataclass(frozen=True)
class ObjectGroup:
    """One annotated object of ``*.aggregation.json``."""

    object_id: int
    label: str
    segments: np.ndarray


def read_mesh(path: PathLike) -> dict[str, np.ndarray]:
    """``coord`` float32 (N, 3), ``color`` uint8 (N, 3) and ``normal`` float32 (N, 3) of a mesh PLY.

    Normals are the area-weighted, normalised vertex normals of the faces.
    """
    mesh = read_ply(path, require_faces=True)
    coord = mesh.xyz()
    return {"coord": coord, "color": mesh.rgb(), "normal": vertex_normals(coord, mesh.faces)}


def read_segments(path: PathLike, num_vertices: int | None = None) -> np.ndarray:
    """The raw ``segIndices`` of a ``*.segs.json`` (int64, one a vertex, ids as in the file).

    Raises ``ValueError`` naming the file when the key is missing, the ids are not non-negative
    integers, or their count differs from ``num_vertices``.
    """
    p = existing_file(path)
    data = read_json(p)
    if not isinstance(data, dict) or "segIndices" not in data:
        raise ValueError(f"{p}: no 'segIndices' key")
    seg = np.asarray(data["segIndices"])
    if seg.ndim != 1 or (seg.size and seg.dtype.kind not in "iu"):
        raise ValueError(
            f"{p}: 'segIndices' must be a flat list of integers (got dtype {seg.dtype}, shape {seg.shape})"
        )
    seg = seg.astype(np.int64)
    if seg.size and seg.min() < 0:
        raise ValueError(f"{p}: 'segIndices' holds negative ids")
    check_count(len(seg), num_vertices, p, "segment ids")
    return seg


def read_aggregation(path: PathLike) -> list[ObjectGroup]:
    """The annotated objects of a ``*.aggregation.json``, in file order.

    The object id is ``objectId`` (``id`` where that is absent; the two agree in v2).
    """
    p = existing_file(path)
    data = read_json(p)
    groups = data.get("segGroups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        raise ValueError(f"{p}: no 'segGroups' list")
    out = []
    for i, g in enumerate(groups):
        oid = g.get("objectId", g.get("id")) if isinstance(g, dict) else None
        if oid is None or "segments" not in g or "label" not in g:
            raise ValueError(f"{p}: segGroups[{i}] lacks 'objectId'/'id', 'segments' or 'label'")
        try:
            segs = np.asarray(g["segments"], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"{p}: segGroups[{i}].segments is not a list of integers") from None
        out.append(ObjectGroup(object_id=int(oid), label=str(g["label"]), segments=segs))
    return out


def relabel_consecutive(ids: np.ndarray) -> np.ndarray:
    """Renumber ids to 0..S-1 in increasing order of the original id (int64)."""
    return np.unique(np.asarray(ids), return_inverse=True)[1].astype(np.int64).reshape(-1)


def labels_from_aggregation(
    seg_indices: np.ndarray, groups: list[ObjectGroup], table: LabelTable, source: PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex (ScanNet-20 segment, instance) from the objects' segments, as Pointcept does.

    A vertex in no object gets -1 for both; where objects share a segment the later one wins.
    Objects whose name the table lacks keep their instance but get segment -1 (a warning names
    them and ``source``).
    """
    nyu = table.names_to_nyu40([g.label for g in groups])
    unknown = sorted({g.label for g, n in zip(groups, nyu) if g.label not in table.name_to_nyu40})
    if unknown:
        warnings.warn(
            f"{source}: object names not in {table.path.name} are ignored: {unknown[:5]}"
            + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""),
            stacklevel=3,
        )
    size = int(seg_indices.max()) + 1 if seg_indices.size else 0
    seg_class = np.full(size, IGNORE_INDEX, np.int64)
    seg_instance = np.full(size, IGNORE_INDEX, np.int64)
    classes = nyu40_to_scannet20(nyu)
    for g, cls in zip(groups, classes):
        segs = g.segments[(g.segments >= 0) & (g.segments < size)]
        seg_class[segs] = cls
        seg_instance[segs] = g.object_id
    return seg_class[seg_indices], seg_instance[seg_indices]


def labels_from_labels_ply(path: PathLike, num_vertices: int, table: LabelTable | None) -> np.ndarray:
    """Per-vertex ScanNet-20 segment from the ``label`` field of ``*_vh_clean_2.labels.ply``.

    The field holds NYU40 ids (v2) unless ``table`` is an older release's, whose ids it holds then.
    """
    mesh = read_ply(path)
    label = mesh.field("label").astype(np.int64)
    check_count(len(label), num_vertices, mesh.path, "labelled vertices")
    if table is not None and table.labels_ply_ids == "table":
        return nyu40_to_scannet20(table.table_ids_to_nyu40(label, mesh.path))
    if label.size and (label.min() < 0 or label.max() > NUM_NYU40):
        raise ValueError(
            f"{mesh.path}: labels span [{label.min()}, {label.max()}], outside NYU40's 0..{NUM_NYU40}; "
            "a labels.ply of an older release holds label-table ids: put that release's "
            f"{LABEL_TABLE_NAMES[1]} beside the scans or pass label_table"
        )
    return nyu40_to_scannet20(label)


def read_scene(
    scene_dir: PathLike, label_table: PathLike | LabelTable | None = None, *, unlabelled_ok: bool = False
) -> dict[str, np.ndarray]:
    """Read one ScanNet scene folder into Pointcept-style arrays.

    Returns ``coord`` float32 (N, 3) metres, ``color`` uint8 (N, 3), ``normal`` float32 (N, 3),
    ``segment`` int64 ScanNet-20 ids (-1 ignored), ``instance`` int64 object ids (-1 none) and
    ``superpoint`` int64 mesh segments renumbered 0..S-1 (PointDC's ScanNet super-voxels).

    ``label_table`` is a path or a parsed table; when None the nearest one in the scene folder or
    its parents is used. With ``unlabelled_ok`` (test scans) absent annotations or segments give
    -1 arrays; otherwise they raise ``FileNotFoundError`` naming the file. Malformed files raise
    ``ValueError`` naming the file.
    """
    files = SceneFiles.of(scene_dir)
    mesh = read_mesh(files.mesh)
    n = len(mesh["coord"])
    table = _label_table(label_table, scene_dir)

    seg_indices = read_segments(files.segs, n) if files.segs.is_file() else None
    if seg_indices is not None:
        superpoint = relabel_consecutive(seg_indices)
    elif unlabelled_ok:
        superpoint = np.full(n, IGNORE_INDEX, np.int64)
    else:
        raise FileNotFoundError(f"{files.segs}: mesh segmentation missing (needed for super-voxels)")

    segment = np.full(n, IGNORE_INDEX, np.int64)
    instance = np.full(n, IGNORE_INDEX, np.int64)
    if files.aggregation.is_file() and table is not None:
        if seg_indices is None:
            raise FileNotFoundError(
                f"{files.segs}: missing, but {files.aggregation.name} refers to its segments"
            )
        segment, instance = labels_from_aggregation(
            seg_indices, read_aggregation(files.aggregation), table, files.aggregation
        )
    elif files.labels_ply.is_file():
        if files.aggregation.is_file():
            warnings.warn(
                f"{files.aggregation}: no label table ({' or '.join(LABEL_TABLE_NAMES)}) in "
                f"{Path(scene_dir)} or its parents; labels come from {files.labels_ply.name} "
                "(without instances)",
                stacklevel=2,
            )
        segment = labels_from_labels_ply(files.labels_ply, n, table)
    elif files.aggregation.is_file():
        raise FileNotFoundError(
            f"{files.aggregation}: needs a label table ({' or '.join(LABEL_TABLE_NAMES)}), none found in "
            f"{Path(scene_dir)} or its parents, and there is no {files.labels_ply.name} to fall back on"
        )
    elif not unlabelled_ok:
        raise FileNotFoundError(
            f"{Path(scene_dir)}: no annotations: neither {files.aggregation.name} "
            f"nor {files.labels_ply.name} exists"
        )
    return {**mesh, "segment": segment, "instance": instance, "superpoint": superpoint}


def _label_table(label_table: PathLike | LabelTable | None, scene_dir: PathLike) -> LabelTable | None:
    if isinstance(label_table, LabelTable):
        return label_table
    if label_table is not None:
        return read_label_table(label_table)
    found = find_label_table(scene_dir)
    return read_label_table(found) if found is not None else None


def read_split(split: str, split_file: PathLike | None = None) -> list[str]:
    """Scene ids of an official ScanNet-v2 split (``train``: 1201, ``val``: 312, ``test``: 100).

    The lists ship with unsup3d (ScanNet's ``Tasks/Benchmark/scannetv2_<split>.txt``); ``split_file``
    reads another list instead, one scene id a line.
    """
    if split_file is not None:
        text = existing_file(split_file).read_text()
    elif split in SPLIT_SIZES:
        text = (resources.files(__package__) / "scannet_splits" / f"scannetv2_{split}.txt").read_text()
    else:
        raise ValueError(
            f"unknown ScanNet split {split!r}; expected one of {sorted(SPLIT_SIZES)} or a split_file"
        )
    return [line.strip() for line in text.splitlines() if line.strip()]


def find_scene_dir(root: PathLike, scene_id: str) -> Path:
    """The folder of ``scene_id`` under a ScanNet root: ``scans/``, ``scans_test/`` or the root itself."""
    r = Path(root)
    candidates = [r / "scans" / scene_id, r / "scans_test" / scene_id, r / scene_id]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(
        f"{r}: scene {scene_id} not found (looked in {', '.join(str(c) for c in candidates)})"
    )
