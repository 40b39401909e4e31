"""Voxelisation and collation against plain-loop references; the network input features worked out by
hand; the STSSL voxel budget (`limit_voxels`)."""

from __future__ import annotations

import math

import numpy as np

from unsup3d.data.collate import collate_scenes, voxelize
from unsup3d.data.datasets import color_coord_features, color_height_features, xyz_intensity_features
from unsup3d.data.lidar_frames import limit_voxels

VOXEL = 0.5


def _scene_a() -> dict[str, np.ndarray]:
    # coordinates are multiples of 1/4, so coord / 0.5 floors exactly; negative ones floor downwards
    coord = np.array(
        [
            [0.25, 0.25, 0.25],  # voxel (0, 0, 0)
            [1.25, -0.25, 0.0],  # voxel (2, -1, 0)
            [0.75, 0.0, 0.25],  # voxel (1, 0, 0)
            [0.0, 0.25, 0.0],  # voxel (0, 0, 0) again: not its first point
            [1.0, -0.5, 0.25],  # voxel (2, -1, 0) again
            [-0.25, 1.75, 0.75],  # voxel (-1, 3, 1)
        ],
        dtype=np.float32,
    )
    return {
        "coord": coord,
        "superpoint": np.array([5, 5, -1, 9, 2, 9]),
        "segment": np.array([0, 1, 2, 3, 4, 5]),
        "scene_index": np.array(3),
    }


def _scene_b() -> dict[str, np.ndarray]:
    coord = np.array(
        [
            [2.0, 2.0, 2.0],  # voxel (4, 4, 4)
            [2.25, 2.25, 2.25],  # voxel (4, 4, 4) again
            [3.0, 2.0, 2.0],  # voxel (6, 4, 4)
            [2.0, 3.25, 2.0],  # voxel (4, 6, 4)
        ],
        dtype=np.float32,
    )
    return {
        "coord": coord,
        "superpoint": np.array([0, 3, 3, -1]),
        "segment": np.array([6, 7, 8, 9]),
        "scene_index": np.array(8),
    }


def _features(n: int, seed: int) -> np.ndarray:
    """Distinct features per point, so a voxel's feature names the point it came from."""
    return (np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * seed)


def _reference_voxels(coord: np.ndarray, voxel: float) -> tuple[dict[tuple, int], np.ndarray]:
    """Plain loop: each voxel key floor(c / voxel) -> its first point; and the grid minimum."""
    first: dict[tuple, int] = {}
    for i, c in enumerate(coord.tolist()):
        key = tuple(math.floor(v / voxel) for v in c)
        first.setdefault(key, i)
    low = np.array([min(k[d] for k in first) for d in range(3)])
    return first, low


def test_voxelize_coords_features_and_inverse_match_a_loop() -> None:
    """Each point's voxel is floor(coord / voxel) shifted to a zero minimum; a voxel's feature is its
    first point's; there is one row per distinct voxel."""
    for seed, sample in enumerate((_scene_a(), _scene_b())):
        feats = _features(len(sample["coord"]), seed)
        out = voxelize(sample, VOXEL, feats)
        first, low = _reference_voxels(sample["coord"], VOXEL)
        assert len(out["vox_coord"]) == len(out["vox_feat"]) == len(first)
        assert out["vox_coord"].min() == 0
        assert out["num_points"] == len(sample["coord"])
        for i, c in enumerate(sample["coord"].tolist()):
            key = tuple(math.floor(v / VOXEL) for v in c)
            row = out["inverse"][i]
            np.testing.assert_array_equal(out["vox_coord"][row], np.array(key) - low)
            np.testing.assert_array_equal(out["vox_feat"][row], feats[first[key]])
        # the point arrays themselves are carried unchanged
        np.testing.assert_array_equal(out["segment"], sample["segment"])


def test_voxelize_hand_worked_scene() -> None:
    """Scene A by hand: floors (0,0,0), (2,-1,0), (1,0,0), (-1,3,1); the minimum (-1,-1,0) moves them to
    (1,1,0), (3,0,0), (2,1,0), (0,4,1)."""
    sample = _scene_a()
    out = voxelize(sample, VOXEL, _features(6, 0))
    want_per_point = [[1, 1, 0], [3, 0, 0], [2, 1, 0], [1, 1, 0], [3, 0, 0], [0, 4, 1]]
    np.testing.assert_array_equal(out["vox_coord"][out["inverse"]], want_per_point)
    # first points of the voxels of points 3 and 4 are points 0 and 1
    np.testing.assert_array_equal(out["vox_feat"][out["inverse"][3]], [0.0, 1.0])
    np.testing.assert_array_equal(out["vox_feat"][out["inverse"][4]], [2.0, 3.0])


