"""Trilinear interpolation of a coarse sparse tensor at finer voxel coordinates.

This is MinkowskiEngine's `SparseTensor.interpolate(field)` (`features_at_coordinates`), which
PointDC's Res16FPN uses to bring every encoder level back to the input voxels: a query point q sees the
2^3 corners of the coarse cell holding it, ``lb = s * floor(q / s)`` and ``lb + s`` per axis, each with
weight ``prod_axis (1 - |q - corner| / s)``. Corners absent from the coarse tensor are skipped and the
remaining weights are not renormalised, as in MinkowskiEngine 0.5.

The weights depend on the coordinates only, so they form one sparse matrix ``S`` (queries x coarse
sites, at most 8 entries a row): the interpolation is ``S @ feats`` and its gradient ``S^T @ grad``,
two sparse products instead of eight gathers and scatters each way (forward + backward on a KITTI
frame's four Res16UNet levels: about 2x faster, ``benchmarks/interpolate.py``). ``S`` and ``S^T`` are
built once per (coarse coordinates, query) and can be cached with the tensors they belong to. The
corners are read from a dense table of the coarse sites where it is small enough
(`unsup3d.sparse.grid_table`), else found by a binary search of their sorted keys; the weights of a
stride's ``s^3`` query offsets are computed once and looked up. Both give the same matrix.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from unsup3d.sparse.grid_table import build_table

__all__ = [
    "Interpolation",
    "interpolation_matrices",
    "interpolation_matrix",
    "trilinear_interpolate",
    "trilinear_interpolate_sum",
]


class Interpolation(NamedTuple):
    """The weights of one interpolation of M coarse sites at N queries.

    The coarse sites are numbered in the order of their sorted keys: ``order[j]`` is the row of the
    coarse tensor at position j. ``matrix`` ``(N, M)`` and its ``transpose`` ``(M, N)`` are sparse CSR
    float32 in those positions, so the interpolation is ``matrix @ feats[order]``. In that numbering
    the 8 corners of a query come in increasing position, which makes ``matrix`` a valid CSR (sorted
    columns) without a sort.
    """

    matrix: Tensor
    transpose: Tensor
    order: Tensor


def _stride_vector(stride: int | tuple[int, ...] | Tensor, device: torch.device) -> Tensor:
    s = torch.as_tensor(stride, dtype=torch.long, device=device).flatten()
    if s.numel() == 1:
        s = s.expand(3)
    if s.numel() != 3 or bool((s <= 0).any()):
        raise ValueError(f"trilinear_interpolate: stride must be a positive int or 3 ints, got {stride}")
    return s


def _keys(coords: Tensor, lo: Tensor, span: Tensor) -> Tensor:
    """Pack (batch, x, y, z) rows into unique int64 keys; `lo` / `span` bound every column."""
    c = coords - lo
    return ((c[:, 0] * span[1] + c[:, 1]) * span[2] + c[:, 2]) * span[3] + c[:, 3]


def _csr(crow: Tensor, cols: Tensor, values: Tensor, shape: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():  # torch calls its CSR support "beta" once per process
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _crow(counts: Tensor) -> Tensor:
    """CSR row pointers from the entry count of every row."""
    crow = torch.zeros(counts.shape[0] + 1, dtype=torch.long, device=counts.device)
    torch.cumsum(counts, dim=0, out=crow[1:])
    return crow


def _check_shapes(coords: Tensor, query: Tensor) -> None:
    if coords.dim() != 2 or coords.shape[1] != 4 or query.dim() != 2 or query.shape[1] != 4:
        raise ValueError(
            f"trilinear_interpolate: coords and query must be (N, 4), got {tuple(coords.shape)} and "
            f"{tuple(query.shape)}"
        )


_CORNERS = tuple(itertools.product((0, 1), repeat=3))  # z fastest, as in the keys


def _weights_of(offset: Tensor, s: Tensor) -> Tensor:
    """``(n, 8)`` trilinear weights of the corners of queries `offset` `(n, 3)` into their cells."""
    frac = offset.to(torch.float32) / s.to(torch.float32)  # in [0, 1) per axis
    # corner j = (jx, jy, jz) in binary, z fastest: the product of the axes' 1 - frac for a 0, frac for a 1
    pair = torch.stack([1 - frac, frac], dim=2)  # (n, 3, 2)
    xy = (pair[:, 0, :, None] * pair[:, 1, None, :]).reshape(-1, 4, 1)
    return (xy * pair[:, 2, None, :]).reshape(-1, 8)


def _corner_weights(offset: Tensor, s: Tensor) -> Tensor:
    """`_weights_of` each query, read from a table of the stride's ``sx sy sz`` offsets where it is
    smaller than the queries (the same products, so the same values)."""
    sx, sy, sz = s.tolist()
    if sx * sy * sz > offset.shape[0]:
        return _weights_of(offset, s)
    axes = [torch.arange(a, device=s.device) for a in (sx, sy, sz)]
    # row (rx * sy + ry) * sz + rz of the table holds the weights of offset (rx, ry, rz)
    table = _weights_of(torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(3, -1).T, s)
    return table.index_select(0, (offset[:, 0] * sy + offset[:, 1]) * sz + offset[:, 2])


def _corners_dense(coords: Tensor, order: Tensor, cell: Tensor, s: Tensor) -> Tensor | None:
    """Columns ``(n, 8)`` of each query cell's 8 corners (-1 where absent), read from a dense table of
    the coarse sites on the lattice of the stride; None where no table is built (`build_table`)."""
    step = s.tolist()
    positions = torch.empty_like(order)
    positions[order] = torch.arange(order.shape[0], device=order.device)  # sorted position of each row
    grid = build_table(coords, positions, step, box=[cell], pad=(1, 1, 1))
    if grid is None:
        return None
    keys = grid.key(cell)
    deltas = torch.tensor([grid.delta([c * t for c, t in zip(corner, step)]) for corner in _CORNERS],
                          device=cell.device)
    return grid.table[keys[:, None] + deltas].long()


def _corners_searched(coords: Tensor, order: Tensor, lo: Tensor, hi: Tensor, span: Tensor, cell: Tensor,
                      s: Tensor) -> Tensor:
    """`_corners_dense`' columns by a binary search of the sorted coarse keys, once per distinct cell."""
    device = cell.device
    n = cell.shape[0]
    order_keys = _keys(coords, lo, span)[order]
    cell_lo = cell.min(dim=0).values
    cell_span = cell.max(dim=0).values - cell_lo + 1
    distinct, inverse = torch.unique(_keys(cell, cell_lo, cell_span), return_inverse=True)
    first = torch.empty(distinct.shape[0], dtype=torch.long, device=device)
    first.scatter_(0, inverse, torch.arange(n, device=device))  # any query of each cell
    cells = cell[first]
    # Each distinct cell's 8 corners at once; z varies fastest, as in the keys, so corner j's key
    # grows with j and each row's columns ascend.
    corner = torch.tensor(_CORNERS, device=device)  # (8, 3)
    step = torch.cat([corner.new_zeros(8, 1), corner * s], dim=1)  # (8, 4): batch column 0
    cand = (cells[:, None, :] + step).reshape(-1, 4)
    inside = ((cand >= lo) & (cand <= hi)).all(dim=1)
    keys = _keys(cand.clamp(lo, hi), lo, span)  # clipped into the box: outside ones masked below
    idx = torch.searchsorted(order_keys, keys).clamp_max(order_keys.numel() - 1)
    found = inside & (order_keys[idx] == keys)
    return torch.where(found, idx, -1).view(-1, 8)[inverse]


