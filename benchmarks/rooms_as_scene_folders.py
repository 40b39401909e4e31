"""Write the built-in synthetic rooms as labelled scene folders, for ``benchmarks/realscan.py``.

    python benchmarks/rooms_as_scene_folders.py OUT [--train 16] [--val 7] [--scan-like]

Generates ``train + val`` rooms (:class:`~unsup3d.pointdc.datamodules.SyntheticRoomsDataModule`) and writes
each as ``OUT/<split>/<scene>/{coord,color,segment}.npy``: the points, colours and ScanNet-20 labels
only (no normals, no super-voxels, no frames), as ``unsup3d import`` writes real scans.

``--scan-like`` degrades the rooms towards what a real scan looks like, so that a method tuned on them
is not tuned on clean synthetic geometry: each scene is turned about z by a random angle (real scans
are not axis-aligned) and tilted by up to 1 degree; coordinates get 1.5 cm of noise; density varies
smoothly over the room (a point is kept with probability 0.35-1 from a random low-frequency field);
3-6 holes of 0.3-0.8 m (occlusions) are cut; 15-30 small clutter blobs (5-20 cm, 30-200 points, half
of them labelled "otherfurniture", the rest unlabelled) lie on random horizontal surfaces; colours get
a per-scene white balance and brightness and per-point noise. Every draw is seeded by the scene.

``--ceiling`` (with ``--scan-like``) adds a partial ceiling to every room, as many real ScanNet scans
hold: a plane at the walls' top over the floor's extent, at the floor's density, kept in patches of a
random low-frequency field (0-70 % of it), off-white, unlabelled (ScanNet-20 has no ceiling class).
A stress test of what the hand-made descriptors assume (what stands in a point's vertical column).
``--l-shaped`` (with ``--scan-like``) cuts a random corner (30-50 % of each side) out of every room,
everything in it removed, and closes the cut with two walls: real rooms are often not convex, which a
descriptor measuring the distance to the scan's outline must survive.
``--noisy-colour`` (with ``--scan-like``) makes the colours worse than ``--scan-like`` does: a
lighting field over each room (a brightness gain of +-25 % from a random low-frequency field, as a
real scan's exposure and shading vary over its frames) and per-point noise of sigma 20 on top. A stress
test of what uses the colours to draw boundaries (the grown regions' colour weight).
``--points-per-m2 D`` sets the generator's mesh density (vertices per square metre of surface; 250 by
default, about 6 cm apart) before ``--scan-like`` thins it. A real ScanNet scene cut to 50k points
holds about 2-3 times as many per square metre (a room's floor, walls and furniture are some 60-150
square metres), a small room more: a stress test of what counts neighbours (the super-voxels' and
regions' k-NN graphs, the descriptors' local shape). The layout of each room is the same at any density.
``--structure-share S`` thins each room's walls and floor at random, last, until they hold at most
``S`` of its labelled points (the other points are kept, array for array). The rooms' walls and floor
hold about three quarters of their labelled points, a real ScanNet scene's about half (the held-out
benchmark's description): ``--structure-share 0.5`` rehearses that balance, with the objects at their
density and the walls and floor sparser than them (which a real scan's are not), so it stresses what
counts neighbours on the planes as well as the class balance.
``--points-per-scene N`` keeps N points of each scene at random, last (every scene with more; the
kept rows in their order, every array alike), as a benchmark set of real scans "cut to 50k points a
scene" is made: a scene's density then falls with its size, so the large rooms are sparser than the
small ones, where ``--points-per-m2`` alone gives every room one density.
``--unsplit`` writes every scene under ``OUT/train/`` (the same scenes), as ``unsup3d import`` without
``--val-fraction`` leaves a folder: ``realscan.py`` then holds out every 3rd scene by name itself, the
case of the held-out benchmark (README, "A rehearsal of the held-out run").
``--normals`` also writes ``normal.npy``: the generator's vertex normals of its (noisy) mesh, which is
how Pointcept's ScanNet folders, and so ``unsup3d import`` of them, carry normals: oriented, from the
faces, not fitted to the points. Every degradation carries them (turned and tilted with the scene);
the added points get a ceiling's (down), a closing wall's (into the room) or, for clutter, random
directions. The coordinates, colours and labels are those of the same draw without it, array for
array. A scene folder with ``normal.npy`` has its super-voxels and regions grown on those normals
instead of normals estimated from the points: ``realscan.py`` on such a root rehearses that path.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from unsup3d.data.scene_folder import list_scenes, read_scene, write_scene  # noqa: E402
from unsup3d.pointdc.datamodules import SyntheticRoomsDataModule  # noqa: E402

OTHERFURNITURE = 19  # ScanNet-20's last class


def _rotation(rng: np.random.Generator) -> np.ndarray:
    yaw = rng.uniform(0, 2 * np.pi)
    tilt_x, tilt_y = np.deg2rad(rng.uniform(-1, 1, 2))
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(tilt_x), -np.sin(tilt_x)], [0, np.sin(tilt_x), np.cos(tilt_x)]])
    ry = np.array([[np.cos(tilt_y), 0, np.sin(tilt_y)], [0, 1, 0], [-np.sin(tilt_y), 0, np.cos(tilt_y)]])
    return rz @ rx @ ry


WALL, FLOOR = 0, 1  # ScanNet-20 class ids


def _low_frequency_field(coord: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A sum of 4 random plane waves at ``coord``, scaled to [0, 1]."""
    field = np.zeros(len(coord))
    for _ in range(4):
        k = rng.normal(size=3) * rng.uniform(0.5, 1.5)
        field += np.sin(coord @ k + rng.uniform(0, 2 * np.pi))
    return (field - field.min()) / (np.ptp(field) + 1e-9)


