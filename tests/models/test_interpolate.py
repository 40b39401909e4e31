"""Trilinear interpolation (MinkowskiEngine's `interpolate`) against a brute-force loop."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks._interpolate_loop import trilinear_interpolate_loop
from unsup3d.data.formats.semantic_kitti import read_scan
from unsup3d.models.interpolate import trilinear_interpolate, trilinear_interpolate_sum
from unsup3d.sparse import grid_table, sparse_quantize


@pytest.fixture(autouse=True, params=["table", "search"])
def lookup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: site lookups through dense tables where they fit, and through sorted keys only."""
    if request.param == "search":
        monkeypatch.setattr(grid_table, "DENSE_TABLE_MAX", 0)
    return request.param



def _reference(feats: torch.Tensor, coords: torch.Tensor, stride: int, query: torch.Tensor) -> torch.Tensor:
    table = {tuple(c): i for i, c in enumerate(coords.tolist())}
    out = torch.zeros(query.shape[0], feats.shape[1], dtype=torch.float64)
    for n, (b, *q) in enumerate(query.tolist()):
        lb = [stride * math.floor(v / stride) for v in q]
        for d in itertools.product((0, 1), repeat=3):
            corner = [lo + di * stride for lo, di in zip(lb, d)]
            i = table.get((b, *corner))
            if i is None:
                continue
            w = math.prod(1 - abs(v - c) / stride for v, c in zip(q, corner))
            out[n] += w * feats[i].double()
    return out


@pytest.mark.parametrize("stride", [2, 4, 16])
def test_matches_brute_force(stride: int) -> None:
    g = torch.Generator().manual_seed(stride)
    query = torch.cat([torch.randint(0, 2, (300, 1), generator=g),
                       torch.randint(-40, 40, (300, 3), generator=g)], dim=1)
    parents = torch.cat([query[:, :1], torch.div(query[:, 1:], stride, rounding_mode="floor") * stride], 1)
    # The coarse tensor: every query's parent (as a strided conv makes) plus some extra cells.
    extra = torch.cat([torch.randint(0, 2, (100, 1), generator=g),
                       torch.randint(-3, 3, (100, 3), generator=g) * stride], dim=1)
    coords = torch.unique(torch.cat([parents, extra]), dim=0)
    coords = coords[torch.randperm(coords.shape[0], generator=g)]
    feats = torch.randn(coords.shape[0], 5, generator=g)
    out = trilinear_interpolate(feats, coords.int(), stride, query.int())
    torch.testing.assert_close(out.double(), _reference(feats, coords, stride, query), rtol=1e-5, atol=1e-6)


def test_stride_one_is_identity_and_batches_are_separate() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 5, 5, 5]], dtype=torch.int32)
    feats = torch.arange(8.0).reshape(4, 2)
    out = trilinear_interpolate(feats, coords, 1, coords.flip(0))
    torch.testing.assert_close(out, feats.flip(0))
    # Batch 1 has no voxel at (1, 0, 0): batch 0's must not leak in.
    out = trilinear_interpolate(feats, coords, 1, torch.tensor([[1, 1, 0, 0]], dtype=torch.int32))
    torch.testing.assert_close(out, torch.zeros(1, 2))


def test_cell_centre_averages_the_eight_corners() -> None:
    corners = torch.tensor(list(itertools.product((0, 4), repeat=3)))
    coords = torch.cat([torch.zeros(8, 1, dtype=torch.long), corners], 1).int()
    feats = torch.randn(8, 3)
    out = trilinear_interpolate(feats, coords, 4, torch.tensor([[0, 2, 2, 2]], dtype=torch.int32))
    torch.testing.assert_close(out[0], feats.mean(0))
    # A missing corner is dropped without renormalising (MinkowskiEngine 0.5).
    out = trilinear_interpolate(feats[1:], coords[1:], 4, torch.tensor([[0, 2, 2, 2]], dtype=torch.int32))
    torch.testing.assert_close(out[0], feats[1:].sum(0) / 8)


def test_gradient_flows_to_coarse_features() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 2, 0, 0]], dtype=torch.int32)
    feats = torch.randn(2, 3, requires_grad=True)
    trilinear_interpolate(feats, coords, 2, torch.tensor([[0, 1, 0, 0]], dtype=torch.int32)).sum().backward()
    torch.testing.assert_close(feats.grad, torch.full((2, 3), 0.5))


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        trilinear_interpolate(torch.zeros(2, 1), torch.zeros(2, 3, dtype=torch.int32), 2,
                              torch.zeros(1, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="stride"):
        trilinear_interpolate(torch.zeros(2, 1), torch.zeros(2, 4, dtype=torch.int32), 0,
                              torch.zeros(1, 4, dtype=torch.int32))


def test_bfloat16_autocast_interpolates_like_float32() -> None:
    # autocast computes the corner weights (a prod) in float32 while the features are bfloat16
    g = torch.Generator().manual_seed(7)
    xyz = torch.randint(-20, 20, (200, 3), generator=g)
    query = torch.cat([torch.zeros(200, 1, dtype=torch.long), xyz], 1)
    parents = torch.div(xyz, 4, rounding_mode="floor") * 4
    coords = torch.unique(torch.cat([query[:, :1], parents], 1), dim=0)
    feats = torch.randn(coords.shape[0], 6, generator=g)
    linear = torch.nn.Linear(6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = trilinear_interpolate(linear(feats), coords.int(), 4, query.int())
    with torch.no_grad():
        full = trilinear_interpolate(linear(feats), coords.int(), 4, query.int())
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), full, rtol=3e-2, atol=3e-2 * float(full.abs().max()))