def _level(coords: Tensor, stride: int | tuple[int, ...] | Tensor, query: Tensor,
           device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted-key order ``(M,)`` of one coarse tensor's sites and, for each of the long `query` rows,
    the columns (sorted positions; -1 where absent) and weights of its 8 corners, each ``(N, 8)``."""
    n, m = query.shape[0], coords.shape[0]
    if m == 0:
        return (torch.zeros(0, dtype=torch.long, device=device),
                torch.full((n, 8), -1, dtype=torch.long, device=device),
                torch.zeros((n, 8), dtype=torch.float32, device=device))
    s = _stride_vector(stride, device)
    coords = coords.to(device=device, dtype=torch.long)
    # Every key column is bounded by the coarse tensor's extent; corners outside it cannot exist.
    lo = coords.min(dim=0).values
    hi = coords.max(dim=0).values
    span = hi - lo + 1
    order = torch.sort(_keys(coords, lo, span)).indices
    lb = torch.div(query[:, 1:], s, rounding_mode="floor") * s
    cell = torch.cat([query[:, :1], lb], dim=1)
    cols = _corners_dense(coords, order, cell, s)
    if cols is None:
        cols = _corners_searched(coords, order, lo, hi, span, cell, s)
    return order, cols, _corner_weights(query[:, 1:] - lb, s)


def _compact(cols: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Row, column and weight of each present corner (column >= 0, weight > 0) of ``(N, 8)`` corners,
    row-major (rows ascending, and a row's columns ascending, as the corners are in key order), and
    each row's count."""
    present = (cols >= 0) & (weights > 0)
    flat = present.view(-1).nonzero().squeeze(1)
    row = torch.div(flat, cols.shape[1], rounding_mode="floor")
    return row, cols.view(-1)[flat], weights.view(-1)[flat], present.sum(dim=1)


def _by_column(col: Tensor, m: int) -> Tensor:
    """The stable order of entries by column (a stable sort keeps their rows ascending); the columns
    sort in the narrowest integer type that holds them (a stable int16 sort is about 1.5x faster than
    int32, and that 2x faster than int64, on the CPU)."""
    dtype = torch.int16 if m <= 2**15 else torch.int32 if m <= 2**31 else torch.long
    return torch.sort(col.to(dtype), stable=True).indices


def _assemble(levels: list[tuple[Tensor, Tensor, Tensor]], n: int, device: torch.device) -> Interpolation:
    """One matrix ``[S_1 ... S_L]`` from the levels' corners: level l's columns come after level
    l - 1's, so that ``matrix @ cat(feats_l[order_l])`` sums the levels' interpolations. Its transpose
    is the levels' transposes stacked."""
    sizes = [order.shape[0] for order, _, _ in levels]
    m = sum(sizes)
    parts = [_compact(cols, weights) for _, cols, weights in levels]
    counts = torch.stack([count for _, _, _, count in parts])
    crow = _crow(counts.sum(dim=0))
    # each row holds level 1's entries, then level 2's, ...: entry e of level l (row r) goes to
    # crow[r] + (row r's entries in levels before l) + (e - first entry of row r in level l)
    before = torch.cumsum(counts, dim=0) - counts
    total = int(crow[-1])
    col_all = torch.empty(total, dtype=torch.long, device=device)
    val_all = torch.empty(total, dtype=torch.float32, device=device)
    t_crow, t_col, t_val, orders = [torch.zeros(1, dtype=torch.long, device=device)], [], [], []
    base = entries = 0
    for level, (size, (order, _, _), (row, col, val, count)) in enumerate(zip(sizes, levels, parts)):
        orders.append(order + base)
        shift = crow[:-1] + before[level] - _crow(count)[:-1]
        dest = shift.index_select(0, row) + torch.arange(row.shape[0], device=device)
        col_all.index_copy_(0, dest, col + base)
        val_all.index_copy_(0, dest, val)
        by_col = _by_column(col, size)
        t_crow.append(_crow(torch.bincount(col, minlength=size))[1:] + entries)
        entries += row.shape[0]
        t_col.append(row.index_select(0, by_col))
        t_val.append(val.index_select(0, by_col))
        base += size
    matrix = _csr(crow, col_all, val_all, (n, m))
    transpose = _csr(torch.cat(t_crow), torch.cat(t_col), torch.cat(t_val), (m, n))
    return Interpolation(matrix, transpose, torch.cat(orders).to(device))


def interpolation_matrix(
    coords: Tensor, stride: int | tuple[int, ...] | Tensor, query: Tensor, device: torch.device | None = None
) -> Interpolation:
    """The weights of interpolating a stride-`stride` tensor at `coords` (`(M, 4)`, multiples of the
    stride) at integer `query` coordinates (`(N, 4)`), on `device` (default: `coords`')."""
    return interpolation_matrices([coords], [stride], query, device)


def interpolation_matrices(
    coords: Sequence[Tensor],
    strides: Sequence[int | tuple[int, ...] | Tensor],
    query: Tensor,
    device: torch.device | None = None,
) -> Interpolation:
    """The weights of the sum of several coarse tensors' interpolations at the same `query`: one
    matrix ``[S_1 ... S_L]`` over the levels' sites stacked in the given order (`interpolation_matrix`
    of each, side by side)."""
    if len(coords) != len(strides) or not coords:
        raise ValueError(f"interpolation_matrices: {len(coords)} coordinate sets for {len(strides)} strides")
    for c in coords:
        _check_shapes(c, query)
    device = coords[0].device if device is None else device
    query = query.to(device=device, dtype=torch.long)
    levels = [_level(c, s, query, device) for c, s in zip(coords, strides)]
    return _assemble(levels, query.shape[0], device)


class _SparseProduct(torch.autograd.Function):
    """``matrix @ feats[order]``, with the gradient ``transpose @ grad`` put back in ``feats``' rows."""

    @staticmethod
    def forward(ctx: Any, feats: Tensor, weights: Interpolation) -> Tensor:  # type: ignore[override]
        ctx.weights = weights
        return weights.matrix @ feats.index_select(0, weights.order)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        weights = ctx.weights
        in_order = weights.transpose @ grad.contiguous()
        return torch.empty_like(in_order).index_copy_(0, weights.order, in_order), None


def trilinear_interpolate(
    feats: Tensor,
    coords: Tensor,
    stride: int | tuple[int, ...] | Tensor,
    query: Tensor,
    *,
    cache: dict[Any, Any] | None = None,
) -> Tensor:
    """Features of a stride-`stride` sparse tensor interpolated at integer `query` coordinates.

    Args:
        feats: `(M, C)` features of the coarse tensor.
        coords: `(M, 4)` int coordinates ``(batch, x, y, z)`` of the coarse tensor, multiples of `stride`.
        stride: the coarse tensor's stride (int or per axis).
        query: `(N, 4)` int coordinates ``(batch, x, y, z)`` to interpolate at (the stride-1 voxels).
        cache: where to keep the weights (for example a `TensorCache`'s ``interpolations``): an entry
            is reused while it was built from these very `coords` and `query` tensors.

    Returns:
        `(N, C)` interpolated features in `feats`' dtype, zero where no corner exists. The products run
        in float32 for half-precision features (float64 stays float64).
    """
    return trilinear_interpolate_sum([feats], [coords], [stride], query, cache=cache)


def trilinear_interpolate_sum(
    feats: Sequence[Tensor],
    coords: Sequence[Tensor],
    strides: Sequence[int | tuple[int, ...] | Tensor],
    query: Tensor,
    *,
    cache: dict[Any, Any] | None = None,
) -> Tensor:
    """``sum_l trilinear_interpolate(feats[l], coords[l], strides[l], query)`` as one sparse product.

    Res16UNet's decoder adds four levels' interpolations at the same voxels; one matrix over the four
    (`interpolation_matrices`) writes the ``(N, C)`` output once instead of four times and adding them
    (and reads the gradient once). The same sum, up to the order of the float additions. `cache` as
    in `trilinear_interpolate`, keyed by the strides.
    """
    if not (len(feats) == len(coords) == len(strides)) or not feats:
        raise ValueError(
            f"trilinear_interpolate_sum: {len(feats)} feature sets, {len(coords)} coordinate sets and "
            f"{len(strides)} strides"
        )
    for f, c in zip(feats, coords):
        _check_shapes(c, query)
        if f.shape[0] != c.shape[0]:
            raise ValueError(f"trilinear_interpolate: {f.shape[0]} feature rows for {c.shape[0]} coords")
    channels = {f.shape[1] for f in feats}
    if len(channels) != 1:
        raise ValueError(f"trilinear_interpolate_sum: the levels' channels differ ({sorted(channels)})")
    first = feats[0]
    if query.shape[0] == 0 or all(c.shape[0] == 0 for c in coords):
        return first.new_zeros(query.shape[0], first.shape[1])
    key = tuple(tuple(_stride_vector(s, torch.device("cpu")).tolist()) for s in strides)
    key = key[0] if len(key) == 1 else key
    entry = None if cache is None else cache.get(key)
    same = entry is not None and entry[1] is query and all(a is b for a, b in zip(entry[0], coords))
    if same and entry[2].matrix.device == first.device:
        weights = entry[2]
    else:
        weights = interpolation_matrices(coords, strides, query, first.device)
        if cache is not None:
            cache[key] = (tuple(coords), query, weights)
    dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    if dtype != weights.matrix.dtype:
        weights = weights._replace(matrix=weights.matrix.to(dtype), transpose=weights.transpose.to(dtype))
    with torch.autocast(first.device.type, enabled=False):
        stacked = torch.cat([f.to(dtype) for f in feats]) if len(feats) > 1 else first.to(dtype)
        out = _SparseProduct.apply(stacked.contiguous(), weights)
    return out.to(first.dtype)
