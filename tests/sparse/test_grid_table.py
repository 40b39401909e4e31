"""Dense site tables against the sorted-key search they stand in for, and a loop over the sites."""

from __future__ import annotations

import pytest
import torch

from tests.sparse._dense import random_sites
from unsup3d.models import interpolate
from unsup3d.sparse import SparseTensor, grid_table, kernel_offsets
from unsup3d.sparse import kernel_map as km
from unsup3d.sparse.grid_table import build_table


def _room_sites(stride: int = 1, batches: int = 2, seed: int = 0) -> torch.Tensor:
    """Sites on the walls and floor of boxes (indoor-like: they fill a few % of their box)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batches):
        n = 4000
        u = torch.randint(0, 40, (n, 2), generator=g)
        face = torch.randint(0, 3, (n,), generator=g)
        a, c = u[:, 0], u[:, 1]
        zero = torch.zeros_like(a)
        xyz = torch.where(  # two walls (x = 0, y = 0; 24 high) and the floor (z = 0)
            (face == 0)[:, None], torch.stack([zero, a, c % 24], 1),
            torch.where(
                (face == 1)[:, None], torch.stack([a, zero, c % 24], 1), torch.stack([a, c, zero], 1)
            ),
        )
        xyz = torch.unique(torch.div(xyz, stride, rounding_mode="floor") * stride, dim=0)
        rows.append(torch.cat([torch.full((xyz.shape[0], 1), b), xyz], dim=1))
    sites = torch.cat(rows).int()
    return sites[torch.randperm(sites.shape[0], generator=g)]


def _loop_table(sites: torch.Tensor) -> dict[tuple[int, ...], int]:
    return {tuple(c): i for i, c in enumerate(sites.tolist())}


def test_table_reads_every_site_and_nothing_else() -> None:
    sites = random_sites(200, 12, batches=2, seed=3, stride=2, low=-6)
    values = torch.arange(sites.shape[0]) * 7
    grid = build_table(sites, values, (2, 2, 2), pad=(1, 1, 1))
    assert grid is not None
    assert torch.equal(grid.table[grid.key(sites)].long(), values)
    present = _loop_table(sites)
    # every lattice cell of the padded box: a site's value or -1
    b, x, y, z = torch.meshgrid(torch.arange(2), *(torch.arange(-8, 18, 2),) * 3, indexing="ij")
    cells = torch.stack([b, x, y, z], dim=-1).reshape(-1, 4)
    expected = torch.tensor([present[c] * 7 if c in present else -1 for c in map(tuple, cells.tolist())])
    assert torch.equal(grid.table[grid.key(cells)].long(), expected)
    step_x = grid.key(torch.tensor([[0, 2, 0, 0]])) - grid.key(torch.tensor([[0, 0, 0, 0]]))
    assert grid.delta((2, 0, 0)) == int(step_x)


def test_no_table_off_the_lattice_or_past_the_budget() -> None:
    sites = random_sites(100, 10, batches=1, seed=1, stride=2)
    assert build_table(sites, torch.arange(sites.shape[0]), (2, 2, 2)) is not None
    shifted = sites.clone()
    shifted[0, 1] += 1  # one site off the stride-2 lattice
    assert build_table(shifted, torch.arange(sites.shape[0]), (2, 2, 2)) is None
    far = torch.cat([sites, torch.tensor([[0, 4000, 4000, 4000]], dtype=torch.int32)])
    assert build_table(far, torch.arange(far.shape[0]), (2, 2, 2)) is None  # a box of 8e9 cells
    # the query sites count towards the box too
    assert build_table(sites, torch.arange(sites.shape[0]), (2, 2, 2), box=[far]) is None


def _maps_alike(a: km.KernelMap, b: km.KernelMap) -> None:
    assert a.bounds == b.bounds and a.identity == b.identity
    assert torch.equal(a.in_idx, b.in_idx) and torch.equal(a.out_idx, b.out_idx)


@pytest.mark.parametrize(
    "stride, k, dilation", [(1, 3, 1), (1, 5, 1), (2, 3, 1), (4, 3, 1), (1, 3, 2), (2, 2, 2)]
)
def test_kernel_maps_from_tables_equal_the_searched_ones(
    stride: int, k: int, dilation: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    sites = _room_sites(stride, seed=stride + k)
    x = SparseTensor(torch.zeros(sites.shape[0], 1), sites, stride=stride)
    offsets = kernel_offsets(k, dilation) * stride
    reach = offsets.abs().amax(dim=0).tolist()
    index = km.sorted_coords(sites, [r + 2 * stride for r in reach])
    searched = km.build_kernel_map(index, sites, sites, offsets, submanifold=True)
    down, _ = km.downsample_coords(sites, index.packing, (2 * stride,) * 3)
    searched_down = km.build_kernel_map(index, sites, down, offsets)
    calls = []
    monkeypatch.setattr(km, "_lookup_columns", lambda *a: calls.append(a) or pytest.fail("searched"))
    _maps_alike(km.build_kernel_map(index, sites, sites, offsets, submanifold=True, step=x.stride), searched)
    _maps_alike(km.build_kernel_map(index, sites, down, offsets, step=x.stride), searched_down)
    assert not calls


def test_kernel_maps_of_sparse_sites_fall_back_to_the_search(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    xyz = torch.unique(torch.randint(-2000, 2000, (3000, 3), generator=g), dim=0)  # a LiDAR-like spread
    sites = torch.cat([torch.zeros(xyz.shape[0], 1, dtype=torch.long), xyz], dim=1).int()
    offsets = kernel_offsets(3)
    index = km.sorted_coords(sites, (1, 1, 1))
    searched = km.build_kernel_map(index, sites, sites, offsets, submanifold=True)
    calls = []
    real = km._lookup_columns
    monkeypatch.setattr(km, "_lookup_columns", lambda *a: calls.append(1) or real(*a))
    _maps_alike(km.build_kernel_map(index, sites, sites, offsets, submanifold=True, step=(1, 1, 1)), searched)
    assert calls == [1]


@pytest.mark.parametrize("stride", [2, 4, 16])
def test_interpolation_from_a_table_equals_the_search(stride: int, monkeypatch: pytest.MonkeyPatch) -> None:
    query = _room_sites(1, seed=stride)
    parents = torch.div(query[:, 1:], stride, rounding_mode="floor") * stride
    coarse = torch.unique(torch.cat([query[:, :1], parents], dim=1), dim=0)
    coarse = coarse[torch.randperm(coarse.shape[0], generator=torch.Generator().manual_seed(1))][:-50]
    with monkeypatch.context() as patch:
        patch.setattr(interpolate, "_corners_searched", lambda *a: pytest.fail("searched"))
        table = interpolate.interpolation_matrix(coarse, stride, query)
    monkeypatch.setattr(grid_table, "DENSE_TABLE_MAX", 0)
    searched = interpolate.interpolation_matrix(coarse, stride, query)
    assert torch.equal(table.order, searched.order)
    for a, b in ((table.matrix, searched.matrix), (table.transpose, searched.transpose)):
        assert torch.equal(a.crow_indices(), b.crow_indices())
        assert torch.equal(a.col_indices(), b.col_indices()) and torch.equal(a.values(), b.values())


@pytest.mark.parametrize("stride", [(2, 2, 2), (4, 2, 8)])
def test_corner_weights_from_the_table_equal_the_products(stride: tuple[int, int, int]) -> None:
    s = torch.tensor(stride)
    g = torch.Generator().manual_seed(0)
    offset = torch.stack([torch.randint(0, a, (500,), generator=g) for a in stride], dim=1)
    table = interpolate._corner_weights(offset, s)
    assert torch.equal(table, interpolate._weights_of(offset, s))
    # and the products are the trilinear weights, written out per corner
    frac = offset.double() / s.double()
    for j in range(8):
        bits = [(j >> 2) & 1, (j >> 1) & 1, j & 1]
        w = torch.ones(500, dtype=torch.float64)
        for a, bit in enumerate(bits):
            w = w * (frac[:, a] if bit else 1 - frac[:, a])
        torch.testing.assert_close(table[:, j].double(), w, rtol=1e-6, atol=1e-7)
