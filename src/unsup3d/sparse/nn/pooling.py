"""Global pooling of a sparse tensor per batch item, to a dense `(B, C)` tensor (torchsparse's)."""

from __future__ import annotations

from torch import Tensor, nn

from unsup3d.sparse.functional import global_avg_pool, global_max_pool
from unsup3d.sparse.tensor import SparseTensor

__all__ = ["GlobalAvgPool", "GlobalMaxPool"]


class GlobalAvgPool(nn.Module):
    """Mean over the sites of each batch item: `(B, C)`."""

    def forward(self, input: SparseTensor) -> Tensor:
        return global_avg_pool(input)


class GlobalMaxPool(nn.Module):
    """Channel-wise max over the sites of each batch item: `(B, C)`."""

    def forward(self, input: SparseTensor) -> Tensor:
        return global_max_pool(input)
