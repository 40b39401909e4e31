"""Normalisation over the features of a sparse tensor (torchsparse's `BatchNorm`, `GroupNorm`...)."""

from __future__ import annotations

from torch import nn

from unsup3d.sparse.functional import global_avg_pool
from unsup3d.sparse.tensor import SparseTensor, fapply

__all__ = ["BatchNorm", "InstanceNorm", "LayerNorm"]


class BatchNorm(nn.BatchNorm1d):
    """`torch.nn.BatchNorm1d` over the `(N, C)` features; the sites count as the batch."""

    def forward(self, input: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return fapply(input, super().forward)


class LayerNorm(nn.LayerNorm):
    """`torch.nn.LayerNorm` over the channels of each site."""

    def forward(self, input: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return fapply(input, super().forward)


class InstanceNorm(nn.Module):
    """Per batch item and channel: zero mean, unit variance over that item's sites, then affine."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm1d(num_features, eps=eps, affine=affine)

    def forward(self, input: SparseTensor) -> SparseTensor:
        batch = input.coords[:, 0].long()
        mean = global_avg_pool(input)[batch]
        var = global_avg_pool(input.replace_feature((input.feats - mean) ** 2))[batch]
        out = (input.feats - mean) / (var + self.norm.eps).sqrt()
        if self.norm.affine:
            out = out * self.norm.weight + self.norm.bias
        return input.replace_feature(out)
