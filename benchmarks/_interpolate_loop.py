"""unsup3d's trilinear interpolation as it was before the cached sparse matrix: a loop over the 8 corners,
each a search of the coarse keys and an ``index_add_``. Kept as the reference the new one is tested and
timed against (tests/models/test_interpolate.py, benchmarks/interpolate.py).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

__all__ = ["trilinear_interpolate_loop"]


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


def trilinear_interpolate_loop(
    feats: Tensor,
    coords: Tensor,
    stride: int | tuple[int, ...] | Tensor,
    query: Tensor,
) -> Tensor:
    """Features of a stride-`stride` sparse tensor interpolated at integer `query` coordinates.

    Args:
        feats: `(M, C)` features of the coarse tensor.
        coords: `(M, 4)` int coordinates ``(batch, x, y, z)`` of the coarse tensor, multiples of `stride`.
        stride: the coarse tensor's stride (int or per axis).
        query: `(N, 4)` int coordinates ``(batch, x, y, z)`` to interpolate at (the stride-1 voxels).

    Returns:
        `(N, C)` interpolated features, zero where no corner exists.
    """
    if coords.dim() != 2 or coords.shape[1] != 4 or query.dim() != 2 or query.shape[1] != 4:
        raise ValueError(
            f"trilinear_interpolate: coords and query must be (N, 4), got {tuple(coords.shape)} and "
            f"{tuple(query.shape)}"
        )
    if feats.shape[0] != coords.shape[0]:
        raise ValueError(f"trilinear_interpolate: {feats.shape[0]} feature rows for {coords.shape[0]} coords")
    device = feats.device
    out = feats.new_zeros(query.shape[0], feats.shape[1])
    if coords.shape[0] == 0 or query.shape[0] == 0:
        return out
    s = _stride_vector(stride, device)
    coords = coords.to(device=device, dtype=torch.long)
    query = query.to(device=device, dtype=torch.long)

    # Every key column is bounded by the coarse tensor's extent; corners outside it cannot exist.
    lo = coords.min(dim=0).values
    hi = coords.max(dim=0).values
    span = hi - lo + 1
    order_keys, order = torch.sort(_keys(coords, lo, span))

    lb = torch.div(query[:, 1:], s, rounding_mode="floor") * s
    frac = (query[:, 1:] - lb).to(feats.dtype) / s.to(feats.dtype)  # in [0, 1) per axis
    for corner in itertools.product((0, 1), repeat=3):
        d = torch.tensor(corner, device=device)
        w = torch.where(d.bool(), frac, 1 - frac).prod(dim=1)
        pos = lb + d * s
        cand = torch.cat([query[:, :1], pos], dim=1)
        inside = ((cand >= lo) & (cand <= hi)).all(dim=1) & (w > 0)
        if not bool(inside.any()):
            continue
        rows = inside.nonzero(as_tuple=True)[0]
        keys = _keys(cand[rows], lo, span)
        idx = torch.searchsorted(order_keys, keys).clamp_max(order_keys.numel() - 1)
        found = order_keys[idx] == keys
        rows, src = rows[found], order[idx[found]]
        out.index_add_(0, rows, (feats[src] * w[rows, None]).to(out.dtype))
    return out
