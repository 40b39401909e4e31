"""Voxelisation of point coordinates, as torchsparse 2.1's `sparse_quantize`.

torchsparse floors ``coords / voxel_size`` to int32, ravels each row into one integer (row-major over
the per-column extents after subtracting the column minimum, so integer order is the lexicographic order
of the rows) and calls `np.unique` on it: voxels come out sorted lexicographically, `index` is the first
point of each voxel and `inverse` maps every point to its voxel. Torch in gives torch out, with the same
values (it ravels in int64 and uses `torch.unique`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["ravel_hash", "sparse_quantize"]

_INT63 = 2**63 - 1


def _extents_ok(extent: Sequence[int]) -> None:
    total = 1
    for e in extent:
        total *= int(e)
    if total > _INT63:
        raise ValueError(f"ravel_hash: coordinate extents {list(extent)} do not fit one 63-bit key")


def ravel_hash(x: np.ndarray | Tensor) -> np.ndarray | Tensor:
    """One integer per row of the integer array `x` `(N, D)`, increasing with the rows' lexicographic order.

    numpy in: uint64 (torchsparse's `ravel_hash`); torch in: int64.
    """
    if x.ndim != 2:
        raise ValueError(f"ravel_hash: expected a 2-D array (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        return np.zeros(0, np.uint64) if isinstance(x, np.ndarray) else torch.zeros(0, dtype=torch.long)
    if isinstance(x, np.ndarray):
        x = x.astype(np.int64) - x.min(axis=0).astype(np.int64)
        xmax = x.max(axis=0) + 1
        _extents_ok(xmax.tolist())
        x = x.astype(np.uint64)
        xmax = xmax.astype(np.uint64)
        h = np.zeros(x.shape[0], dtype=np.uint64)
        for j in range(x.shape[1] - 1):
            h += x[:, j]
            h *= xmax[j + 1]
        h += x[:, -1]
        return h
    xl = x.long()
    xl = xl - xl.min(dim=0).values
    xmax = xl.max(dim=0).values + 1
    _extents_ok(xmax.tolist())
    h = torch.zeros(xl.shape[0], dtype=torch.long, device=xl.device)
    for j in range(xl.shape[1] - 1):
        h += xl[:, j]
        h *= xmax[j + 1]
    h += xl[:, -1]
    return h


def _voxel_size(voxel_size: float | Sequence[float], ncols: int) -> tuple[float, ...]:
    if isinstance(voxel_size, (int, float, np.integer, np.floating)):
        vs = (float(voxel_size),) * ncols
    else:
        vs = tuple(float(v) for v in voxel_size)
    if len(vs) != ncols:
        raise ValueError(f"sparse_quantize: voxel_size has {len(vs)} values for {ncols} coordinate columns")
    if min(vs) <= 0:
        raise ValueError(f"sparse_quantize: voxel_size must be positive, got {vs}")
    return vs


def sparse_quantize(
    coords: np.ndarray | Tensor,
    voxel_size: float | Sequence[float] = 1,
    *,
    return_index: bool = False,
    return_inverse: bool = False,
) -> np.ndarray | Tensor | list[np.ndarray] | list[Tensor]:
    """Unique voxels of `coords` `(N, D)` at `voxel_size`: ``floor(coords / voxel_size)`` as int32.

    Returns the voxel coordinates `(M, D)`, sorted lexicographically; with `return_index` also the
    index of the first point in each voxel `(M,)`, with `return_inverse` also each point's voxel `(N,)`
    (so ``voxels[inverse]`` is the floored input). Several outputs come as a list, as in torchsparse 2.1.
    """
    if coords.ndim != 2:
        raise ValueError(f"sparse_quantize: coords must be (N, D), got shape {tuple(coords.shape)}")
    vs = _voxel_size(voxel_size, coords.shape[1])
    if isinstance(coords, np.ndarray):
        voxels = np.floor(coords / np.array(vs)).astype(np.int32)
        _, index, inverse = np.unique(ravel_hash(voxels), return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
        voxels = voxels[index]
    elif isinstance(coords, Tensor):
        vs_t = torch.tensor(vs, dtype=torch.float64, device=coords.device)
        voxels = torch.floor(coords.to(torch.float64) / vs_t).to(torch.int32)
        _, inverse = torch.unique(ravel_hash(voxels), sorted=True, return_inverse=True)
        n_vox = int(inverse.max()) + 1 if inverse.numel() else 0
        order = torch.arange(inverse.shape[0], device=coords.device)
        index = torch.full((n_vox,), inverse.shape[0], dtype=torch.long, device=coords.device)
        index = index.scatter_reduce(0, inverse, order, reduce="amin")
        voxels = voxels[index]
    else:
        raise TypeError(f"sparse_quantize: coords must be a numpy array or torch tensor, got {type(coords)}")
    outputs = [voxels]
    if return_index:
        outputs.append(index)
    if return_inverse:
        outputs.append(inverse)
    return outputs[0] if len(outputs) == 1 else outputs