def test_collate_offsets_voxels_points_and_superpoints_per_item() -> None:
    """Two scenes: voxel coords get their item as column 0, each item's inverse is offset by the voxels
    before it, and superpoint ids become consecutive and disjoint across items."""
    samples = [_scene_a(), _scene_b()]
    feats = [_features(6, 0), _features(4, 1)]
    batch = collate_scenes([voxelize(s, VOXEL, f) for s, f in zip(samples, feats)])
    coords, vfeats = batch["sparse"].C.numpy(), batch["sparse"].F.numpy()
    assert len(coords) == 4 + 3  # 4 voxels in scene A, 3 in scene B
    inverse = batch["inverse"].numpy()
    p = 0
    for b, (s, f) in enumerate(zip(samples, feats)):
        first, low = _reference_voxels(s["coord"], VOXEL)
        for c in s["coord"].tolist():
            key = tuple(math.floor(v / VOXEL) for v in c)
            row = inverse[p]
            np.testing.assert_array_equal(coords[row], [b, *(np.array(key) - low)])
            np.testing.assert_array_equal(vfeats[row], f[first[key]])
            assert batch["point_batch"][p] == b
            p += 1
    assert batch["offsets"].tolist() == [0, 6, 10]
    assert batch["scene_index"].tolist() == [3, 8]
    # scene A's ids {2, 5, 9} -> 0, 1, 2; scene B's {0, 3} -> 3, 4; -1 stays -1
    assert batch["superpoint"].tolist() == [1, 1, -1, 2, 0, 2, 3, 4, 4, -1]
    assert batch["superpoint_batch"].tolist() == [0, 0, 0, 1, 1]
    assert batch["num_superpoints"] == 5
    assert batch["segment"].tolist() == list(range(10))


# -- network input features ---------------------------------------------------------------------


def _three_points() -> dict[str, np.ndarray]:
    return {
        "coord": np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [5.0, 0.0, 1.0]], dtype=np.float32),
        "color": np.array([[0, 255, 51], [255, 0, 102], [51, 51, 0]], dtype=np.uint8),
        "strength": np.array([0.5, 0.25, 1.0], dtype=np.float32),
    }


# colour / 255 - 0.5: 0 -> -0.5, 255 -> 0.5, 51 -> -0.3, 102 -> -0.1
_RGB = [[-0.5, 0.5, -0.3], [0.5, -0.5, -0.1], [-0.3, -0.3, -0.5]]


def test_color_coord_features_by_hand() -> None:
    """RGB in [-0.5, 0.5], then x and y minus their means (3 and 2), z as is."""
    got = color_coord_features(_three_points())
    want = np.array([rgb + xyz for rgb, xyz in zip(_RGB, [[-2, 0, 3], [0, 2, 5], [2, -2, 1]])])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_color_height_features_by_hand() -> None:
    """RGB in [-0.5, 0.5] and z only."""
    got = color_height_features(_three_points())
    want = np.array([rgb + [z] for rgb, z in zip(_RGB, [3, 5, 1])])
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_xyz_intensity_features_by_hand() -> None:
    """x, y, z as given, then the return strength."""
    got = xyz_intensity_features(_three_points())
    want = np.array([[1, 2, 3, 0.5], [3, 4, 5, 0.25], [5, 0, 1, 1.0]], dtype=np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


# -- limit_voxels -------------------------------------------------------------------------------


def _voxel_scene(num_voxels: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """`num_voxels` unit voxels on a line, holding 1 to 3 points each (voxel size 1)."""
    rng = np.random.default_rng(seed)
    rows = []
    for v in range(num_voxels):
        for _ in range(1 + v % 3):
            rows.append([v + rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)])
    coord = np.array(rows, dtype=np.float32)
    n = len(coord)
    return {"coord": coord, "point_id": np.arange(n), "strength": rng.random(n).astype(np.float32),
            "frame": np.array(11)}


def _points_per_voxel(coord: np.ndarray) -> dict[int, int]:
    counts: dict[int, int] = {}
    for x in coord[:, 0].tolist():
        counts[math.floor(x)] = counts.get(math.floor(x), 0) + 1
    return counts


def test_limit_voxels_keeps_exactly_max_whole_voxels() -> None:
    """Over the budget: exactly `max_voxels` voxels remain, each with all of its points, and every
    per-point array follows the same rows."""
    s = _voxel_scene()
    before = _points_per_voxel(s["coord"])
    out = limit_voxels(s, 1.0, 10, np.random.default_rng(0))
    after = _points_per_voxel(out["coord"])
    assert len(after) == 10
    for v, count in after.items():
        assert count == before[v]
    ids = out["point_id"]
    np.testing.assert_array_equal(out["coord"], s["coord"][ids])
    np.testing.assert_array_equal(out["strength"], s["strength"][ids])
    assert out["frame"] == 11
    # a different draw keeps a different set of voxels
    other = _points_per_voxel(limit_voxels(s, 1.0, 10, np.random.default_rng(1))["coord"])
    assert set(other) != set(after)


def test_limit_voxels_leaves_a_sample_within_the_budget() -> None:
    """At or under the budget nothing is dropped."""
    s = _voxel_scene(12)
    for budget in (12, 50):
        out = limit_voxels(s, 1.0, budget, np.random.default_rng(0))
        for key in ("coord", "point_id", "strength"):
            np.testing.assert_array_equal(out[key], s[key])
