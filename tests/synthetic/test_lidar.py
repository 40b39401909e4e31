"""The synthetic LiDAR generator: sensor model, SemanticKITTI files, poses, instances, and STSSL fitness."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from unsup3d.data.formats import semantic_kitti as sk
from unsup3d.synthetic import lidar_scene as ls
from unsup3d.synthetic.lidar import (
    MARKER,
    SyntheticLidarConfig,
    generate_sequences,
    kitti_tr,
)
from unsup3d.synthetic.lidar_raycast import (
    BOX,
    CYLINDER,
    Primitives,
    RayGrid,
    beam_elevations,
    cast_rays,
)

CONFIG = SyntheticLidarConfig(num_sequences=2, frames_per_sequence=12, seed=3)
# Posts: unlike facades and car sides parallel to the drive, nothing slides along itself as the
# sensor moves, so without poses they do not overlap.
POSTS = [ls.TRUNK, ls.POLE, ls.TRAFFIC_SIGN]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_sequences(tmp_path_factory.mktemp("synthetic_lidar"), CONFIG, progress=False)


def _frames(seq_dir: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    out = []
    for frame in sk.list_frames(seq_dir, require_labels=True):
        points = sk.read_scan(frame.scan)
        semantic, instance = sk.read_labels(frame.labels, len(points))
        out.append((points, semantic, instance))
    return out


def _to_world(points: np.ndarray, pose: np.ndarray) -> np.ndarray:
    return points[:, :3].astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]


# ------------------------------------------------------------------------------------ sensor model
def _inside(p: np.ndarray, prims: Primitives) -> np.ndarray:
    """(N,) whether each point is inside any primitive: the independent reference for ray casting."""
    hit = np.zeros(len(p), dtype=bool)
    for kind, c, h, yaw in zip(prims.kind, prims.centre, prims.half, prims.yaw):
        rel = p - c
        cs, sn = np.cos(yaw), np.sin(yaw)
        x, y, z = cs * rel[:, 0] + sn * rel[:, 1], -sn * rel[:, 0] + cs * rel[:, 1], rel[:, 2]
        if kind == BOX:
            hit |= (np.abs(x) <= h[0]) & (np.abs(y) <= h[1]) & (np.abs(z) <= h[2])
        elif kind == CYLINDER:
            hit |= (x**2 + y**2 <= h[0] ** 2) & (np.abs(z) <= h[2])
        else:
            hit |= (x / h[0]) ** 2 + (y / h[1]) ** 2 + (z / h[2]) ** 2 <= 1
    return hit


def test_ray_casting_matches_ray_marching() -> None:
    rng = np.random.default_rng(0)
    n = 16
    kind = rng.integers(0, 3, n)
    centre = np.column_stack([rng.uniform(-12, 12, n), rng.uniform(-12, 12, n), rng.uniform(-1.5, 2.5, n)])
    centre[np.hypot(centre[:, 0], centre[:, 1]) < 3, :2] += 5.0  # keep the sensor outside every shape
    half = rng.uniform(0.2, 2.0, (n, 3))
    half[kind == CYLINDER, 1] = half[kind == CYLINDER, 0]
    prims = Primitives(kind, centre, half, rng.uniform(-np.pi, np.pi, n))
    origin = np.array([0.3, -0.2, 0.1])
    grid = RayGrid(np.radians(np.linspace(20, -30, 12)), 0.37, 48)
    t, index = cast_rays(origin, grid, prims, np.full((12, 48), np.inf), 20.0)

    step = 0.01
    dx, dy, dz = (c.ravel() for c in grid.directions())
    first = np.full(dx.size, np.inf)
    for s in np.arange(step, 20.0, step):
        p = origin + s * np.column_stack([dx, dy, dz])
        newly = np.isinf(first) & _inside(p, prims)
        first[newly] = s
    t = t.ravel()
    both = np.isfinite(first) & np.isfinite(t)
    assert both.sum() > 100  # the scene is hit by many rays
    # Grazing rays can hit a sliver thinner than the marching step: allow a handful of misses.
    assert (np.isfinite(first) != np.isfinite(t)).mean() < 0.01
    assert np.all((t[both] <= first[both] + 1e-9) & (t[both] > first[both] - step - 1e-9))
    assert np.all(index.ravel()[np.isinf(t)] == -1)


def test_beam_layout_is_hdl64_like() -> None:
    el = np.degrees(beam_elevations(64, 2.0, -24.8))
    assert el[0] == pytest.approx(2.0) and el[-1] == pytest.approx(-24.8)
    assert np.all(np.diff(el) < 0)
    spacing = -np.diff(el)
    assert spacing[:31].mean() == pytest.approx(1 / 3, abs=0.01)  # upper block
    assert spacing[32:].mean() == pytest.approx(0.515, abs=0.01)  # lower block


@pytest.mark.parametrize("curvature", [0.0, 1 / 250, -1 / 400])
def test_street_coordinates_and_ground(curvature: float) -> None:
    street = ls.Street(
        curvature, lane=3.5, bike=(1.5, 0.0), parking=(2.2, 0.0), sidewalk=(3.0, 4.0), kerb=0.15
    )
    rng = np.random.default_rng(1)
    s, d = rng.uniform(-50, 150, 500), rng.uniform(-20, 20, 500)
    x, y, heading = street.frame(s, d)
    s2, d2 = street.local(x, y)
    np.testing.assert_allclose(s2, s, atol=1e-6)
    np.testing.assert_allclose(d2, d, atol=1e-6)
    np.testing.assert_allclose(
        np.hypot(*np.diff(street.frame(np.array([10.0, 10.001]), 0.0)[:2], axis=1)), 0.001, rtol=1e-4
    )  # s is arc length on the centreline

    # Rays from 1.73 m above the right lane: each hit lies on the ground surface it reports.
    ox, oy, _ = street.frame(np.array(20.0), np.array(-1.7))
    origin = np.array([float(ox), float(oy), 1.73])
    grid = RayGrid(beam_elevations(), 0.1, 512)
    dx, dy, dz = grid.directions()
    t, cls = street.ground_hits(origin, dx, dy, dz)
    hit = np.isfinite(t)
    assert hit[dz < -0.01].all() and not hit[dz > 0].any()
    p = origin + t[hit][:, None] * np.column_stack([dx[hit], dy[hit], dz[hit]])
    _, dh = street.local(p[:, 0], p[:, 1])
    cls = cls[hit]
    flat = p[:, 2] > street.kerb - 1e-6  # raised hits
    road = np.isin(cls, [ls.ROAD, ls.PARKING, ls.LANE_MARKING])
    assert np.all(np.abs(p[road, 2]) < 1e-6)
    assert np.all((dh[road] >= -street.edge(0) - 1e-6) & (dh[road] <= street.edge(1) + 1e-6))
    kerb_face = ~road & ~flat
    kerb_line = np.where(dh[kerb_face] > 0, street.edge(1), street.edge(0))
    np.testing.assert_allclose(np.abs(dh[kerb_face]), kerb_line, atol=1e-6)
    assert np.all((p[kerb_face, 2] > -1e-6) & (p[kerb_face, 2] < street.kerb + 1e-6))
    assert np.all(cls[kerb_face] == ls.SIDEWALK)
    beyond = np.abs(dh[flat]) - np.where(dh[flat] > 0, street.edge(1), street.edge(0))
    assert np.all(beyond >= -1e-6)
    assert np.all((cls[flat] == ls.SIDEWALK) == (beyond < np.where(dh[flat] > 0, 4.0, 3.0)))
    assert {ls.ROAD, ls.PARKING, ls.LANE_MARKING, ls.SIDEWALK, ls.TERRAIN} <= set(cls.tolist())


# ----------------------------------------------------------------------------------------- files
def test_files_parse_as_semantic_kitti(dataset: list[Path]) -> None:
    assert [p.name for p in dataset] == ["00", "01"]
    for seq in dataset:
        frames = _frames(seq)
        assert len(frames) == CONFIG.frames_per_sequence
        for points, semantic, instance in frames:
            assert points.dtype == np.float32 and 20_000 < len(points) <= 64 * 1024
            r = np.linalg.norm(points[:, :3], axis=1)
            assert r.min() > CONFIG.min_range - 0.1 and r.max() < CONFIG.max_range + 0.2
            elevation = np.degrees(np.arcsin(points[:, 2] / r))
            assert elevation.min() > CONFIG.fov_down - 0.5 and elevation.max() < CONFIG.fov_up + 0.5
            assert points[:, 3].min() >= 0 and points[:, 3].max() <= 0.99
            np.testing.assert_allclose(points[:, 3], np.round(points[:, 3], 2), atol=1e-6)
            classes = sk.map_labels(semantic)  # every raw id is in SemanticKITTI's learning map
            things = np.isin(classes, range(8))  # car .. motorcyclist carry instances
            assert np.all(instance[things] > 0) and np.all(instance[~things] == 0)
            road = semantic == ls.ROAD
            assert np.median(points[road, 2]) == pytest.approx(-CONFIG.sensor_height, abs=0.01)
        times = sk.read_times(seq / "times.txt")
        assert len(times) == CONFIG.frames_per_sequence and times[0] == 0
        np.testing.assert_allclose(np.diff(times), 0.1, atol=2e-3)
        np.testing.assert_allclose(sk.read_calib(seq / "calib.txt")["Tr"], kitti_tr())
        poses = sk.read_poses(seq / "poses.txt", seq / "calib.txt")
        assert poses.shape == (CONFIG.frames_per_sequence, 4, 4)
        np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-8)
        np.testing.assert_allclose(
            poses[:, :3, :3] @ poses[:, :3, :3].transpose(0, 2, 1),
            np.broadcast_to(np.eye(3), (len(poses), 3, 3)),
            atol=1e-7,
        )
        speed = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1) / np.diff(times)
        assert np.all((speed > 4.5) & (speed < 15.5))
        # Camera-frame poses, as KITTI writes them: the camera looks along +z, so it moves along +z.
        cam = sk.read_camera_poses(seq / "poses.txt")
        assert cam[-1, 2, 3] > 0.5 * abs(cam[-1, 0, 3])


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    small = SyntheticLidarConfig(num_sequences=1, frames_per_sequence=2, azimuth_steps=128)
    a = generate_sequences(tmp_path / "a", small, progress=False)[0]
    b = generate_sequences(tmp_path / "b", small, progress=False)[0]
    c = generate_sequences(tmp_path / "c", dataclasses.replace(small, seed=1), progress=False)[0]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 2 * 2 + 4
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "velodyne/000000.bin").read_bytes() != (c / "velodyne/000000.bin").read_bytes()


def test_generation_is_idempotent_and_safe(tmp_path: Path) -> None:
    small = SyntheticLidarConfig(num_sequences=1, frames_per_sequence=1, azimuth_steps=64)
    seq = generate_sequences(tmp_path, small, progress=False)[0]
    stamp = (seq / "velodyne/000000.bin").stat().st_mtime_ns
    assert generate_sequences(tmp_path, small, progress=False) == [seq]
    assert (seq / "velodyne/000000.bin").stat().st_mtime_ns == stamp  # reused, not rewritten
    # More sequences leave the first untouched; another setting regenerates it.
    more = generate_sequences(tmp_path, dataclasses.replace(small, num_sequences=2), progress=False)
    assert [p.name for p in more] == ["00", "01"]
    assert (seq / "velodyne/000000.bin").stat().st_mtime_ns == stamp
    generate_sequences(tmp_path, dataclasses.replace(small, frames_per_sequence=2), progress=False)
    assert len(list((seq / "velodyne").glob("*.bin"))) == 2
    assert not [p for p in seq.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    (seq / MARKER).unlink()  # now it looks like someone else's data
    with pytest.raises(FileExistsError, match="00"):
        generate_sequences(tmp_path, small, progress=False)


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="min_range"):
        SyntheticLidarConfig(min_range=200.0)
    with pytest.raises(ValueError, match="frames_per_sequence"):
        SyntheticLidarConfig(frames_per_sequence=0)
    with pytest.raises(ValueError, match="beams"):
        SyntheticLidarConfig(beams=1)


# ------------------------------------------------------------------------------ scene and motion
def test_class_coverage(dataset: list[Path]) -> None:
    required = {
        ls.CAR,
        ls.BICYCLE,
        ls.PERSON,
        ls.ROAD,
        ls.PARKING,
        ls.SIDEWALK,
        ls.BUILDING,
        ls.FENCE,
        ls.LANE_MARKING,
        ls.VEGETATION,
        ls.TRUNK,
        ls.TERRAIN,
        ls.POLE,
        ls.TRAFFIC_SIGN,
        ls.MOVING_CAR,
        ls.MOVING_BICYCLIST,
        ls.MOVING_PERSON,
    }
    for seq in dataset:
        seen = set()
        for _, semantic, _ in _frames(seq):
            seen |= set(np.unique(semantic).tolist())
        assert required <= seen, required - seen


def test_poses_register_static_structure(dataset: list[Path]) -> None:
    for seq in dataset:
        poses = sk.read_poses(seq / "poses.txt", seq / "calib.txt")
        frames = _frames(seq)
        for a, b in ((0, 1), (5, 6)):
            pa, pb = (frames[k][0][np.isin(frames[k][1], POSTS)] for k in (a, b))
            with_poses = np.median(cKDTree(_to_world(pa, poses[a])).query(_to_world(pb, poses[b]))[0])
            without = np.median(cKDTree(pa[:, :3]).query(pb[:, :3])[0])
            assert with_poses < 0.06 and with_poses < 0.2 * without, (seq.name, a, with_poses, without)


def _centroids(frames: list, poses: np.ndarray, k: int) -> dict[int, tuple[int, np.ndarray, int]]:
    points, semantic, instance = frames[k]
    world = _to_world(points, poses[k])
    out = {}
    for i in np.unique(instance[instance > 0]):
        m = instance == i
        out[int(i)] = (int(semantic[m][0]), world[m].mean(axis=0), int(m.sum()))
        assert len(np.unique(semantic[m])) == 1  # one object, one class
        assert np.ptp(world[m], axis=0).max() < 11.0  # one id never spans two objects
    return out


def test_instances_persist_and_movers_move(dataset: list[Path]) -> None:
    checked: dict[int, int] = {}
    for seq in dataset:
        poses = sk.read_poses(seq / "poses.txt", seq / "calib.txt")
        frames = _frames(seq)
        cents = [_centroids(frames, poses, k) for k in range(len(frames))]
        for k in range(len(frames) - 1):
            common = cents[k].keys() & cents[k + 1].keys()
            assert len(common) >= 0.7 * min(len(cents[k]), len(cents[k + 1]))
            for i in common:
                assert cents[k][i][0] == cents[k + 1][i][0]
                if min(cents[k][i][2], cents[k + 1][i][2]) > 100:  # a few points say little of where it is
                    assert np.linalg.norm(cents[k][i][1] - cents[k + 1][i][1]) < 3.0  # 15 m/s + view change
        # Over 1.1 s a moving car covers >= 4.7 m and a walker or cyclist >= 0.88 m. The centroid of
        # what the sensor sees of an object drifts as other faces come into view: by less than its
        # length, and for cars in the ego's lane (same speed) hardly at all.
        far = len(frames) - 1
        bounds = {
            ls.MOVING_CAR: (3.0, np.inf),
            ls.MOVING_PERSON: (0.5, np.inf),
            ls.MOVING_BICYCLIST: (0.5, np.inf),
            ls.CAR: (0.0, 4.5),
            ls.PERSON: (0.0, 0.8),
        }
        for i in cents[0].keys() & cents[far].keys():
            cls, c0, n0 = cents[0][i]
            _, c1, n1 = cents[far][i]
            enough = 100 if cls in (ls.CAR, ls.MOVING_CAR) else 30
            if min(n0, n1) > enough and cls in bounds:
                checked[cls] = checked.get(cls, 0) + 1
                lo, hi = bounds[cls]
                assert lo < np.linalg.norm(c1 - c0) < hi, (seq.name, i, cls)
    assert checked.get(ls.MOVING_CAR) and checked.get(ls.CAR), checked
    assert checked.get(ls.MOVING_PERSON) or checked.get(ls.MOVING_BICYCLIST), checked


def test_clusters_can_be_tracked(dataset: list[Path]) -> None:
    """STSSL's segments (RANSAC ground, DBSCAN 0.25 m) on the synthetic frames are objects that the
    location term of its tracking (Eq. 1 with alpha = 0, 5 m gate) links from frame to frame."""
    from unsup3d.stssl.ground_clusters import cluster_points

    frames = _frames(dataset[0])[:4]
    keys, cents, purity = [], [], []
    for points, semantic, instance in frames:
        clusters = cluster_points(points)
        ids = [c for c in range(clusters.max() + 1) if 200 <= (clusters == c).sum() <= 20000]
        assert len(ids) >= 8
        key, cent = [], []
        for c in ids:
            m = clusters == c
            values, counts = np.unique(semantic[m] * 65536 + instance[m], return_counts=True)
            classes = sk.map_labels(semantic[m])
            purity.append(np.bincount(classes[classes >= 0]).max() / max((classes >= 0).sum(), 1))
            key.append(values[counts.argmax()])
            cent.append(points[m, :3].mean(axis=0))
        keys.append(np.array(key))
        cents.append(np.array(cent))
    # STSSL's over-segmentation check: the paper finds >= 73 % of KITTI's clusters 90 % pure.
    assert np.mean(np.array(purity) >= 0.9) >= 0.85
    right = total = 0
    for k in range(len(frames) - 1):
        cost = np.linalg.norm(cents[k][:, None] - cents[k + 1][None], axis=2)
        rows, cols = linear_sum_assignment(cost)
        ok = cost[rows, cols] <= 5.0
        right += int((keys[k][rows[ok]] == keys[k + 1][cols[ok]]).sum())
        total += int(ok.sum())
    assert total >= 20 and right >= 0.85 * total
