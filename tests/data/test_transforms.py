"""Augmentations: invariant ones keep positions, equivariant ones carry every per-point array."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unsup3d.data import transforms as T


def _sample(n: int = 5000, extent: float = 10.0, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    coord = (rng.random((n, 3)) * [extent, extent, 3]).astype(np.float32)
    normal = rng.normal(size=(n, 3)).astype(np.float32)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return {
        "coord": coord,
        "color": rng.integers(0, 256, (n, 3)).astype(np.uint8),
        "normal": normal,
        "segment": rng.integers(-1, 20, n),
        "superpoint": np.arange(n) // 10,
        "scene_id": np.array(7),
    }


@pytest.mark.parametrize("t", [T.ColorJitter(p=1.0), T.ColorDrop(p=1.0), T.GaussianNoise(coord_sigma=0.0)])
def test_invariant_transforms_keep_positions_and_labels(t: T.Transform) -> None:
    s = _sample()
    out = t(s, np.random.default_rng(1))
    assert t.invariant
    np.testing.assert_array_equal(out["coord"], s["coord"])
    np.testing.assert_array_equal(out["segment"], s["segment"])
    assert out["color"].dtype == np.uint8
    assert not np.array_equal(out["color"], s["color"])


@pytest.mark.parametrize(("coord_sigma", "color_sigma"), [(0.05, 3.0), (0.01, 0.4)])
def test_gaussian_noise_has_the_asked_spread_and_zero_mean(coord_sigma: float, color_sigma: float) -> None:
    """Coordinates and colours move by zero-mean noise of std ``coord_sigma`` / ``color_sigma`` (checked
    against the sample statistics of 60,000 draws each); normals, labels and the input stay as they were.
    Colours lie in [40, 215], far from the clip at 0 and 255, so clipping cannot shift the mean."""
    n = 20000
    s = _sample(n)
    s["color"] = np.random.default_rng(5).integers(40, 216, (n, 3)).astype(np.uint8)
    before = {k: v.copy() for k, v in s.items()}
    out = T.GaussianNoise(coord_sigma=coord_sigma, color_sigma=color_sigma)(s, np.random.default_rng(2))

    d = out["coord"].astype(np.float64) - s["coord"]
    assert out["coord"].dtype == np.float32
    # std of a sample std is sigma / sqrt(2 n) (0.3 % here); mean's is sigma / sqrt(n) (0.7 % of sigma)
    np.testing.assert_allclose(d.std(axis=0), coord_sigma, rtol=0.03)
    assert np.all(np.abs(d.mean(axis=0)) < 5 * coord_sigma / np.sqrt(n))
    assert np.abs(d).max() < 6 * coord_sigma  # Gaussian tails, not a wrong scale on a few points

    c = out["color"].astype(np.float64) - s["color"]
    assert out["color"].dtype == np.uint8
    # uint8 colours: the noise lands on whole levels, k with the probability that N(0, sigma) rounds to k.
    levels = np.arange(-30, 31)
    cdf = [0.5 * (1 + math.erf((k + 0.5) / (color_sigma * math.sqrt(2)))) for k in levels]
    p = np.diff([0.0, *cdf])
    rounded_std = math.sqrt(float(np.sum(p * levels**2)))
    np.testing.assert_allclose(c.std(axis=0), rounded_std, rtol=0.03)
    assert np.all(np.abs(c.mean(axis=0)) < 5 * rounded_std / np.sqrt(n))
    # as many points brighten as darken
    assert abs((c > 0).mean() - (c < 0).mean()) < 0.02

    for key in ("normal", "segment", "superpoint", "scene_id"):
        np.testing.assert_array_equal(out[key], s[key])
    for key, value in before.items():  # the input sample is not written to
        np.testing.assert_array_equal(s[key], value)

    # sigma 0 switches each noise off: the other array alone moves
    coord_only = T.GaussianNoise(coord_sigma=coord_sigma, color_sigma=0.0)(s, np.random.default_rng(2))
    np.testing.assert_array_equal(coord_only["color"], s["color"])
    assert not np.array_equal(coord_only["coord"], s["coord"])


def test_rotation_preserves_distances_and_turns_normals() -> None:
    s = _sample(500)
    out = T.RandomRotateZ()(s, np.random.default_rng(3))
    d0 = np.linalg.norm(s["coord"][:, None] - s["coord"][None], axis=-1)
    d1 = np.linalg.norm(out["coord"][:, None] - out["coord"][None], axis=-1)
    np.testing.assert_allclose(d0, d1, atol=1e-4)
    np.testing.assert_allclose(out["coord"][:, 2], s["coord"][:, 2], atol=1e-6)
    # normals rotate with the points: the angle between a point's offset and its normal is kept
    i, j = 10, 20
    before = np.dot(s["coord"][j] - s["coord"][i], s["normal"][i])
    after = np.dot(out["coord"][j] - out["coord"][i], out["normal"][i])
    assert before == pytest.approx(after, abs=1e-4)


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _angle_about_z(before: np.ndarray, after: np.ndarray) -> float:
    """The angle of the best rotation about z taking ``before`` (N, 3) to ``after`` (2-D Procrustes)."""
    x0, y0, x1, y1 = before[:, 0], before[:, 1], after[:, 0], after[:, 1]
    return float(np.arctan2(np.sum(x0 * y1 - y0 * x1), np.sum(x0 * x1 + y0 * y1)))


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_rotation_turns_coords_and_normals_by_one_nonzero_angle(seed: int) -> None:
    """The output is coord @ R(a).T for one angle a about z, a != 0 and within max_angle; normals turn
    by the same R(a)."""
    s = _sample(200)
    out = T.RandomRotateZ(max_angle=1.0)(s, np.random.default_rng(seed))
    a = _angle_about_z(s["coord"].astype(np.float64), out["coord"].astype(np.float64))
    assert 1e-3 < abs(a) <= 1.0
    rot = _rot_z(a)
    np.testing.assert_allclose(out["coord"], s["coord"] @ rot.T, atol=1e-4)
    np.testing.assert_allclose(out["normal"], s["normal"] @ rot.T, atol=1e-5)
    np.testing.assert_array_equal(out["segment"], s["segment"])


def test_rotation_angles_vary_with_the_draw() -> None:
    """Different generators give different angles, spread over [-max_angle, max_angle]."""
    s = _sample(50)
    angles = [
        _angle_about_z(s["coord"], T.RandomRotateZ()(s, np.random.default_rng(k))["coord"]) for k in range(40)
    ]
    assert len({round(a, 4) for a in angles}) == 40
    assert min(angles) < -1.0 and max(angles) > 1.0


def test_flip_with_p1_negates_x_and_y_of_coords_and_normals() -> None:
    """p=1 mirrors both x and y (coordinates and normals); z and labels unchanged. p=0 changes nothing."""
    s = _sample(100)
    out = T.RandomFlip(p=1.0)(s, np.random.default_rng(0))
    sign = np.array([-1.0, -1.0, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(out["coord"], s["coord"] * sign)
    np.testing.assert_array_equal(out["normal"], s["normal"] * sign)
    np.testing.assert_array_equal(out["segment"], s["segment"])
    same = T.RandomFlip(p=0.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(same["coord"], s["coord"])
    np.testing.assert_array_equal(same["normal"], s["normal"])


def test_scale_with_fixed_factor_doubles_coords() -> None:
    """low = high = 2: every coordinate doubles; normals (directions) and labels stay."""
    s = _sample(100)
    out = T.RandomScale(low=2.0, high=2.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out["coord"], s["coord"] * 2)
    assert out["coord"].dtype == s["coord"].dtype
    np.testing.assert_array_equal(out["normal"], s["normal"])
    np.testing.assert_array_equal(out["segment"], s["segment"])


def test_crop_keeps_a_box_of_the_given_extent_and_all_points_in_it() -> None:
    """The kept points span at most `extent` in x and y, and no input point inside their bounding box
    was dropped (the crop box holds that bounding box)."""
    s = _sample(extent=20.0)
    for seed in range(5):
        out = T.RandomCrop(extent=5.0, min_points=10)(s, np.random.default_rng(seed))
        xy = out["coord"][:, :2]
        assert len(xy) < len(s["coord"])
        assert np.ptp(xy, axis=0).max() <= 5.0
        lo, hi = xy.min(0), xy.max(0)
        inside = np.all((s["coord"][:, :2] >= lo) & (s["coord"][:, :2] <= hi), axis=1)
        assert inside.sum() == len(xy)


def test_crop_carries_every_per_point_array() -> None:
    s = _sample(extent=20.0)
    out = T.RandomCrop(extent=5.0, min_points=10)(s, np.random.default_rng(0))
    n = len(out["coord"])
    assert 10 <= n < len(s["coord"])
    for key in ("color", "normal", "segment", "superpoint"):
        assert len(out[key]) == n
    assert out["scene_id"] == 7
    # the kept points are exactly the original rows: look each one up
    rows = {tuple(r) for r in s["coord"].tolist()}
    assert all(tuple(r) in rows for r in out["coord"].tolist())
    idx = {tuple(r): k for k, r in enumerate(s["coord"].tolist())}
    orig = np.array([idx[tuple(r)] for r in out["coord"].tolist()])
    np.testing.assert_array_equal(out["segment"], s["segment"][orig])
    np.testing.assert_array_equal(out["superpoint"], s["superpoint"][orig])


def test_crop_never_empties_a_scene() -> None:
    s = _sample(n=50, extent=20.0)
    out = T.RandomCrop(extent=1.0, min_points=1000)(s, np.random.default_rng(0))
    assert len(out["coord"]) == 50


def test_same_generator_seed_same_draws() -> None:
    s = _sample()
    aug = T.Compose([T.default_invariant(), T.default_equivariant(crop_extent=4.0)])
    assert not aug.invariant
    a = aug(s, np.random.default_rng(42))
    b = aug(s, np.random.default_rng(42))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = aug(s, np.random.default_rng(43))
    assert not np.array_equal(a["coord"], c["coord"])