def _kitti_levels(kitti_seq_dir: Path) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
    """The voxels (5 cm) of a real KITTI frame and its coarse sites at strides 2, 4, 8, 16."""
    scan = read_scan(kitti_seq_dir / "velodyne" / "000000.bin")
    coords = torch.from_numpy(np.asarray(sparse_quantize(scan[:, :3], 0.05))).int()
    query = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], dim=1)
    levels = []
    for s in (2, 4, 8, 16):
        parents = torch.div(query[:, 1:], s, rounding_mode="floor") * s
        levels.append((s, torch.unique(torch.cat([query[:, :1], parents], dim=1), dim=0).int()))
    return query, levels


def test_sparse_matrix_equals_the_corner_loop_on_a_kitti_frame(kitti_seq_dir: Path) -> None:
    query, levels = _kitti_levels(kitti_seq_dir)
    g = torch.Generator().manual_seed(0)
    for stride, coords in levels:
        feats = torch.randn(coords.shape[0], 16, generator=g)
        weight = torch.randn(query.shape[0], 16, generator=g)  # a loss whose gradient differs per row
        outs, grads = [], []
        for fn in (trilinear_interpolate, trilinear_interpolate_loop):
            f = feats.clone().requires_grad_(True)
            out = fn(f, coords, stride, query)
            (out * weight).sum().backward()
            outs.append(out.detach())
            grads.append(f.grad)
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_weights_are_cached_per_stride_for_the_same_coordinates(monkeypatch: pytest.MonkeyPatch) -> None:
    import unsup3d.models.interpolate as interpolate

    built = []
    real = interpolate.interpolation_matrices
    monkeypatch.setattr(
        interpolate, "interpolation_matrices", lambda *a, **k: built.append(*a[1]) or real(*a, **k)
    )
    query = torch.tensor([[0, 1, 1, 1], [0, 3, 0, 2]], dtype=torch.int32)
    coarse = torch.tensor([[0, 0, 0, 0], [0, 2, 0, 2], [0, 2, 2, 2]], dtype=torch.int32)
    cache: dict = {}
    feats = torch.randn(3, 2)
    first = trilinear_interpolate(feats, coarse, 2, query, cache=cache)
    again = trilinear_interpolate(2 * feats, coarse, 2, query, cache=cache)
    assert built == [2] and torch.allclose(again, 2 * first)
    trilinear_interpolate(feats, coarse.clone(), 2, query, cache=cache)  # other coordinates: rebuilt
    assert built == [2, 2]


def test_sum_of_levels_equals_each_level_against_the_loop() -> None:
    g = torch.Generator().manual_seed(5)
    query = torch.cat([torch.randint(0, 2, (400, 1), generator=g),
                       torch.randint(-30, 30, (400, 3), generator=g)], dim=1)
    coords, feats, strides = [], [], [2, 4, 8, 16]
    for s in strides:
        parents = torch.cat([query[:, :1], torch.div(query[:, 1:], s, rounding_mode="floor") * s], 1)
        c = torch.unique(parents, dim=0)
        c = c[torch.randperm(c.shape[0], generator=g)][: max(1, c.shape[0] - 3)]  # a few corners absent
        coords.append(c.int())
        feats.append(torch.randn(c.shape[0], 6, generator=g, dtype=torch.float64, requires_grad=True))
    out = trilinear_interpolate_sum(feats, coords, strides, query.int())
    ref = sum(_reference(f, c, s, query) for f, c, s in zip(feats, coords, strides))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    # the gradient reaches every level as each level's own interpolation would send it
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad((out * w).sum(), feats)
    for f, c, s, grad in zip(feats, coords, strides, grads):
        (own,) = torch.autograd.grad((trilinear_interpolate(f, c, s, query.int()) * w).sum(), [f])
        torch.testing.assert_close(grad, own, rtol=1e-10, atol=1e-10)


def test_sum_of_levels_checks_its_inputs_and_skips_empty_levels() -> None:
    query = torch.tensor([[0, 1, 1, 1], [0, 3, 0, 2]], dtype=torch.int32)
    coarse = torch.tensor([[0, 0, 0, 0], [0, 2, 0, 2]], dtype=torch.int32)
    feats = torch.randn(2, 3)
    empty = torch.zeros(0, 4, dtype=torch.int32)
    out = trilinear_interpolate_sum([feats, torch.zeros(0, 3)], [coarse, empty], [2, 4], query)
    torch.testing.assert_close(out, trilinear_interpolate(feats, coarse, 2, query))
    with pytest.raises(ValueError, match="channels differ"):
        trilinear_interpolate_sum([feats, torch.randn(2, 4)], [coarse, coarse], [2, 2], query)
    with pytest.raises(ValueError, match="feature sets"):
        trilinear_interpolate_sum([feats], [coarse, coarse], [2, 2], query)
