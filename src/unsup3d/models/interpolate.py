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
from typing import Any, NamedTuple

import torch
from torch import Tensor

from unsup3d.sparse.grid_table import build_table

__all__ = ["Interpolation", "interpolation_matrix", "trilinear_interpolate"]


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


def interpolation_matrix(
    coords: Tensor, stride: int | tuple[int, ...] | Tensor, query: Tensor, device: torch.device | None = None
) -> Interpolation:
    """The weights of interpolating a stride-`stride` tensor at `coords` (`(M, 4)`, multiples of the
    stride) at integer `query` coordinates (`(N, 4)`), on `device` (default: `coords`')."""
    _check_shapes(coords, query)
    device = coords.device if device is None else device
    n, m = query.shape[0], coords.shape[0]
    # Column (sorted position of the coarse site) and weight of each query's 8 corners; -1 where absent.
    cols = torch.full((n, 8), -1, dtype=torch.long, device=device)
    weights = torch.zeros((n, 8), dtype=torch.float32, device=device)
    order = torch.zeros(0, dtype=torch.long, device=device)
    if n and m:
        s = _stride_vector(stride, device)
        coords = coords.to(device=device, dtype=torch.long)
        query = query.to(device=device, dtype=torch.long)
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
        weights = _corner_weights(query[:, 1:] - lb, s)
    present = (cols >= 0) & (weights > 0)
    flat = present.view(-1).nonzero().squeeze(1)  # row-major: rows ascending, columns ascending within
    col, val, row = cols.view(-1)[flat], weights.view(-1)[flat], torch.div(flat, 8, rounding_mode="floor")
    matrix = _csr(_crow(present.sum(dim=1)), col, val, (n, m))
    # entries come row-major, so a stable sort by column keeps the rows ascending within each column;
    # the columns sort as int32 where they fit (a stable int32 sort is about 1.6x faster on the CPU)
    by_col = torch.sort(col.to(torch.int32) if m < 2**31 else col, stable=True).indices
    transpose = _csr(_crow(torch.bincount(col, minlength=m)), row[by_col], val[by_col], (m, n))
    return Interpolation(matrix, transpose, order)


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
    _check_shapes(coords, query)
    if feats.shape[0] != coords.shape[0]:
        raise ValueError(f"trilinear_interpolate: {feats.shape[0]} feature rows for {coords.shape[0]} coords")
    if coords.shape[0] == 0 or query.shape[0] == 0:
        return feats.new_zeros(query.shape[0], feats.shape[1])
    key = tuple(_stride_vector(stride, torch.device("cpu")).tolist())
    entry = None if cache is None else cache.get(key)
    same = entry is not None and entry[0] is coords and entry[1] is query
    if same and entry[2].matrix.device == feats.device:
        weights = entry[2]
    else:
        weights = interpolation_matrix(coords, stride, query, feats.device)
        if cache is not None:
            cache[key] = (coords, query, weights)
    dtype = torch.float64 if feats.dtype == torch.float64 else torch.float32
    if dtype != weights.matrix.dtype:
        weights = weights._replace(matrix=weights.matrix.to(dtype), transpose=weights.transpose.to(dtype))
    with torch.autocast(feats.device.type, enabled=False):
        out = _SparseProduct.apply(feats.to(dtype).contiguous(), weights)
    return out.to(feats.dtype)
