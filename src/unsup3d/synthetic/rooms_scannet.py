"""Writers for ScanNet-v2's raw files: meshes, label meshes, segments, aggregations, label table, frames.

Byte layouts follow the public release: ``*_vh_clean_2.ply`` is a binary little-endian mesh with
x y z (float) red green blue alpha (uchar) and ``vertex_indices`` (list uchar int);
``*_vh_clean_2.labels.ply`` adds ``label`` (ushort, NYU40 id in v2) and is coloured by the NYU40
palette; frames are what ScanNet's SensReader exports (``color/<i>.jpg``, ``depth/<i>.png`` uint16
millimetres, ``pose/<i>.txt`` camera-to-world, 4 x 4 ``intrinsic/*.txt``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

# A subset of scannetv2-labels.combined.tsv: id and names as in ScanNet v2 (ids are those ScanNet200
# keeps), NYU40 / eigen13 / mpcat40 mappings. Columns without a mapping here are left empty, as many
# are in the real table; ``count`` is filled with the instance count of the generated data.
TSV_HEADER = (
    "id",
    "raw_category",
    "category",
    "count",
    "nyu40id",
    "eigen13id",
    "nyuClass",
    "nyu40class",
    "eigen13class",
    "ModelNet40",
    "ModelNet10",
    "ShapeNetCore55",
    "synsetoffset",
    "wnsynsetid",
    "wnsynsetkey",
    "mpcat40",
    "mpcat40index",
)
# raw_category: (id, nyu40id, eigen13id, nyuClass, nyu40class, eigen13class, mpcat40, mpcat40index)
LABELS: dict[str, tuple[int, int, int, str, str, str, str, int]] = {
    "wall": (1, 1, 12, "wall", "wall", "Wall", "wall", 1),
    "chair": (2, 5, 4, "chair", "chair", "Chair", "chair", 3),
    "floor": (3, 2, 5, "floor", "floor", "Floor", "floor", 2),
    "table": (4, 7, 10, "table", "table", "Table", "table", 5),
    "door": (5, 8, 12, "door", "door", "Wall", "door", 4),
    "couch": (6, 6, 9, "sofa", "sofa", "Sofa", "sofa", 10),
    "cabinet": (7, 3, 6, "cabinet", "cabinet", "Furniture", "cabinet", 7),
    "desk": (9, 14, 10, "desk", "desk", "Table", "table", 5),
    "office chair": (10, 5, 4, "chair", "chair", "Chair", "chair", 3),
    "bed": (11, 4, 1, "bed", "bed", "Bed", "bed", 11),
    "pillow": (13, 18, 7, "pillow", "pillow", "Objects", "cushion", 8),
    "sink": (14, 34, 7, "sink", "sink", "Objects", "sink", 15),
    "picture": (15, 11, 8, "picture", "picture", "Picture", "picture", 6),
    "window": (16, 9, 13, "window", "window", "Window", "window", 9),
    "toilet": (17, 33, 7, "toilet", "toilet", "Objects", "toilet", 18),
    "bookshelf": (18, 10, 6, "bookshelf", "bookshelf", "Furniture", "shelving", 31),
    "monitor": (19, 40, 7, "monitor", "otherprop", "Objects", "tv_monitor", 22),
    "curtain": (21, 16, 13, "curtain", "curtain", "Window", "curtain", 12),
    "armchair": (23, 5, 4, "chair", "chair", "Chair", "chair", 3),
    "coffee table": (24, 7, 10, "table", "table", "Table", "table", 5),
    "box": (26, 29, 7, "box", "box", "Objects", "objects", 39),
    "refrigerator": (27, 24, 6, "refridgerator", "refridgerator", "Furniture", "appliances", 37),
    "lamp": (28, 35, 7, "lamp", "lamp", "Objects", "lighting", 28),
    "kitchen cabinet": (29, 3, 6, "cabinet", "cabinet", "Furniture", "cabinet", 7),
    "nightstand": (34, 32, 6, "night stand", "night stand", "Furniture", "chest_of_drawers", 13),
    "counter": (35, 12, 6, "counter", "counter", "Furniture", "counter", 26),
    "ceiling": (41, 22, 3, "ceiling", "ceiling", "Ceiling", "ceiling", 17),
    "bathtub": (42, 36, 7, "bathtub", "bathtub", "Objects", "bathtub", 25),
    "end table": (44, 7, 10, "table", "table", "Table", "table", 5),
    "dining table": (45, 7, 10, "table", "table", "Table", "table", 5),
    "shower curtain": (55, 28, 7, "shower curtain", "shower curtain", "Objects", "curtain", 12),
    "trash can": (56, 39, 6, "garbage bin", "otherfurniture", "Furniture", "objects", 39),
    "ottoman": (67, 39, 6, "ottoman", "otherfurniture", "Furniture", "stool", 19),
    "file cabinet": (75, 3, 6, "cabinet", "cabinet", "Furniture", "cabinet", 7),
    "kitchen counter": (159, 12, 6, "counter", "counter", "Furniture", "counter", 26),
    "object": (1163, 40, 7, "otherprop", "otherprop", "Objects", "objects", 39),
}

# ScanNet's NYU40 colour palette (util.create_color_palette), index = NYU40 id, 0 = unannotated.
NYU40_PALETTE = np.array(
    [
        (0, 0, 0),
        (174, 199, 232),
        (152, 223, 138),
        (31, 119, 180),
        (255, 187, 120),
        (188, 189, 34),
        (140, 86, 75),
        (255, 152, 150),
        (214, 39, 40),
        (197, 176, 213),
        (148, 103, 189),
        (196, 156, 148),
        (23, 190, 207),
        (178, 76, 76),
        (247, 182, 210),
        (66, 188, 102),
        (219, 219, 141),
        (140, 57, 197),
        (202, 185, 52),
        (51, 176, 203),
        (200, 54, 131),
        (92, 193, 61),
        (78, 71, 183),
        (172, 114, 82),
        (255, 127, 14),
        (91, 163, 138),
        (153, 98, 156),
        (140, 153, 101),
        (158, 218, 229),
        (100, 125, 154),
        (178, 127, 135),
        (120, 185, 128),
        (146, 111, 194),
        (44, 160, 44),
        (112, 128, 144),
        (96, 207, 209),
        (227, 119, 194),
        (213, 92, 176),
        (94, 106, 211),
        (82, 84, 163),
        (100, 85, 144),
    ],
    dtype=np.uint8,
)

# The graph segmentation's settings as the real *.segs.json records them.
SEGS_PARAMS = {
    "kThresh": "0.01",
    "segMinVerts": "20",
    "minPoints": "750",
    "maxPoints": "30000",
    "thinThresh": "0.05",
    "flatThresh": "0.001",
    "minLength": "0.02",
    "maxLength": "1",
}


def label_table(counts: dict[str, int]) -> str:
    """The label table as TSV text, one row per raw category, ``count`` from ``counts``."""
    lines = ["\t".join(TSV_HEADER)]
    for raw, (i, nyu, eigen, nyu_class, nyu40_class, eigen_class, mp, mp_index) in LABELS.items():
        row = [
            i,
            raw,
            raw,
            counts.get(raw, 0),
            nyu,
            eigen,
            nyu_class,
            nyu40_class,
            eigen_class,
            "",
            "",
            "",
            "",
            "",
            "",
            mp,
            mp_index,
        ]
        lines.append("\t".join(str(v) for v in row))
    return "\n".join(lines) + "\n"


def ply_bytes(
    verts: np.ndarray, colors: np.ndarray, faces: np.ndarray, labels: np.ndarray | None = None
) -> bytes:
    """A ScanNet-style binary little-endian PLY mesh (with a ushort ``label`` per vertex when given)."""
    fields = [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("red", "u1"),
        ("green", "u1"),
        ("blue", "u1"),
        ("alpha", "u1"),
    ]
    props = [
        "property float x",
        "property float y",
        "property float z",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "property uchar alpha",
    ]
    if labels is not None:
        fields.append(("label", "<u2"))
        props.append("property ushort label")
    header = [
        "ply",
        "format binary_little_endian 1.0",
        "comment VCGLIB generated",
        f"element vertex {len(verts)}",
        *props,
        f"element face {len(faces)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    v = np.empty(len(verts), dtype=np.dtype(fields))
    v["x"], v["y"], v["z"] = verts[:, 0], verts[:, 1], verts[:, 2]
    v["red"], v["green"], v["blue"], v["alpha"] = colors[:, 0], colors[:, 1], colors[:, 2], 255
    if labels is not None:
        v["label"] = labels
    f = np.empty(len(faces), dtype=np.dtype([("n", "u1"), ("i", "<i4", (3,))]))
    f["n"], f["i"] = 3, faces
    return ("\n".join(header) + "\n").encode("ascii") + v.tobytes() + f.tobytes()


def segs_json(scene: str, seg_indices: np.ndarray) -> str:
    """``<scene>_vh_clean_2.0.010000.segs.json``: one segment id per mesh vertex."""
    return json.dumps(
        {"params": SEGS_PARAMS, "sceneId": scene, "segIndices": seg_indices.tolist()}, separators=(",", ":")
    )


def aggregation_json(scene: str, groups: list[tuple[str, list[int]]]) -> str:
    """``<scene>.aggregation.json``: one segGroup (label = raw category) per annotated object."""
    seg_groups = [
        {"id": i, "objectId": i, "segments": segs, "label": raw} for i, (raw, segs) in enumerate(groups)
    ]
    return json.dumps(
        {
            "sceneId": f"scannet.{scene}",
            "appId": "Aggregator.v2",
            "segGroups": seg_groups,
            "segmentsFile": f"scannet.{scene}_vh_clean_2.0.010000.segs.json",
        },
        indent=1,
    )


def matrix_text(m: np.ndarray) -> str:
    """A matrix as SensReader writes it: one row a line, ``%f`` numbers separated by spaces."""
    return "".join(" ".join(f"{x:f}" for x in row) + "\n" for row in np.asarray(m, dtype=np.float64))


def intrinsic_4x4(K: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = K
    return out


def scene_info(
    align: np.ndarray,
    color_size: tuple[int, int],
    depth_size: tuple[int, int],
    Kc: np.ndarray,
    Kd: np.ndarray,
    frames: int,
    scene_type: str,
) -> str:
    """``<scene>.txt``: the scan's metadata, including the axis alignment of its mesh."""
    items = {
        "axisAlignment": " ".join(f"{x:f}" for x in align.ravel()),
        "colorHeight": color_size[0],
        "colorToDepthExtrinsics": " ".join(f"{x:f}" for x in np.eye(4).ravel()),
        "colorWidth": color_size[1],
        "depthHeight": depth_size[0],
        "depthWidth": depth_size[1],
        "fx_color": f"{Kc[0, 0]:f}",
        "fx_depth": f"{Kd[0, 0]:f}",
        "fy_color": f"{Kc[1, 1]:f}",
        "fy_depth": f"{Kd[1, 1]:f}",
        "mx_color": f"{Kc[0, 2]:f}",
        "mx_depth": f"{Kd[0, 2]:f}",
        "my_color": f"{Kc[1, 2]:f}",
        "my_depth": f"{Kd[1, 2]:f}",
        "numColorFrames": frames,
        "numDepthFrames": frames,
        "numIMUmeasurements": 0,
        "sceneType": scene_type,
    }
    return "".join(f"{k} = {v}\n" for k, v in items.items())


def jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png16_bytes(depth: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(depth.astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def write_bytes(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
