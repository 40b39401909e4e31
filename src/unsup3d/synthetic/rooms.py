"""Synthetic indoor scenes written in ScanNet-v2's raw layout: PointDC's built-in data.

``generate_rooms(root, SyntheticRoomsConfig())`` writes, deterministically (same seed, same bytes)::

    <root>/scannetv2-labels.combined.tsv, scannetv2_train.txt, scannetv2_val.txt
    <root>/scans/scene0000_00/scene0000_00_vh_clean_2.ply              mesh, binary little-endian
                              scene0000_00_vh_clean_2.labels.ply       + ushort label (NYU40 id)
                              scene0000_00_vh_clean_2.0.010000.segs.json   over-segmentation
                              scene0000_00.aggregation.json            segGroups: objects -> segments
                              scene0000_00.txt                         metadata, axisAlignment
                              color/<i>.jpg depth/<i>.png pose/<i>.txt intrinsic/intrinsic_{color,depth}.txt

Rooms are bedrooms, living rooms, offices, kitchens and bathrooms (cycled over the scenes), 3-8 m a
side and 2.5-3 m high, without a ceiling unless asked. All 20 ScanNet-20 classes occur (NYU40 id):
wall 1, floor 2, cabinet 3, bed 4, chair 5, sofa 6, table 7, door 8, window 9, bookshelf 10,
picture 11, counter 12, desk 14, curtain 16, refrigerator 24, shower curtain 28, toilet 33, sink 34,
bathtub 36, otherfurniture 39; besides them pillows, boxes, lamps, monitors, nightstands and
"object"s (NYU40 classes outside ScanNet-20, ignored there) and some surfaces left unannotated
(label 0), as in the real data. Several raw names map to one class (chair, office chair, armchair;
table, dining table, coffee table, end table; cabinet, kitchen cabinet, file cabinet; ...).

What makes it learnable, and what keeps it from being trivial: every class has its own parametric
shapes (legs and tops, backs and seats, shelves with books, folded curtains, basins), heights and
placement (against walls, free-standing, set into walls, hung on them, under counters), so geometry
and context identify it; colours come from palettes shared between classes (white paint, wood,
fabric, ceramic), with procedural textures (grain, weave, tiles, stripes) and baked lighting that
varies over a room, so colour hints at a class but never decides it; vertices carry smooth and
random noise, depth frames carry structured-light noise and drop-outs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unsup3d.data.prepare import write_text_atomic

from . import rooms_scannet as sn
from .rooms_geometry import rot_z
from .rooms_layout import ROOM_KINDS, SCENE_TYPES, Room, make_room
from .rooms_mesh import build_mesh
from .rooms_render import camera_poses, intrinsics, render_frame

GENERATOR_VERSION = 1  # bump when the output of a given config changes
MARKER = ".synthetic_rooms.json"
TABLE_NAME = "scannetv2-labels.combined.tsv"


@dataclass(frozen=True)
class SyntheticRoomsConfig:
    """Settings of the synthetic ScanNet. Defaults make ~8 scenes of 20-50k vertices in seconds each.

    ``image_size`` / ``depth_size`` are (height, width) of colour and depth frames (real ScanNet:
    968 x 1296 and 480 x 640), each with its own intrinsics. ``points_per_m2`` sets mesh density
    (real ``vh_clean_2`` meshes hold roughly 2,000 a square metre); ``segment_size`` the side in
    metres of the surface patches of the over-segmentation. ``frame_stride`` numbers the frames as
    an export of every n-th frame of a sequence does.
    """

    num_scenes: int = 8
    num_val: int = 2
    seed: int = 0
    frames_per_scene: int = 8
    frame_stride: int = 10
    image_size: tuple[int, int] = (240, 320)
    depth_size: tuple[int, int] = (180, 240)
    points_per_m2: float = 250.0
    room_side: tuple[float, float] = (3.0, 8.0)
    room_height: tuple[float, float] = (2.5, 3.0)
    segment_size: float = 0.4
    vertex_noise: float = 0.004
    ceiling: bool = False
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if self.num_scenes < 1 or not 0 <= self.num_val <= self.num_scenes:
            raise ValueError(
                f"need num_scenes >= 1 and 0 <= num_val <= num_scenes, got {self.num_scenes}, {self.num_val}"
            )
        if self.frames_per_scene < 0 or self.frame_stride < 1:
            raise ValueError("frames_per_scene must be >= 0 and frame_stride >= 1")
        for name in ("image_size", "depth_size"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) < 8:
                raise ValueError(f"{name} must be (height, width) of at least 8 pixels, got {size}")
        if not 1.0 <= self.points_per_m2 <= 1e5 or self.segment_size <= 0:
            raise ValueError("points_per_m2 must lie in [1, 1e5] and segment_size be positive")
        if (
            not 2.0 <= self.room_side[0] <= self.room_side[1]
            or not 2.2 <= self.room_height[0] <= self.room_height[1]
        ):
            raise ValueError(
                f"room_side {self.room_side} (min >= 2 m) and room_height {self.room_height} "
                "(min >= 2.2 m) must be increasing ranges"
            )

    def scene_fingerprint(self) -> str:
        """Hash of everything that shapes a scene's files (not how many scenes or which are val)."""
        d = dataclasses.asdict(self)
        d.pop("num_scenes")
        d.pop("num_val")
        d["version"] = GENERATOR_VERSION
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def scene_name(index: int) -> str:
    return f"scene{index:04d}_00"


