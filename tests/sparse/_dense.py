"""Dense references for the sparse tests: random sites, and `torch.nn.functional.conv3d` on a grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from unsup3d.sparse import kernel_offsets


def random_sites(n: int, box: int, batches: int = 2, seed: int = 0, stride: int = 1,
                 low: int = 0) -> Tensor:
    """Up to `n` distinct sites ``(b, x, y, z)`` per batch item: multiples of `stride` from `low` on."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batches):
        xyz = torch.randint(0, box, (n, 3), generator=g) * stride + low
        xyz = torch.unique(xyz, dim=0)
        xyz = xyz[torch.randperm(xyz.shape[0], generator=g)]  # no particular order
        rows.append(torch.cat([torch.full((xyz.shape[0], 1), b), xyz], dim=1))
    return torch.cat(rows).to(torch.int32)


def dense_kernel(kernel: Tensor, kernel_size: int, dilation: int) -> Tensor:
    """`(C_out, C_in, k, k, k)` weight of `F.conv3d` placing each sparse row at its offset."""
    a = (kernel_size - 1) // 2
    u = kernel_offsets(kernel_size, dilation).long() // dilation + a  # grid cell of each row
    index = torch.empty(kernel_size, kernel_size, kernel_size, dtype=torch.long)
    index[u[:, 0], u[:, 1], u[:, 2]] = torch.arange(u.shape[0])
    return kernel[index].permute(4, 3, 0, 1, 2)  # (k, k, k, Ci, Co) -> (Co, Ci, k, k, k)


def dense_conv(coords: Tensor, feats: Tensor, kernel: Tensor, kernel_size: int, dilation: int = 1,
               in_stride: int = 1, conv_stride: int = 1, out_coords: Tensor | None = None) -> Tensor:
    """``sum_k x[q + offset_k * in_stride] @ kernel[k]`` at `out_coords` (default `coords`), via dense conv3d.

    The grid is in units of `in_stride`, starting at a multiple of ``in_stride * conv_stride`` so that
    output site ``q`` sits at grid cell ``conv_stride * j``.
    """
    out_coords = coords if out_coords is None else out_coords
    big = in_stride * conv_stride
    origin = torch.div(coords[:, 1:].min(0).values, big, rounding_mode="floor") * big
    g = (coords[:, 1:].long() - origin) // in_stride
    size = (g.max(0).values + 1).tolist()
    batches = int(coords[:, 0].max()) + 1
    # index_put keeps the graph, so gradients reach `feats` through the dense reference too.
    grid = feats.new_zeros(batches, *size, feats.shape[1])
    grid = grid.index_put((coords[:, 0].long(), g[:, 0], g[:, 1], g[:, 2]), feats)
    grid = grid.permute(0, 4, 1, 2, 3)
    a = (kernel_size - 1) // 2
    left, right = dilation * a, dilation * (kernel_size - 1 - a)
    grid = F.pad(grid, (left, right) * 3)
    out = F.conv3d(grid, dense_kernel(kernel, kernel_size, dilation), stride=conv_stride, dilation=dilation)
    j = (out_coords[:, 1:].long() - origin) // big
    return out.permute(0, 2, 3, 4, 1)[out_coords[:, 0].long(), j[:, 0], j[:, 1], j[:, 2]]
