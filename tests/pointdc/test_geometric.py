"""Hand-made descriptors (the teacher-free path) against brute-force references on known shapes."""

from __future__ import annotations

import numpy as np
import pytest

from unsup3d.pointdc.geometric import (
    DESCRIPTOR_GROUPS,
    descriptor_columns,
    floor_height,
    footprint_area,
    point_descriptors,
    weight_columns,
)

COLS = descriptor_columns()


def _grid(nx: int, ny: int, step: float) -> np.ndarray:
    x, y = np.meshgrid(np.arange(nx) * step, np.arange(ny) * step, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], 1)


def _room(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 4 m floor (z = 0), a wall along x = 0 (2.5 m high) and a 1 x 1 m table top at z = 0.75."""
    floor = np.c_[_grid(40, 40, 0.1), np.zeros(1600)]
    yz = _grid(40, 25, 0.1)
    wall = np.c_[np.zeros(1000), yz]
    table = np.c_[_grid(10, 10, 0.1) + 1.5, np.full(100, 0.75)]
    coord = np.concatenate([floor, wall, table]) + rng.normal(scale=1e-3, size=(2700, 3))
    part = np.repeat([0, 1, 2], [1600, 1000, 100])
    return coord.astype(np.float32), part


def test_columns_cover_every_group_once() -> None:
    assert sum(DESCRIPTOR_GROUPS.values()) == 14
    taken = np.zeros(14, dtype=int)
    for sl in COLS.values():
        taken[sl] += 1
    assert (taken == 1).all()


def test_verticality_height_and_floor() -> None:
    coord, part = _room(np.random.default_rng(0))
    d = point_descriptors(coord)
    vert = d[:, COLS["normal"]][:, 0]
    inner = (coord[:, 1] > 0.3) & (coord[:, 1] < 3.6)  # away from the wall's edges
    assert vert[(part == 0) & (coord[:, 0] > 0.3) & inner].min() > 0.95  # floor: horizontal
    assert vert[(part == 1) & (coord[:, 2] > 0.3) & inner].max() < 0.05  # wall: vertical
    assert abs(floor_height(coord)) < 0.01
    height = d[:, COLS["height"]][:, 0] * 3.0
    np.testing.assert_allclose(height[part == 2], 0.75, atol=0.02)
    assert d.dtype == np.float32 and d.shape == (len(coord), 14)
    assert d.min() >= 0.0 and d.max() <= 1.0


def _eigen_loop(coord: np.ndarray, i: int, k: int) -> np.ndarray:
    nbr = np.argsort(((coord - coord[i]) ** 2).sum(1))[:k]
    pts = coord[nbr] - coord[nbr].mean(0)
    lam = np.sort(np.linalg.eigvalsh(pts.T @ pts / k))[::-1]
    return np.array([(lam[0] - lam[1]) / lam[0], (lam[1] - lam[2]) / lam[0], lam[2] / lam[0]])


def test_shape_features_against_a_brute_force_neighbourhood() -> None:
    rng = np.random.default_rng(1)
    line = np.c_[np.linspace(0, 2, 200), rng.normal(scale=1e-3, size=(200, 2))]
    plane = np.c_[_grid(20, 20, 0.1), rng.normal(scale=1e-3, size=400)] + [3, 0, 0]
    ball = rng.normal(scale=0.05, size=(300, 3)) + [6, 0, 1]
    coord = np.concatenate([line, plane, ball]).astype(np.float32)
    d = point_descriptors(coord, k=16)
    shape = d[:, COLS["shape"]]
    for i in rng.choice(len(coord), 40, replace=False):
        np.testing.assert_allclose(shape[i], _eigen_loop(coord.astype(np.float64), i, 16), atol=1e-3)
    assert shape[20:180, 0].mean() > 0.95  # linearity of the line
    inner = (plane[:, 0] > 3.3) & (plane[:, 0] < 4.6) & (plane[:, 1] > 0.3) & (plane[:, 1] < 1.6)
    flat = shape[200:600][inner]
    assert flat[:, 1].mean() > 0.6 and flat[:, 1].mean() > flat[:, 0].mean()  # planar, not linear
    assert flat[:, 2].max() < 0.01  # and flat
    assert shape[600:, 2].mean() > 0.2  # scattering of the ball


@pytest.mark.parametrize("cap", [None, 2.0, 1.0])
def test_column_context_against_a_loop(cap: float | None) -> None:
    coord, part = _room(np.random.default_rng(2))
    d = point_descriptors(coord, column=0.3, column_cap=cap)
    ctx = d[:, COLS["context"]]
    z = coord[:, 2] - floor_height(coord)
    z = np.clip(z, 0, None)
    cell = np.floor(coord[:, :2] / 0.3).astype(int)
    for i in np.random.default_rng(3).choice(len(coord), 60, replace=False):
        near = (np.abs(cell - cell[i]) <= 1).all(1)
        if cap is not None:
            near &= z <= cap
        top = z[near].max() if near.any() else 0.0
        assert ctx[i, 0] == pytest.approx(min(top / 3.0, 1.0), abs=1e-5)
        assert ctx[i, 1] == pytest.approx(min(max(top - z[i], 0.0) / 3.0, 1.0), abs=1e-5)
    under_table = (part == 0) & (np.abs(coord[:, 0] - 1.95) < 0.3) & (np.abs(coord[:, 1] - 1.95) < 0.3)
    np.testing.assert_allclose(ctx[under_table, 0] * 3, 0.75, atol=0.02)
    by_wall = (part == 0) & (coord[:, 0] < 0.1)
    np.testing.assert_allclose(ctx[by_wall, 0] * 3, 2.5 if cap is None else cap, atol=0.1)


def test_a_ceiling_is_not_the_top_of_the_columns_under_it() -> None:
    coord, part = _room(np.random.default_rng(8))
    ceiling = np.c_[_grid(20, 20, 0.1) + 1.0, np.full(400, 2.5)].astype(np.float32)  # a patch over the table
    d_room = point_descriptors(coord)
    d = point_descriptors(np.concatenate([coord, ceiling]))[: len(coord)]
    ctx = COLS["context"]
    np.testing.assert_allclose(
        d[:, ctx.start : ctx.start + 2], d_room[:, ctx.start : ctx.start + 2], atol=1e-3
    )
    # counted (no cap), the ceiling is the top of every column under it, table and floor alike
    d_all = point_descriptors(np.concatenate([coord, ceiling]), column_cap=None)[: len(coord)]
    assert np.allclose(d_all[part == 2, ctx.start] * 3, 2.5, atol=0.01)


def test_outline_distance_is_the_distance_to_the_convex_hull() -> None:
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 4, (2000, 2))
    xy[:4] = [[0, 0], [0, 4], [4, 0], [4, 4]]
    coord = np.c_[xy, rng.uniform(0, 2, 2000)].astype(np.float32)
    d = point_descriptors(coord, outline="hull")
    expect = np.minimum.reduce([xy[:, 0], 4 - xy[:, 0], xy[:, 1], 4 - xy[:, 1]]) / 2.0
    np.testing.assert_allclose(d[:, COLS["context"].start + 2], np.minimum(expect, 1.0), atol=1e-4)


def _l_room(rng: np.random.Generator, n: int = 20000) -> np.ndarray:
    """Points filling an L: the 4 x 4 m square less its [2, 4] x [2, 4] corner."""
    xy = rng.uniform(0, 4, (2 * n, 2))
    xy = xy[~((xy[:, 0] > 2) & (xy[:, 1] > 2))][:n]
    return xy


def _distance_to_l_outline(xy: np.ndarray) -> np.ndarray:
    """Exact distance of points inside the L to its boundary: the nearest of its six edges."""
    edges = [
        ((0, 0), (4, 0)),
        ((4, 0), (4, 2)),
        ((4, 2), (2, 2)),
        ((2, 2), (2, 4)),
        ((2, 4), (0, 4)),
        ((0, 4), (0, 0)),
    ]
    out = np.full(len(xy), np.inf)
    for a, b in edges:
        a, b = np.asarray(a, float), np.asarray(b, float)
        t = np.clip(((xy - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        out = np.minimum(out, np.linalg.norm(xy - (a + t[:, None] * (b - a)), axis=1))
    return out


def test_footprint_outline_follows_a_room_that_is_not_convex() -> None:
    rng = np.random.default_rng(9)
    xy = _l_room(rng)
    coord = np.c_[xy, rng.uniform(0, 2, len(xy))].astype(np.float32)
    col = COLS["context"].start + 2
    got = point_descriptors(coord)[:, col] * 2.0  # metres (the range is 2 m; all distances are under 2)
    expect = _distance_to_l_outline(xy)
    assert np.abs(got - expect).max() < 0.1  # one 10 cm cell of the footprint's grid
    # the convex hull cannot see the L: by the inner corner it puts points up to 1.4 m from any edge
    hull = point_descriptors(coord, outline="hull")[:, col] * 2.0
    assert np.abs(hull - expect).max() > 0.5


def test_footprint_outline_ignores_holes_and_what_lies_outside() -> None:
    rng = np.random.default_rng(10)
    xy = _l_room(rng)
    room = np.c_[xy, rng.uniform(0, 2, len(xy))]
    col = COLS["context"].start + 2
    base = point_descriptors(room.astype(np.float32))[:, col]
    # an occlusion hole of 0.6 m in the middle of the floor is not an edge
    holed = np.linalg.norm(xy - [1.0, 1.0], axis=1) > 0.3
    d_holed = point_descriptors(room[holed].astype(np.float32))[:, col]
    np.testing.assert_allclose(d_holed, base[holed], atol=1e-6)
    # a patch seen through a door, 3 m away, moves no distance in the room
    far = np.c_[rng.uniform(7, 8, (300, 2)), rng.uniform(0, 2, 300)]
    d_far = point_descriptors(np.concatenate([room, far]).astype(np.float32))[: len(room), col]
    np.testing.assert_allclose(d_far, base, atol=1e-6)
    with pytest.raises(ValueError, match="outline"):
        point_descriptors(room.astype(np.float32), outline="box")


def test_footprint_area_is_the_floor_plan_not_the_hull() -> None:
    """The L's area is 12 square metres (its hull's 14); an occlusion hole does not lower it, what
    stands on the floor does not raise it, and a sparse scan (about one point a 10 cm cell, many
    cells empty) still covers it; within the grid's edge cells (a 10 cm strip round the outline)."""
    rng = np.random.default_rng(11)
    xy = _l_room(rng)
    z = rng.uniform(0, 2, len(xy))
    dense = footprint_area(np.c_[xy, z])
    assert 12.0 <= dense <= 12.0 + 1.6 * 0.1  # the outline is 16 m long
    holed = np.linalg.norm(xy - [1.0, 1.0], axis=1) > 0.3
    assert footprint_area(np.c_[xy[holed], z[holed]]) == dense
    sparse = _l_room(rng, n=1200)  # one point a cell on average: about a third of the cells empty
    assert 11.5 <= footprint_area(np.c_[sparse, np.zeros(len(sparse))]) <= 12.2
    # the same points scaled by 2: four times the area (48 square metres)
    assert 48.0 <= footprint_area(np.c_[2 * xy, z]) <= 48.0 + 3.2 * 0.1
    assert footprint_area(np.zeros((0, 3))) == 0.0
    with pytest.raises(ValueError, match="non-finite"):
        footprint_area(np.array([[0.0, 0.0, 0.0], [np.nan, 1.0, 0.0]]))