def _marker_matches(scene_dir: Path, fingerprint: str) -> bool:
    try:
        return json.loads((scene_dir / MARKER).read_text()).get("fingerprint") == fingerprint
    except (OSError, ValueError):
        return False


def _rngs(config: SyntheticRoomsConfig, index: int) -> list[np.random.Generator]:
    # Independent streams: the layout of a scene does not change with mesh density or frame count.
    return [np.random.default_rng(s) for s in np.random.SeedSequence([config.seed, index]).spawn(4)]


def scene_room(config: SyntheticRoomsConfig, index: int) -> Room:
    """The furnished room (objects and their poses, before meshing) of scene ``index``."""
    kind = ROOM_KINDS[(index + config.seed) % len(ROOM_KINDS)]
    return make_room(_rngs(config, index)[0], kind, config.room_side, config.room_height, config.ceiling)


def _write_scene(out: Path, name: str, index: int, config: SyntheticRoomsConfig) -> None:
    """Generate scene ``index`` and write all its files into the directory ``out``."""
    _, mesh_rng, frame_rng, pose_rng = _rngs(config, index)
    room = scene_room(config, index)
    kind = room.kind
    spacing = 1.0 / np.sqrt(config.points_per_m2)
    mesh = build_mesh(room, mesh_rng, spacing, config.segment_size, config.vertex_noise)

    # Real meshes are neither axis-aligned nor at the origin; axisAlignment undoes that.
    to_world = np.eye(4)
    to_world[:3, :3] = rot_z(pose_rng.uniform(0, 2 * np.pi))
    rotated = mesh.verts @ to_world[:3, :3].T
    to_world[:2, 3] = -rotated[:, :2].min(axis=0) + pose_rng.uniform(0.0, 0.5, 2)
    verts = rotated + to_world[:3, 3]

    specs = [p.spec for p in room.objects]
    nyu = np.array([sn.LABELS[s.raw][1] if s.annotated else 0 for s in specs], dtype=np.uint16)[mesh.obj]
    groups = []
    for oi, spec in enumerate(specs):
        if spec.annotated:
            segs = np.unique(mesh.segment[mesh.obj == oi])
            if len(segs):
                groups.append((spec.raw, segs.tolist()))
    sn.write_bytes(out / f"{name}_vh_clean_2.ply", sn.ply_bytes(verts, mesh.colors, mesh.faces))
    sn.write_bytes(
        out / f"{name}_vh_clean_2.labels.ply", sn.ply_bytes(verts, sn.NYU40_PALETTE[nyu], mesh.faces, nyu)
    )
    sn.write_bytes(out / f"{name}_vh_clean_2.0.010000.segs.json", sn.segs_json(name, mesh.segment))
    sn.write_bytes(out / f"{name}.aggregation.json", sn.aggregation_json(name, groups))

    Kc, Kd = intrinsics(*config.image_size), intrinsics(*config.depth_size)
    sn.write_bytes(
        out / f"{name}.txt",
        sn.scene_info(
            np.linalg.inv(to_world),
            config.image_size,
            config.depth_size,
            Kc,
            Kd,
            config.frames_per_scene * config.frame_stride,
            SCENE_TYPES[kind],
        ),
    )
    sn.write_bytes(out / "intrinsic" / "intrinsic_color.txt", sn.matrix_text(sn.intrinsic_4x4(Kc)))
    sn.write_bytes(out / "intrinsic" / "intrinsic_depth.txt", sn.matrix_text(sn.intrinsic_4x4(Kd)))
    sn.write_bytes(out / "intrinsic" / "extrinsic_color.txt", sn.matrix_text(np.eye(4)))
    sn.write_bytes(out / "intrinsic" / "extrinsic_depth.txt", sn.matrix_text(np.eye(4)))
    if config.frames_per_scene == 0:
        return
    ceiling_rgb = np.array([225.0, 225.0, 220.0]) * room.ambient * 1.4
    for i, pose in enumerate(camera_poses(room, config.frames_per_scene, pose_rng)):
        world_pose = to_world @ pose
        rgb, depth = render_frame(
            verts,
            mesh.faces,
            mesh.colors,
            world_pose,
            config.image_size,
            config.depth_size,
            ceiling_rgb,
            frame_rng,
        )
        fid = i * config.frame_stride
        sn.write_bytes(out / "color" / f"{fid}.jpg", sn.jpeg_bytes(rgb, config.jpeg_quality))
        sn.write_bytes(out / "depth" / f"{fid}.png", sn.png16_bytes(depth))
        sn.write_bytes(out / "pose" / f"{fid}.txt", sn.matrix_text(world_pose))


