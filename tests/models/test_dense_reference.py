"""Both backbones against a dense re-implementation of their architectures (eval mode).

The reference is written from the releases' descriptions with dense `F.conv3d` on a voxel grid:
a submanifold conv is a padded dense conv masked to the active sites, a k2 s2 conv a stride-2 dense conv
masked to the sites of the coarser stride (``floor(c / s)``, computed here), a transposed conv
`F.conv_transpose3d` masked to the finer sites, and trilinear interpolation reads the eight corners of
the coarse cell from a dense grid that is zero where no coarse site is. It shares only the weights with
the models under test.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.sparse import SparseTensor, kernel_offsets, sparse_collate, sparse_quantize

from ._scenes import VOXEL, _scene


class Grid:
    """Dense `(B, C, X, Y, Z)` tensors at strides 1..16 with the active-site mask of each stride."""

    def __init__(self, coords: Tensor):
        self.coords = coords.long()
        self.batch = int(self.coords[:, 0].max()) + 1
        self.size = [int(v) for v in (self.coords[:, 1:].max(0).values // 16 + 1) * 16]
        self.masks = {s: self.scatter(torch.ones(len(self.sites(s)), 1), s)
                      for s in (1, 2, 4, 8, 16)}

    def sites(self, s: int) -> Tensor:
        c = self.coords.clone()
        c[:, 1:] = torch.div(c[:, 1:], s, rounding_mode="floor")
        return torch.unique(c, dim=0)

    def scatter(self, feats: Tensor, s: int) -> Tensor:
        sites = self.sites(s)
        grid = feats.new_zeros(self.batch, feats.shape[1], *(n // s for n in self.size))
        grid[sites[:, 0], :, sites[:, 1], sites[:, 2], sites[:, 3]] = feats
        return grid

    def read(self, grid: Tensor) -> Tensor:
        c = self.coords
        return grid[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]


def _dense_weight(conv: nn.Module) -> Tensor:
    """The sparse kernel `(K, C_in, C_out)` as a dense `(C_out, C_in, k, k, k)` cross-correlation weight."""
    k = conv.kernel_size[0]
    offs = kernel_offsets(conv.kernel_size).long()
    offs = offs - offs.min(0).values
    w = conv.kernel.new_zeros(conv.out_channels, conv.in_channels, k, k, k)
    for row, (i, j, l) in enumerate(offs.tolist()):
        w[:, :, i, j, l] = conv.kernel[row].T
    return w


def _conv(conv: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    w = _dense_weight(conv)
    if conv.transposed:
        return F.conv_transpose3d(x, w.transpose(0, 1), stride=conv.stride) * mask
    if conv.stride != (1, 1, 1):
        return F.conv3d(x, w, stride=conv.stride) * mask
    return F.conv3d(x, w, padding=conv.kernel_size[0] // 2) * mask


def _bn(bn: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    shape = (1, -1, 1, 1, 1)
    y = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
    return (y * bn.weight.view(shape) + bn.bias.view(shape)) * mask


def _conv_bn_relu(conv: nn.Module, bn: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    return torch.relu(_bn(bn, _conv(conv, x, mask), mask))


def _shortcut(block: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    if isinstance(block.downsample, nn.Identity):
        return x
    conv, bn = block.downsample
    return _bn(bn, _conv(conv, x, mask), mask)


def _residual(block: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """torchsparse's ResidualBlock: `net` = conv-BN-ReLU-conv-BN, plus `downsample`, then ReLU."""
    conv1, bn1, _, conv2, bn2 = block.net
    y = _bn(bn2, _conv(conv2, _conv_bn_relu(conv1, bn1, x, mask), mask), mask)
    return torch.relu(y + _shortcut(block, x, mask))


def _basic(block: nn.Module, x: Tensor, mask: Tensor) -> Tensor:
    """Res16FPN's BasicBlock: conv1-norm1-ReLU-conv2-norm2, plus `downsample`, then ReLU."""
    y = _conv_bn_relu(block.conv1, block.norm1, x, mask)
    y = _bn(block.norm2, _conv(block.conv2, y, mask), mask)
    return torch.relu(y + _shortcut(block, x, mask))