def test_segment_features_against_a_loop() -> None:
    coord, part = _room(np.random.default_rng(5))
    sp = part.copy()
    sp[:10] = -1
    d = point_descriptors(coord, superpoint=sp)
    seg = d[:, COLS["segment"]]
    assert (seg[:10] == 0).all()
    for s in range(3):
        pts = coord[sp == s].astype(np.float64)
        xy = pts[:, :2] - pts[:, :2].mean(0)
        main = np.linalg.eigvalsh(xy.T @ xy / len(xy)).max()
        expect = [
            min((pts[:, 2].max() - pts[:, 2].min()) / 2.0, 1.0),
            min(2 * np.sqrt(main) / 2.0, 1.0),
            min(np.log10(len(pts)) / 4.0, 1.0),
        ]
        np.testing.assert_allclose(seg[sp == s], np.tile(expect, ((sp == s).sum(), 1)), atol=1e-4)


def test_color_and_weights() -> None:
    coord, _ = _room(np.random.default_rng(6))
    color = np.random.default_rng(7).integers(0, 256, (len(coord), 3)).astype(np.uint8)
    d = point_descriptors(coord, color)
    np.testing.assert_allclose(d[:, COLS["color"]], color / 255.0, atol=1e-6)
    np.testing.assert_allclose(point_descriptors(coord)[:, COLS["color"]], 0.5)
    w = weight_columns(d, {"color": 0.5, "height": 2.0})
    np.testing.assert_allclose(w[:, COLS["color"]], d[:, COLS["color"]] * 0.5)
    np.testing.assert_allclose(w[:, COLS["height"]], d[:, COLS["height"]] * 2.0)
    assert (w[:, COLS["shape"]] == 0).all()


def test_degenerate_scenes() -> None:
    assert point_descriptors(np.zeros((0, 3), np.float32)).shape == (0, 14)
    flat = np.c_[np.linspace(0, 1, 5), np.zeros(5), np.zeros(5)].astype(np.float32)  # a line: no hull
    d = point_descriptors(flat)
    assert np.isfinite(d).all()
