"""Synthetic LiDAR sequences in SemanticKITTI's raw layout: STSSL's built-in default data.

``generate_sequences(root, SyntheticLidarConfig(...))`` writes, for each sequence ``NN``::

    <root>/sequences/<NN>/velodyne/<6 digits>.bin   float32 x, y, z, intensity (sensor frame)
    <root>/sequences/<NN>/labels/<6 digits>.label   uint32: raw semantic id | instance id << 16
    <root>/sequences/<NN>/calib.txt                 KITTI sequence 00's P0..P3 and Tr
    <root>/sequences/<NN>/poses.txt                 camera-0 poses: Tr @ T_lidar @ inv(Tr), 12 a row
    <root>/sequences/<NN>/times.txt                 seconds

so every SemanticKITTI reader (``unsup3d.data.formats.semantic_kitti``, the semantic-kitti-api,
Pointcept) reads it unchanged. A 64-beam spinning sensor (HDL-64E-like) rides 1.73 m above the road
on a car driving a street at 5-15 m/s and scans at 10 Hz; the street has lanes, parking, kerbs,
sidewalks, buildings, fences, trees, bushes, terrain, lights and signs, with parked and moving cars,
cyclists and pedestrians (``lidar_layout``, ``lidar_objects``), ray cast against analytic shapes
(``lidar_raycast``). Ranges carry Gaussian noise, vegetation lets rays in, glass and distance drop
returns, and intensity follows the material. Output is a deterministic function of the config: the
same seed gives byte-identical files.

Density: 1024 azimuth steps (the default, about 55k points a frame) is half KITTI's horizontal
resolution, so STSSL's DBSCAN (eps 0.25 m, 10 points) finds objects to about 20 m; 2048 steps
(about 110k points) matches KITTI's density and cluster counts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import lidar_scene as ls
from .lidar_layout import build_scene
from .lidar_raycast import RayGrid, beam_elevations, cast_rays

GENERATOR_VERSION = 1
MARKER = ".unsup3d_synthetic_lidar.json"

# KITTI odometry sequence 00's published calibration (Tr: LiDAR -> camera 0).
KITTI_CALIB = """\
P0: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 0.000000000000e+00 0.000000000000e+00 \
7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 0.000000000000e+00
P1: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.861448000000e+02 0.000000000000e+00 \
7.188560000000e+02 1.852157000000e+02 0.000000000000e+00 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 0.000000000000e+00
P2: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 4.538225000000e+01 0.000000000000e+00 \
7.188560000000e+02 1.852157000000e+02 -1.130887000000e-01 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 3.779761000000e-03
P3: 7.188560000000e+02 0.000000000000e+00 6.071928000000e+02 -3.372877000000e+02 0.000000000000e+00 \
7.188560000000e+02 1.852157000000e+02 2.369057000000e+00 0.000000000000e+00 0.000000000000e+00 \
1.000000000000e+00 4.915215000000e-03
Tr: 4.276802385584e-04 -9.999672484946e-01 -8.084491683471e-03 -1.198459927713e-02 -7.210626507497e-03 \
8.081198471645e-03 -9.999413164504e-01 -5.403984729748e-02 9.999738645903e-01 4.859485810390e-04 \
-7.206933692422e-03 -2.921968648686e-01
"""


def kitti_tr() -> np.ndarray:
    """The 4x4 LiDAR -> camera-0 transform written to every ``calib.txt``."""
    line = next(x for x in KITTI_CALIB.splitlines() if x.startswith("Tr:"))
    tr = np.eye(4)
    tr[:3] = np.array(line.split()[1:], dtype=np.float64).reshape(3, 4)
    return tr


@dataclass(frozen=True)
class SyntheticLidarConfig:
    """What to generate. Sequences ``0 .. num_sequences-1`` (or the ids in ``sequences``) each get
    ``frames_per_sequence`` frames; a sequence's content depends only on ``seed``, its id and the
    scene/sensor settings, so adding sequences leaves the existing ones untouched.

    Scale up with ``num_sequences``, ``frames_per_sequence`` (the street grows with the drive) and
    ``azimuth_steps`` (2048 is about KITTI's density, 110k points a frame; 1024 gives about 55k), and
    generate in parallel with ``generate_sequences(..., num_workers=N)``.
    """

    num_sequences: int = 2
    frames_per_sequence: int = 20
    seed: int = 0
    sequences: tuple[int, ...] | None = None
    # sensor
    beams: int = 64
    azimuth_steps: int = 1024
    fov_up: float = 2.0
    fov_down: float = -24.8
    max_range: float = 100.0
    min_range: float = 2.5  # the roof of the ego car hides closer returns
    range_noise: float = 0.02
    dropout: float = 0.05
    outlier_rate: float = 5e-4
    sensor_height: float = 1.73
    frame_rate: float = 10.0
    # scene
    speed_range: tuple[float, float] = (5.0, 15.0)
    straight_fraction: float = 0.4
    max_curvature: float = 1.0 / 300.0
    parking_occupancy: float = 0.85
    moving_cars_per_100m: float = 4.0
    pedestrians_per_100m: float = 8.0
    cyclists_per_100m: float = 1.5
    signs_per_100m: float = 1.5

    def __post_init__(self) -> None:
        checks = {
            "num_sequences >= 0": self.num_sequences >= 0,
            "frames_per_sequence >= 1": self.frames_per_sequence >= 1,
            "seed >= 0": self.seed >= 0,
            "azimuth_steps >= 16": self.azimuth_steps >= 16,
            "0 < min_range < max_range": 0 < self.min_range < self.max_range,
            "0 <= dropout < 1": 0 <= self.dropout < 1,
            "0 < speed_range[0] <= speed_range[1]": 0 < self.speed_range[0] <= self.speed_range[1],
            "frame_rate > 0": self.frame_rate > 0,
            "sensor_height > 0.5": self.sensor_height > 0.5,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"SyntheticLidarConfig: need {', '.join(bad)}")
        if self.sequences is not None and any(not 0 <= s < 100 for s in self.sequences):
            raise ValueError(f"SyntheticLidarConfig: sequence ids must be 0..99, got {self.sequences}")
        if self.sequences is None and self.num_sequences > 100:
            raise ValueError("SyntheticLidarConfig: at most 100 sequences (two-digit names)")
        beam_elevations(self.beams, self.fov_up, self.fov_down)  # validates the beam settings

    def sequence_ids(self) -> list[int]:
        return list(self.sequences) if self.sequences is not None else list(range(self.num_sequences))

    def content_key(self, sequence: int) -> dict:
        """Everything a sequence's files depend on (written to its marker, compared on reuse)."""
        key = dataclasses.asdict(self)
        for name in ("num_sequences", "sequences"):
            key.pop(name)
        key["speed_range"] = list(self.speed_range)
        return {"generator": GENERATOR_VERSION, "sequence": sequence, **key}


def frame_times(config: SyntheticLidarConfig, rng: np.random.Generator) -> np.ndarray:
    """Scan times in seconds: the frame period with a millisecond of jitter, starting at 0."""
    n = config.frames_per_sequence
    jitter = np.concatenate([[0.0], rng.uniform(-1e-3, 1e-3, n - 1)])
    return np.arange(n) / config.frame_rate + jitter


def render_frame(
    scene: ls.Scene, t: float, config: SyntheticLidarConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sweep at time ``t``: points float32 (N, 4) in the sensor frame, labels uint32 (N,), and the
    sensor's 4x4 world pose. Points are ordered beam by beam from the top, counter-clockwise from ahead."""
    pose = scene.ego.pose(scene.street, t)
    origin = pose[:3, 3]
    yaw = float(np.arctan2(pose[1, 0], pose[0, 0]))
    elevation = beam_elevations(config.beams, config.fov_up, config.fov_down)
    offset = float(rng.uniform(0.0, 2 * np.pi / config.azimuth_steps))  # the spin is not frame-locked
    world = RayGrid(elevation, yaw + offset, config.azimuth_steps)
    dx, dy, dz = world.directions()
    t_ground, ground_cls = scene.street.ground_hits(origin, dx, dy, dz)
    prims = scene.primitives_at(t)
    dist, index = cast_rays(origin, world, prims, t_ground, config.max_range)

    shape = dist.shape
    noise = rng.standard_normal((3, *shape))
    uniform = rng.random((2, *shape))
    part = index >= 0
    pi = np.where(part, index, 0)
    table = np.zeros((max(ls.GROUND_MATERIAL) + 1, 4))
    for cls, material in ls.GROUND_MATERIAL.items():
        table[cls] = material
    gm = table[np.clip(ground_cls, 0, len(table) - 1)]
    semantic = np.where(part, scene.semantic[pi], ground_cls)
    instance = np.where(part, scene.instance[scene.obj[pi]], 0)
    mean = np.where(part, scene.intensity[pi], gm[..., 0])
    sd = np.where(part, scene.intensity_sd[pi], gm[..., 1])
    drop = np.where(part, scene.dropout[pi], gm[..., 2])
    penetration = np.where(part, scene.penetration[pi], gm[..., 3])

    glass = _facade_glass(origin, dist, (dx, dy, dz), prims, index, scene.windows)
    mean = np.where(glass, 0.1, mean)
    drop = drop + 0.2 * glass

    r = dist + config.range_noise * noise[0] + penetration * -np.log1p(-uniform[0])
    rel = np.where(np.isfinite(dist), dist, 0.0) / config.max_range
    intensity = (mean + sd * noise[1]) * (1.0 - 0.3 * rel)
    p_drop = config.dropout + drop + 0.3 * rel**2
    keep = (dist <= config.max_range) & (dist >= config.min_range) & (uniform[1] >= p_drop)

    # Spurious returns (dust, multipath): single points at random distance on random rays.
    n_out = int(rng.binomial(dist.size, config.outlier_rate))
    rays = rng.choice(dist.size, size=n_out, replace=False)
    flat = np.unravel_index(rays, shape)
    r[flat] = rng.uniform(config.min_range, 0.3 * config.max_range, n_out)
    intensity[flat] = rng.uniform(0.0, 0.2, n_out)
    semantic[flat], instance[flat] = ls.OUTLIER, 0
    keep[flat] = True

    sensor = RayGrid(elevation, offset, config.azimuth_steps).directions()
    xyz = np.stack([r[keep] * c[keep] for c in sensor], axis=1)
    value = np.round(np.clip(intensity[keep], 0.0, 0.99), 2)
    points = np.concatenate([xyz, value[:, None]], axis=1).astype(np.float32)
    labels = (semantic[keep].astype(np.uint32) & 0xFFFF) | (instance[keep].astype(np.uint32) << 16)
    return points, labels, pose


def _facade_glass(
    origin: np.ndarray, dist: np.ndarray, dirs: tuple, prims, index: np.ndarray, windows: np.ndarray
) -> np.ndarray:
    """Rays that land on a window of a facade: a storey every 3.2 m, a window every 2.6 m."""
    glass = np.zeros(dist.shape, dtype=bool)
    rows = np.flatnonzero((index.ravel() >= 0) & windows[np.maximum(index.ravel(), 0)])
    if len(rows) == 0:
        return glass
    i = index.ravel()[rows]
    t = dist.ravel()[rows]
    p = [origin[k] + t * dirs[k].ravel()[rows] for k in range(3)]
    c, s = np.cos(prims.yaw[i]), np.sin(prims.yaw[i])
    rx, ry = p[0] - prims.centre[i, 0], p[1] - prims.centre[i, 1]
    along = (c * rx + s * ry) + (-s * rx + c * ry)  # whichever face was hit, this runs along it
    storey = np.mod(p[2], 3.2) / 3.2
    bay = np.mod(along, 2.6) / 2.6
    glass.ravel()[rows] = (p[2] > 1.0) & (storey > 0.35) & (storey < 0.8) & (bay > 0.25) & (bay < 0.75)
    return glass


def _write_sequence(out: Path, config: SyntheticLidarConfig, sequence: int, progress: bool) -> None:
    scene_rng = np.random.default_rng(np.random.SeedSequence([config.seed, sequence, 0]))
    times = frame_times(config, scene_rng)
    scene = build_scene(config, scene_rng, times)
    (out / "velodyne").mkdir(parents=True)
    (out / "labels").mkdir()
    poses = []
    frames = tqdm(
        enumerate(times),
        total=len(times),
        desc=f"synthetic LiDAR sequence {sequence:02d}",
        disable=not progress,
        leave=False,
    )
    for k, t in frames:
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, sequence, 1, k]))
        points, labels, pose = render_frame(scene, float(t), config, rng)
        points.tofile(out / "velodyne" / f"{k:06d}.bin")
        labels.tofile(out / "labels" / f"{k:06d}.label")
        poses.append(pose)
    first = np.linalg.inv(poses[0])
    tr = kitti_tr()
    cam = [tr @ (first @ p) @ np.linalg.inv(tr) for p in poses]
    (out / "poses.txt").write_text("".join(" ".join(f"{v:.9e}" for v in c[:3].ravel()) + "\n" for c in cam))
    (out / "times.txt").write_text("".join(f"{t:.6e}\n" for t in times))
    (out / "calib.txt").write_text(KITTI_CALIB)
    (out / MARKER).write_text(json.dumps(config.content_key(sequence), sort_keys=True, indent=1) + "\n")


