"""Writers of small ScanNet and S3DIS files in the real formats, for the reader tests.

Everything is written with the same libraries and layouts the datasets use (plyfile binary
little-endian meshes with ``list uchar int vertex_indices`` faces, ScanNet's JSON keys, tab-separated
label tables with the real column headers, SensReader's frame export), so the readers see what a
download holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plyfile
from PIL import Image

SCENE_ID = "scene0000_00"

# A 12-vertex mesh: four separate triangles, one a mesh segment. Segment ids as ScanNet writes them
# (arbitrary, not consecutive): vertices 0-2 -> 5, 3-5 -> 9, 6-8 -> 2, 9-11 -> 7.
SEG_INDICES = np.array([5, 5, 5, 9, 9, 9, 2, 2, 2, 7, 7, 7])
SUPERPOINT = np.array([1, 1, 1, 3, 3, 3, 0, 0, 0, 2, 2, 2])  # 2->0, 5->1, 7->2, 9->3

# Objects: "office chair" (NYU40 5 -> chair, ScanNet-20 id 4) on segment 5, "kitchen cabinet"
# (NYU40 3 -> cabinet, id 2) on segment 9, "ceiling" (NYU40 22, not a benchmark class) on segment 2;
# segment 7 is unannotated.
OBJECTS = [(0, "office chair", [5]), (1, "kitchen cabinet", [9]), (2, "ceiling", [2])]
SEGMENT = np.array([4, 4, 4, 2, 2, 2, -1, -1, -1, -1, -1, -1])
INSTANCE = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, -1, -1, -1])
NYU40_PER_VERTEX = np.array([5, 5, 5, 3, 3, 3, 22, 22, 22, 0, 0, 0])
# The label-table ids of the same names (rows below), as an older release's labels.ply stores them.
TABLE_ID = {"wall": 1, "ceiling": 35, "office chair": 40, "kitchen cabinet": 41}
TABLE_ID_PER_VERTEX = np.array([40, 40, 40, 41, 41, 41, 35, 35, 35, 0, 0, 0])
_NYU40 = {"wall": 1, "ceiling": 22, "office chair": 5, "kitchen cabinet": 3}


def mesh_vertices(n_tri: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (float32) and faces of ``n_tri`` separate right triangles, each in its own plane."""
    rng = np.random.default_rng(0)
    xyz = []
    for t in range(n_tri):
        base = np.array([t, 0.5 * t, 0.25 * t])
        xyz += [base, base + [1.0, 0, 0], base + [0, 1.0, 0.3 * t]]
    xyz = np.asarray(xyz, np.float32) + rng.normal(0, 1e-3, (3 * n_tri, 3)).astype(np.float32)
    faces = np.arange(3 * n_tri).reshape(n_tri, 3)
    return xyz, faces