def _check_root(root: Path) -> None:
    """Refuse a root that holds ScanNet files this generator did not write (a real download)."""
    if (root / TABLE_NAME).exists() and not (root / MARKER).is_file():
        raise FileExistsError(
            f"{root}: holds {TABLE_NAME} not written by the synthetic generator; choose an empty directory"
        )


def generate_rooms(root: str | os.PathLike, config: SyntheticRoomsConfig | None = None) -> list[Path]:
    """Write ``config.num_scenes`` synthetic scenes under ``root`` in ScanNet-v2's layout.

    Returns the scene directories (``<root>/scans/sceneXXXX_00``) in order. Scenes already written
    with the same settings are kept as they are; each new scene is built in a temporary directory
    and renamed into place, so an interrupted run leaves no half-written scene. A scene directory
    from other settings is replaced only when this generator wrote it; anything else raises.
    """
    config = config or SyntheticRoomsConfig()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _check_root(root)
    scans = root / "scans"
    scans.mkdir(exist_ok=True)
    fingerprint = config.scene_fingerprint()
    dirs = []
    for index in tqdm(range(config.num_scenes), desc="synthetic rooms", disable=None):
        name = scene_name(index)
        final = scans / name
        dirs.append(final)
        if _marker_matches(final, fingerprint):
            continue
        if final.exists() and not (final / MARKER).is_file():
            raise FileExistsError(
                f"{final}: exists and was not written by the synthetic generator; not replacing it"
            )
        tmp = scans / f".{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            _write_scene(tmp, name, index, config)
            (tmp / MARKER).write_text(
                json.dumps({"fingerprint": fingerprint, "config": dataclasses.asdict(config)}, sort_keys=True)
            )
            if final.exists():  # written by us with other settings: swap it out
                stale = scans / f".{name}.stale-{uuid.uuid4().hex[:8]}"
                os.rename(final, stale)
                shutil.rmtree(stale)
            try:
                os.rename(tmp, final)
            except OSError:
                if not _marker_matches(final, fingerprint):  # lost a race to a process with other settings
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)

    counts: dict[str, int] = {}
    for d in dirs:
        agg = json.loads((d / f"{d.name}.aggregation.json").read_text())
        for group in agg["segGroups"]:
            counts[group["label"]] = counts.get(group["label"], 0) + 1
    write_text_atomic(
        root / MARKER, json.dumps({"generator": "unsup3d.synthetic.rooms", "version": GENERATOR_VERSION})
    )
    write_text_atomic(root / TABLE_NAME, sn.label_table(counts))
    n_train = config.num_scenes - config.num_val
    write_text_atomic(root / "scannetv2_train.txt", "".join(f"{d.name}\n" for d in dirs[:n_train]))
    write_text_atomic(root / "scannetv2_val.txt", "".join(f"{d.name}\n" for d in dirs[n_train:]))
    return dirs