def _minkunet_dense(net: MinkUNet, g: Grid, feats: Tensor) -> Tensor:
    m = g.masks
    stem = net.stem
    x = _conv_bn_relu(stem[3], stem[4], _conv_bn_relu(stem[0], stem[1], g.scatter(feats, 1), m[1]), m[1])
    skips, s = [x], 1
    for stage in (net.stage1, net.stage2, net.stage3, net.stage4):
        s *= 2
        x = _conv_bn_relu(stage[0].net[0], stage[0].net[1], x, m[s])
        x = _residual(stage[2], _residual(stage[1], x, m[s]), m[s])
        skips.append(x)
    skips.pop()
    for up, blocks in (net.up1, net.up2, net.up3, net.up4):
        s //= 2
        x = torch.cat([_conv_bn_relu(up.net[0], up.net[1], x, m[s]), skips.pop()], dim=1)
        x = _residual(blocks[1], _residual(blocks[0], x, m[s]), m[s])
    return g.read(x)


def _trilinear(grid: Tensor, coords: Tensor, s: int) -> Tensor:
    grid = F.pad(grid, (0, 1, 0, 1, 0, 1))  # the +s corner of the last cell: absent, i.e. zero
    cell = torch.div(coords[:, 1:], s, rounding_mode="floor")
    frac = (coords[:, 1:] - cell * s).float() / s
    out = 0
    for d in itertools.product((0, 1), repeat=3):
        d = torch.tensor(d)
        w = torch.where(d.bool(), frac, 1 - frac).prod(1, keepdim=True)
        c = cell + d
        out = out + w * grid[coords[:, 0], :, c[:, 0], c[:, 1], c[:, 2]]
    return out


def _res16_dense(net: Res16UNet, g: Grid, feats: Tensor) -> Tensor:
    x = _conv_bn_relu(net.conv0p1s1, net.bn0, g.scatter(feats, 1), g.masks[1])
    levels = [
        (net.conv1p1s2, net.bn1, net.block1, net.delayer4, 2),
        (net.conv2p2s2, net.bn2, net.block2, net.delayer3, 4),
        (net.conv3p4s2, net.bn3, net.block3, net.delayer2, 8),
        (net.conv4p8s2, net.bn4, net.block4, net.delayer1, 16),
    ]
    out = 0
    for conv, bn, blocks, lateral, s in levels:
        x = _conv_bn_relu(conv, bn, x, g.masks[s])
        for block in blocks:
            x = _basic(block, x, g.masks[s])
        lat = torch.einsum("bcxyz,oc->boxyz", x, lateral.weight)
        out = out + _trilinear(lat, g.coords, s)
    return out


def _input(in_channels: int) -> SparseTensor:
    tensors = []
    for seed in (0, 1):
        points, feats = _scene(seed, n=800, channels=in_channels)
        # Rooms shrunk to 0.7 m keep the dense grid at 32^3 or less (two stride-16 cells a side).
        coords, index = sparse_quantize(points * 0.35, VOXEL, return_index=True)
        coords = coords - coords.min(0) // 16 * 16  # non-negative for the dense grid; a multiple of 16
        feats = torch.from_numpy(feats[np.asarray(index)])
        tensors.append(SparseTensor(feats, torch.from_numpy(coords)))
    return sparse_collate(tensors)


def _randomise_norms(net: nn.Module) -> nn.Module:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def test_minkunet_matches_dense_reference() -> None:
    torch.manual_seed(0)
    net = _randomise_norms(MinkUNet(in_channels=4, width=0.25))
    x = _input(4)
    with torch.no_grad():
        sparse = net(x)
        dense = _minkunet_dense(net, Grid(x.C), x.F)
    assert dense.abs().mean() > 0.05  # the reference is not trivially zero
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-5)


def test_res16unet_matches_dense_reference() -> None:
    torch.manual_seed(0)
    net = _randomise_norms(Res16UNet(in_channels=6, width=0.25, out_channels=16))
    x = _input(6)
    with torch.no_grad():
        sparse = net(x)
        dense = _res16_dense(net, Grid(x.C), x.F)
    assert dense.abs().mean() > 0.05
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-5)