def write_mesh_ply(
    path: Path,
    xyz: np.ndarray,
    faces: np.ndarray | list,
    rgb: np.ndarray | None = None,
    label: np.ndarray | None = None,
    *,
    text: bool = False,
) -> Path:
    """A PLY as ScanNet ships it: x y z float, red green blue alpha uchar (+ label ushort), faces."""
    n = len(xyz)
    fields = [
        ("x", "f4"),
        ("y", "f4"),
        ("z", "f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("alpha", "u1"),
    ]
    if label is not None:
        fields.append(("label", "u2"))
    v = np.zeros(n, dtype=fields)
    v["x"], v["y"], v["z"] = np.asarray(xyz, np.float32).T
    rgb = np.arange(n * 3).reshape(n, 3) % 256 if rgb is None else rgb
    v["red"], v["green"], v["blue"] = np.asarray(rgb).T
    v["alpha"] = 255
    if label is not None:
        v["label"] = label
    polys = list(faces)
    f = np.empty(len(polys), dtype=[("vertex_indices", "O")])
    f["vertex_indices"] = [np.asarray(p, np.int32) for p in polys]
    elements = [
        plyfile.PlyElement.describe(v, "vertex"),
        plyfile.PlyElement.describe(
            f, "face", len_types={"vertex_indices": "u1"}, val_types={"vertex_indices": "i4"}
        ),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    plyfile.PlyData(elements, text=text, byte_order="<").write(str(path))
    return path


def write_label_table(path: Path, release: str, *, with_id: bool = True) -> Path:
    """A label table with the real headers: ``v2`` (id, raw_category, category, ...) or ``old``
    (category, count, nyuId, nyu40id, ...; ``with_id`` prepends an ``id`` column)."""
    names = ["wall", "office chair", "kitchen cabinet", "ceiling"]
    if release == "v2":
        header = ["id", "raw_category", "category", "count", "nyu40id", "eigen13id", "nyuClass", "nyu40class"]
        rows = [[TABLE_ID[n], n, n.split()[-1], 10, _NYU40[n], 0, n, n] for n in names]
        # A blank nyu40id cell (present in the real tables) must read as unannotated.
        rows.append([99, "storage", "storage", 8, "", "", "", ""])
    elif release == "old":
        header = ["category", "count", "nyuId", "nyu40id", "eigen13id", "nyuClass", "nyu40class"]
        rows = [[n, 10, 0, _NYU40[n], 0, n, n] for n in names]
        rows.append(["storage", 8, "", "", "", "", ""])
        if with_id:
            header = ["id", *header]
            rows = [[TABLE_ID.get(r[0], 99), *r] for r in rows]
    else:
        raise ValueError(release)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join("\t".join(str(c) for c in r) for r in [header, *rows]) + "\n")
    return path


def write_scene(
    scene_dir: Path,
    *,
    aggregation: bool = True,
    segs: bool = True,
    labels_ply: str | None = "nyu40",
) -> Path:
    """A ScanNet scene folder with the mesh and the chosen annotation files.

    ``labels_ply``: ``"nyu40"`` (v2), ``"table"`` (older release: label-table ids) or None.
    """
    sid = scene_dir.name
    xyz, faces = mesh_vertices()
    write_mesh_ply(scene_dir / f"{sid}_vh_clean_2.ply", xyz, faces)
    if segs:
        seg = {"params": {"kThresh": "0.0001", "segMinVerts": "20"}, "sceneId": f"{sid}_vh_clean_2"}
        seg["segIndices"] = SEG_INDICES.tolist()
        (scene_dir / f"{sid}_vh_clean_2.0.010000.segs.json").write_text(json.dumps(seg))
    if aggregation:
        groups = [{"id": oid, "objectId": oid, "segments": s, "label": name} for oid, name, s in OBJECTS]
        agg = {"sceneId": f"scannet.{sid}", "appId": "Aggregator.v2", "segGroups": groups,
               "segmentsFile": f"scannet.{sid}_vh_clean_2.0.010000.segs.json"}  # fmt: skip
        (scene_dir / f"{sid}.aggregation.json").write_text(json.dumps(agg))
    if labels_ply is not None:
        label = NYU40_PER_VERTEX if labels_ply == "nyu40" else TABLE_ID_PER_VERTEX
        write_mesh_ply(scene_dir / f"{sid}_vh_clean_2.labels.ply", xyz, faces, label=label)
    return scene_dir


def write_frames(
    frames_dir: Path, n: int = 4, bad_pose: tuple[int, ...] = ()
) -> tuple[dict[int, dict], np.ndarray, np.ndarray]:
    """A SensReader export of ``n`` frames; frames in ``bad_pose`` get SensReader's ``-inf`` pose.

    Returns, per index, the colour, depth (uint16 millimetres) and pose written, and the colour and
    depth intrinsics.
    """
    for sub in ("color", "depth", "pose", "intrinsic"):
        (frames_dir / sub).mkdir(parents=True, exist_ok=True)
    k_color = np.array([[1170.2, 0, 647.8, 0], [0, 1170.2, 483.8, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    k_depth = np.array([[577.6, 0, 318.9, 0], [0, 578.7, 242.7, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    np.savetxt(frames_dir / "intrinsic" / "intrinsic_color.txt", k_color, fmt="%f")
    np.savetxt(frames_dir / "intrinsic" / "intrinsic_depth.txt", k_depth, fmt="%f")
    written = {}
    for i in range(n):
        color = np.zeros((12, 16, 3), np.uint8)
        color[...] = (10 * i, 100, 200)  # flat colours survive JPEG unchanged (up to rounding)
        depth = (np.arange(8 * 10).reshape(8, 10) * 37 + 500 * i).astype(np.uint16)
        depth[0, 0] = 0
        pose = np.eye(4)
        pose[:3, 3] = [i, 2.0 * i, 0.5]
        if i in bad_pose:
            pose[:] = -np.inf
        Image.fromarray(color).save(frames_dir / "color" / f"{i}.jpg", quality=95)
        Image.fromarray(depth).save(frames_dir / "depth" / f"{i}.png")
        np.savetxt(frames_dir / "pose" / f"{i}.txt", pose, fmt="%f")
        written[i] = {"color": color, "depth": depth, "pose": pose}
    return written, k_color, k_depth


def write_annotation(path: Path, points: np.ndarray, *, fmt: str = "%.6f %.6f %.6f %d %d %d") -> Path:
    """An S3DIS annotation file: ``x y z r g b`` a line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(path, points, fmt=fmt)
    return path


def write_room(room_dir: Path, objects: list[tuple[str, int]], seed: int = 0) -> dict[str, np.ndarray]:
    """An S3DIS room with one annotation file per ``(file stem, point count)``; returns the points."""
    rng = np.random.default_rng(seed)
    out = {}
    for stem, count in objects:
        pts = np.concatenate(
            [rng.uniform(-5, 5, (count, 3)).round(3), rng.integers(0, 256, (count, 3))], axis=1
        )
        write_annotation(room_dir / "Annotations" / f"{stem}.txt", pts)
        out[stem] = pts
    # The real rooms also hold the whole room in one unlabelled file, which the reader must not use.
    (room_dir / f"{room_dir.name}.txt").write_text("0 0 0 0 0 0\n")
    return out
