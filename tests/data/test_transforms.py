"""Augmentations: invariant ones keep positions, equivariant ones carry every per-point array."""

from __future__ import annotations

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