def _with_points(
    coord: np.ndarray,
    color: np.ndarray,
    segment: np.ndarray,
    pts: np.ndarray,
    rgb: np.ndarray,
    label: int,
    normal: np.ndarray | None = None,
    pts_normal: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """A scene of ``coord`` / ``color`` / ``segment`` (and ``normal``, where given) and the added points
    ``pts`` of colour ``rgb`` (clipped to 0-255), class ``label`` and normals ``pts_normal``."""
    out = {
        "coord": np.concatenate([coord, pts]).astype(np.float32),
        "color": np.concatenate([color.astype(np.float64), np.clip(rgb, 0, 255)]).astype(np.uint8),
        "segment": np.concatenate([segment, np.full(len(pts), label, dtype=segment.dtype)]),
    }
    if normal is not None:
        out["normal"] = np.concatenate([normal, np.broadcast_to(pts_normal, pts.shape)]).astype(np.float32)
    return out


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def partial_ceiling(scene: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``scene`` (axis-aligned, z up) with a partial, unlabelled ceiling (see ``--ceiling``)."""
    coord, segment = scene["coord"].astype(np.float64), scene["segment"]
    floor, wall = coord[segment == FLOOR], coord[segment == WALL]
    if len(floor) < 10 or len(wall) < 10:
        return scene
    lo, hi = floor[:, :2].min(0), floor[:, :2].max(0)
    pts = np.column_stack([rng.uniform(lo, hi, (len(floor), 2)), np.full(len(floor), wall[:, 2].max())])
    pts = pts[_low_frequency_field(pts, rng) < rng.uniform(0.0, 0.7)]
    rgb = np.array([225.0, 225.0, 220.0]) * rng.uniform(0.6, 1.0) + rng.normal(scale=6, size=pts.shape)
    down = np.array([0.0, 0.0, -1.0])
    return _with_points(coord, scene["color"], segment, pts, rgb, -1, scene.get("normal"), down)


def l_shaped(scene: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``scene`` (axis-aligned, z up) with a corner cut out and walled off (see ``--l-shaped``)."""
    coord, color, segment = scene["coord"].astype(np.float64), scene["color"], scene["segment"]
    floor, wall = coord[segment == FLOOR], segment == WALL
    if len(floor) < 10 or wall.sum() < 10:
        return scene
    lo, hi = floor[:, :2].min(0), floor[:, :2].max(0)
    corner = np.where(rng.random(2) < 0.5, lo, hi)
    inner = corner + (lo + hi - 2 * corner) * rng.uniform(0.3, 0.5, 2)  # the cut's inner corner
    span_lo, span_hi = np.minimum(corner, inner), np.maximum(corner, inner)
    outward = np.where(corner == lo, -1.0, 1.0) * 0.5  # past the corner: the room's own walls there go too
    cut_lo, cut_hi = np.minimum(corner + outward, inner), np.maximum(corner + outward, inner)
    keep = ~((coord[:, :2] > cut_lo) & (coord[:, :2] < cut_hi)).all(1)
    z0, z1 = floor[:, 2].mean(), coord[wall, 2].max()
    density = len(floor) / np.prod(hi - lo)  # points a square metre
    walls, normals = [], []
    into_room = np.where(corner == lo, 1.0, -1.0)  # from the cut towards what is left of the room
    for axis in (0, 1):  # the wall at inner[axis], spanning the cut along the other axis
        other = 1 - axis
        length = span_hi[other] - span_lo[other]
        n = int(density * length * (z1 - z0))
        pts = np.empty((n, 3))
        pts[:, axis] = inner[axis]
        pts[:, other] = rng.uniform(span_lo[other], span_hi[other], n)
        pts[:, 2] = rng.uniform(z0, z1, n)
        walls.append(pts)
        normals.append(np.tile(np.eye(3)[axis] * into_room[axis], (n, 1)))
    new = np.concatenate(walls)
    rgb = color[rng.choice(np.flatnonzero(wall), len(new))].astype(np.float64) + rng.normal(
        scale=4, size=new.shape
    )
    normal = scene.get("normal")
    return _with_points(
        coord[keep],
        color[keep],
        segment[keep],
        new,
        rgb,
        WALL,
        None if normal is None else normal[keep],
        np.concatenate(normals),
    )


def scan_like(scene: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The degradations of ``--scan-like`` (see the module docstring) applied to one scene; its
    ``normal``, where it has one, is carried (clutter gets random directions, drawn after everything
    else, so that the other arrays are those of the same draw without normals)."""
    coord = scene["coord"].astype(np.float64)
    normal = scene.get("normal")
    color = scene["color"].astype(np.float64)
    segment = scene["segment"].copy()
    # density: keep probability from a sum of a few random plane waves, in [0.35, 1]
    field = _low_frequency_field(coord, rng)
    keep = rng.random(len(coord)) < 0.35 + 0.65 * field
    # occlusion holes
    for _ in range(rng.integers(3, 7)):
        centre = coord[rng.integers(len(coord))]
        keep &= np.linalg.norm(coord - centre, axis=1) > rng.uniform(0.3, 0.8)
    coord, color, segment = coord[keep], color[keep], segment[keep]
    if normal is not None:
        normal = normal[keep].astype(np.float64)
    # clutter on horizontal surfaces above the floor (top 20 cm of random points)
    blobs_c, blobs_col, blobs_s = [], [], []
    for i in range(rng.integers(15, 31)):
        base = coord[rng.integers(len(coord))]
        n, size = rng.integers(30, 201), rng.uniform(0.05, 0.2)
        pts = base + rng.uniform(-size / 2, size / 2, (n, 3)) * [1, 1, 0] + [0, 0, 0]
        pts[:, 2] += rng.uniform(0, size, n)
        blobs_c.append(pts)
        blobs_col.append(np.tile(rng.uniform(0, 255, 3), (n, 1)) + rng.normal(scale=10, size=(n, 3)))
        blobs_s.append(np.full(n, OTHERFURNITURE if i % 2 == 0 else -1))
    added = sum(len(b) for b in blobs_c)
    coord = np.concatenate([coord, *blobs_c])
    color = np.concatenate([color, *blobs_col])
    segment = np.concatenate([segment, *blobs_s])
    rotation = _rotation(rng)
    coord = coord @ rotation.T + rng.normal(scale=0.015, size=coord.shape)
    gain = rng.uniform(0.8, 1.2, 3) * rng.uniform(0.75, 1.25)
    color = np.clip(color * gain + rng.normal(scale=8, size=color.shape), 0, 255)
    out = {"coord": coord.astype(np.float32), "color": color.astype(np.uint8), "segment": segment}
    if normal is not None:
        clutter = _unit(rng.normal(size=(added, 3)))  # drawn last: the other arrays are as without normals
        out["normal"] = (np.concatenate([normal, clutter]) @ rotation.T).astype(np.float32)
    return out


def thin_structure(
    scene: dict[str, np.ndarray], share: float, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``--structure-share``: wall and floor points dropped at random, each kept with the probability
    that leaves them ``share`` of the labelled points (expected); nothing is dropped where they hold less
    already. Every other point, and every array's rows of the kept points, stay as they were."""
    if not 0 < share < 1:
        raise ValueError(f"--structure-share must lie in (0, 1), got {share}")
    segment = scene["segment"]
    structure = np.isin(segment, (WALL, FLOOR))
    n_struct = int(structure.sum())
    n_other = int((segment >= 0).sum()) - n_struct
    if n_struct == 0 or n_struct <= share * (n_struct + n_other):
        return dict(scene)
    p = share * n_other / ((1 - share) * n_struct)
    keep = ~structure | (rng.random(len(segment)) < p)
    return {k: v[keep] for k, v in scene.items()}


def cut_to_points(scene: dict[str, np.ndarray], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``--points-per-scene``: ``n`` of the scene's points drawn at random without replacement, kept in
    their order with every array's rows; a scene of ``n`` points or fewer is returned as it is."""
    if n < 1:
        raise ValueError(f"--points-per-scene must be at least 1, got {n}")
    total = len(scene["coord"])
    if total <= n:
        return dict(scene)
    keep = np.sort(rng.choice(total, n, replace=False))
    return {k: v[keep] for k, v in scene.items()}


def noisy_colour(scene: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``--noisy-colour``: a +-25 % brightness field and per-point colour noise of sigma 20."""
    gain = 0.75 + 0.5 * _low_frequency_field(scene["coord"].astype(np.float64), rng)
    color = scene["color"].astype(np.float64) * gain[:, None] + rng.normal(
        scale=20, size=scene["color"].shape
    )
    return {**scene, "color": np.clip(color, 0, 255).astype(np.uint8)}


def write_rooms(
    out: Path,
    train: int,
    val: int,
    scan_like_rooms: bool,
    seed: int = 0,
    ceiling: bool = False,
    l_shape: bool = False,
    colour_noise: bool = False,
    unsplit: bool = False,
    normals: bool = False,
    points_per_m2: float = 250.0,
    structure_share: float | None = None,
    points_per_scene: int | None = None,
) -> Path:
    """Generate the rooms and write them under ``out`` (with ``unsplit`` every scene under
    ``out/train/``, the same scenes; with ``normals`` each scene's ``normal.npy`` too; ``points_per_m2``
    the meshes' density; ``structure_share`` the walls' and floor's share after thinning;
    ``points_per_scene`` the most points a scene keeps); returns ``out``."""
    work = out.parent / f".{out.name}-generator"
    dm = SyntheticRoomsDataModule(
        num_scenes=train + val,
        num_val=val,
        frames_per_scene=1,
        generator_seed=seed,
        points_per_m2=points_per_m2,
        data_root=str(work),
    )
    dm.prepare_data()
    written: set[Path] = set()
    for split in ("train", "val"):
        for i, d in enumerate(list_scenes(dm.prepared_root, split)):
            scene = read_scene(d, ["coord", "color", "segment", *(["normal"] if normals else [])])
            if l_shape:
                scene = l_shaped(scene, np.random.default_rng([seed, i, split == "val", 2]))
            if ceiling:
                scene = partial_ceiling(scene, np.random.default_rng([seed, i, split == "val", 1]))
            if scan_like_rooms:
                scene = scan_like(scene, np.random.default_rng([seed, i, split == "val"]))
            if colour_noise:
                scene = noisy_colour(scene, np.random.default_rng([seed, i, split == "val", 3]))
            if structure_share is not None:
                rng = np.random.default_rng([seed, i, split == "val", 4])
                scene = thin_structure(scene, structure_share, rng)
            if points_per_scene is not None:
                rng = np.random.default_rng([seed, i, split == "val", 5])
                scene = cut_to_points(scene, points_per_scene, rng)
            target = out / ("train" if unsplit else split) / d.name
            if target in written:  # unsplit: a val room must not replace a training room of its name
                raise FileExistsError(f"{target}: two rooms of one name")
            written.add(target)
            write_scene(target, scene)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--val", type=int, default=7)
    p.add_argument("--scan-like", action="store_true", help="degrade the rooms towards real scans")
    p.add_argument("--ceiling", action="store_true", help="add a partial, unlabelled ceiling to every room")
    p.add_argument("--l-shaped", action="store_true", help="cut a corner out of every room and wall it off")
    p.add_argument(
        "--noisy-colour", action="store_true", help="a lighting field and more colour noise in every room"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--unsplit",
        action="store_true",
        help="write every scene under OUT/train/, as unsup3d import without --val-fraction leaves a folder "
        "(realscan.py then holds out every 3rd scene by name itself)",
    )
    p.add_argument(
        "--normals",
        action="store_true",
        help="write normal.npy too: the mesh's vertex normals, as Pointcept's ScanNet folders carry them",
    )
    p.add_argument(
        "--points-per-m2",
        type=float,
        default=250.0,
        help="the meshes' density before --scan-like thins it (default 250, the generator's)",
    )
    p.add_argument(
        "--structure-share",
        type=float,
        default=None,
        help="thin the walls and floor at random until they hold this share of the labelled points "
        "(a real scan's: about 0.5)",
    )
    p.add_argument(
        "--points-per-scene",
        type=int,
        default=None,
        help="keep this many points of each scene at random, last (a benchmark's real scans: 50000)",
    )
    args = p.parse_args()
    write_rooms(
        args.out,
        args.train,
        args.val,
        args.scan_like,
        args.seed,
        args.ceiling,
        args.l_shaped,
        args.noisy_colour,
        args.unsplit,
        args.normals,
        args.points_per_m2,
        args.structure_share,
        args.points_per_scene,
    )
    if args.unsplit:
        print(f"{args.out}: all {args.train + args.val} scenes in train/")
    else:
        print(f"{args.out}: {args.train} train, {args.val} val scenes")


if __name__ == "__main__":
    main()
