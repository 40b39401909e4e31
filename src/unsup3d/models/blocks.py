"""Convolution and residual blocks shared by the sparse UNets, on `unsup3d.sparse`.

Module and attribute names follow the releases, so that their checkpoints map onto these modules key
for key (see `unsup3d.models.checkpoints`): `ConvBlock`, `DeconvBlock` and `ResidualBlock` are
torchsparse's / SegContrast's `BasicConvolutionBlock`, `BasicDeconvolutionBlock` and `ResidualBlock`
(used by MinkUNet); `BasicBlock` is the `BasicBlock` of GrowSP's and PointDC's Res16FPN. The two
residual blocks compute the same thing: conv3 - BN - ReLU - conv3 - BN, plus the input (through a
1x1x1 conv + BN when the width changes), then ReLU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from unsup3d.sparse import SparseTensor
from unsup3d.sparse import nn as spnn

__all__ = ["BasicBlock", "ConvBlock", "DeconvBlock", "ResidualBlock", "to_points"]


def to_points(feats: Tensor, inverse_map: Tensor | None) -> Tensor:
    """Voxel features `(N_voxels, C)`, or their rows gathered per point by `inverse_map` `(N_points,)`."""
    if inverse_map is None:
        return feats
    if inverse_map.dim() != 1:
        raise ValueError(f"inverse_map must be 1-D (a voxel index per point), got {tuple(inverse_map.shape)}")
    inverse_map = inverse_map.to(device=feats.device, dtype=torch.long)
    if inverse_map.numel() and (int(inverse_map.min()) < 0 or int(inverse_map.max()) >= feats.shape[0]):
        raise ValueError(
            f"inverse_map indexes voxels {int(inverse_map.min())}..{int(inverse_map.max())} "
            f"but there are {feats.shape[0]} voxels"
        )
    return feats.index_select(0, inverse_map)  # its backward (index_add_) is ~2x faster than indexing's


class ConvBlock(nn.Module):
    """Sparse conv - BN - ReLU (MinkUNet's `BasicConvolutionBlock`, the k2 s2 downsampling)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            spnn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation),
            spnn.BatchNorm(out_channels),
            spnn.ReLU(inplace=True),
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class DeconvBlock(nn.Module):
    """Transposed sparse conv - BN - ReLU (MinkUNet's `BasicDeconvolutionBlock`, the k2 s2 upsampling)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            spnn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, transposed=True),
            spnn.BatchNorm(out_channels),
            spnn.ReLU(inplace=True),
        )

    def forward(self, x: SparseTensor) -> SparseTensor:
        return self.net(x)


class ResidualBlock(nn.Module):
    """MinkUNet's residual block: `net` (conv3-BN-ReLU-conv3-BN) + `downsample` (identity or conv1-BN)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        self.net = nn.Sequential(
            spnn.Conv3d(in_channels, out_channels, kernel_size, dilation=dilation),
            spnn.BatchNorm(out_channels),
            spnn.ReLU(inplace=True),
            spnn.Conv3d(out_channels, out_channels, kernel_size, dilation=dilation),
            spnn.BatchNorm(out_channels),
        )
        if in_channels == out_channels:
            self.downsample: nn.Module = nn.Identity()
        else:
            self.downsample = nn.Sequential(
                spnn.Conv3d(in_channels, out_channels, 1),
                spnn.BatchNorm(out_channels),
            )
        self.relu = spnn.ReLU(inplace=True)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.net(x)
        return self.relu(out.replace_feature(out.F + self.downsample(x).F))


class BasicBlock(nn.Module):
    """Res16FPN's `BasicBlock`: conv1-norm1-ReLU-conv2-norm2 + `downsample` (identity or conv1-BN).

    As in the release, `norm1` / `norm2` keep BatchNorm's default momentum (0.1) while the shortcut's
    BatchNorm takes the network's `bn_momentum` (0.02 in PointDC).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 shortcut_bn_momentum: float = 0.1):
        super().__init__()
        self.conv1 = spnn.Conv3d(in_channels, out_channels, kernel_size, dilation=dilation)
        self.norm1 = spnn.BatchNorm(out_channels)
        self.conv2 = spnn.Conv3d(out_channels, out_channels, kernel_size, dilation=dilation)
        self.norm2 = spnn.BatchNorm(out_channels)
        self.relu = spnn.ReLU(inplace=True)
        if in_channels == out_channels:
            self.downsample: nn.Module = nn.Identity()
        else:
            self.downsample = nn.Sequential(
                spnn.Conv3d(in_channels, out_channels, 1),
                spnn.BatchNorm(out_channels, momentum=shortcut_bn_momentum),
            )

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out.replace_feature(out.F + self.downsample(x).F))