def _is_current(path: Path, key: dict) -> bool:
    marker = path / MARKER
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(key))
    except json.JSONDecodeError:
        return False


def generate_sequence(
    root: str | os.PathLike, config: SyntheticLidarConfig, sequence: int, progress: bool = False
) -> Path:
    """Write sequence ``sequence`` under ``root/sequences`` unless it is there with the same settings.

    The sequence is written to a hidden temporary folder and renamed into place, so a reader never
    sees half a sequence; a stale one written by this generator with other settings is replaced, and
    a folder the generator did not write is never touched (``FileExistsError`` names it).
    """
    final = Path(root) / "sequences" / f"{sequence:02d}"
    key = config.content_key(sequence)
    if _is_current(final, key):
        return final
    if final.exists() and not (final / MARKER).is_file():
        raise FileExistsError(f"{final}: not written by the synthetic LiDAR generator; not replacing it")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_sequence(tmp, config, sequence, progress)
        if _is_current(final, key):  # another process finished the same sequence meanwhile
            return final
        old = None
        if final.exists():
            old = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_current(final, key):  # another process put something else there meanwhile
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _generate_star(args: tuple) -> Path:
    return generate_sequence(*args)


def generate_sequences(
    root: str | os.PathLike,
    config: SyntheticLidarConfig | None = None,
    *,
    num_workers: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Write (or reuse) every sequence of ``config`` under ``root``; returns their folders in order.

    ``num_workers > 0`` generates sequences in that many processes (the output does not change).
    """
    config = config or SyntheticLidarConfig()
    ids = config.sequence_ids()
    if num_workers > 0 and len(ids) > 1:
        jobs = [(root, config, s, False) for s in ids]
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            return list(
                tqdm(
                    pool.map(_generate_star, jobs),
                    total=len(ids),
                    disable=not progress,
                    desc="synthetic LiDAR sequences",
                )
            )
    return [generate_sequence(root, config, s, progress) for s in ids]
