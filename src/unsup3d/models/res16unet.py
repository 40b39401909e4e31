"""Res16UNet: PointDC's sparse backbone (`Res16FPN18` of GrowSP / PointDC, `models/fpn.py`).

Encoder: a 5x5x5 stem conv (stride 1), then four levels of [k2 s2 conv - BN - ReLU, two residual blocks]
to planes 32 / 64 / 128 / 256 at strides 2 / 4 / 8 / 16. Decoder (FPN-like): each level's features go
through a bias-free linear map to 128 channels, are trilinearly interpolated back to the input voxels
and summed. That is the release's `train` mode; its `distill` mode (a `MinkowskiUnion` of the four
maps, then `slice`) gives the same features on one point per voxel, which is what this network sees.

Differences from the release, which runs on MinkowskiEngine:
- ME's `interpolate` works on the continuous coordinates of a `TensorField`; here the queries are the
  integer voxel coordinates of the input tensor, which is what ME sees whenever the field coordinates
  are integers (evaluation, where no augmentation moves them off the grid).
- The network is a plain `nn.Module` on `unsup3d.sparse`; the release's unused `out_channels`
  argument (it never builds a final layer) is the real output width here.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from unsup3d.models.blocks import BasicBlock, to_points
from unsup3d.models.interpolate import trilinear_interpolate_sum
from unsup3d.sparse import SparseTensor
from unsup3d.sparse import nn as spnn

__all__ = ["Res16UNet"]


class Res16UNet(nn.Module):
    """PointDC's Res16FPN18 sparse UNet; per-voxel (or per-point) `out_channels`-d features.

    Attribute names are the release's (`conv0p1s1`, `bn0`, `conv1p1s2`, `bn1`, `block1`, ...,
    `delayer1..4`), so its checkpoints load key for key through `unsup3d.models.checkpoints`.

    Args:
        in_channels: input feature channels. PointDC feeds 6: RGB / 255 - 0.5, then the voxel
            coordinates centred on the scene (x, y about their mean, z as is).
        out_channels: output feature dimension (128 in the release).
        planes: channels of the four encoder levels (strides 2, 4, 8, 16).
        init_dim: channels of the stem and of the first downsampling conv.
        layers: residual blocks per level (2 each in Res16FPN18, 1 in Res16FPN14).
        stem_kernel_size: kernel of the stem conv (`conv1_kernel_size`, 5 in the release).
        width: multiplier of `init_dim` and `planes` (1.0 is the release).
        bn_momentum: momentum of the stem / downsampling / shortcut BatchNorms (0.02 in the release;
            the BatchNorms inside residual blocks keep PyTorch's 0.1, as there).
    """

    def __init__(
        self,
        in_channels: int = 6,
        out_channels: int = 128,
        planes: Sequence[int] = (32, 64, 128, 256),
        init_dim: int = 32,
        layers: Sequence[int] = (2, 2, 2, 2),
        stem_kernel_size: int = 5,
        width: float = 1.0,
        bn_momentum: float = 0.02,
    ):
        super().__init__()
        if len(planes) != 4 or len(layers) != 4 or min(layers) < 1:
            raise ValueError(
                f"Res16UNet: planes {tuple(planes)} and layers {tuple(layers)} need 4 entries each, "
                f"layers at least 1"
            )
        if in_channels <= 0 or out_channels <= 0 or not width > 0:
            raise ValueError(
                f"Res16UNet: in_channels, out_channels and width must be positive, got {in_channels}, "
                f"{out_channels}, {width}"
            )
        widths = [int(width * p) for p in planes]
        inplanes = int(width * init_dim)
        if inplanes <= 0 or min(widths) <= 0:
            raise ValueError(f"Res16UNet: width {width} leaves a level with no channels")
        # the constructor's arguments, as plain data: checkpoints rebuild the backbone from them
        self.init_args = {
            "in_channels": in_channels, "out_channels": out_channels, "planes": list(planes),
            "init_dim": init_dim, "layers": list(layers), "stem_kernel_size": stem_kernel_size,
            "width": width, "bn_momentum": bn_momentum,
        }  # fmt: skip
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.planes = tuple(widths)

        self.conv0p1s1 = spnn.Conv3d(in_channels, inplanes, stem_kernel_size)
        self.bn0 = spnn.BatchNorm(inplanes, momentum=bn_momentum)
        self.relu = spnn.ReLU(inplace=True)
        for i, (p, n) in enumerate(zip(widths, layers), start=1):
            # conv{i}p{2^(i-1)}s2: from stride 2^(i-1) to 2^i, keeping the width (the release's names).
            setattr(self, f"conv{i}p{2 ** (i - 1)}s2", spnn.Conv3d(inplanes, inplanes, 2, stride=2))
            setattr(self, f"bn{i}", spnn.BatchNorm(inplanes, momentum=bn_momentum))
            setattr(self, f"block{i}", nn.Sequential(*[
                BasicBlock(inplanes if j == 0 else p, p, shortcut_bn_momentum=bn_momentum) for j in range(n)
            ]))
            inplanes = p
        # delayer1 reads the coarsest level (stride 16), delayer4 the finest (stride 2), as in the release;
        # there they are ME.MinkowskiLinear(planes, 128, bias=False).
        for i, p in enumerate(reversed(widths), start=1):
            setattr(self, f"delayer{i}", nn.Linear(p, out_channels, bias=False))

    def forward(self, x: SparseTensor, inverse_map: Tensor | None = None) -> Tensor:
        """Features `(N_voxels, out_channels)` in `x`'s voxel order, or per point via `inverse_map`."""
        if x.F.dim() != 2 or x.F.shape[1] != self.in_channels:
            raise ValueError(
                f"Res16UNet: expected input features (N, {self.in_channels}), got {tuple(x.F.shape)}"
            )
        if tuple(x.s) != (1, 1, 1):
            raise ValueError(f"Res16UNet: expected an input at stride 1, got stride {tuple(x.s)}")
        y = self.relu(self.bn0(self.conv0p1s1(x)))
        laterals, coords, strides = [], [], []
        for i in range(1, 5):
            y = getattr(self, f"conv{i}p{2 ** (i - 1)}s2")(y)
            y = getattr(self, f"block{i}")(self.relu(getattr(self, f"bn{i}")(y)))
            laterals.append(getattr(self, f"delayer{5 - i}")(y.F))
            coords.append(y.C)
            strides.append(y.s)
        # every level interpolated at the input voxels and summed, as one sparse product
        out = trilinear_interpolate_sum(laterals, coords, strides, x.C, cache=x._caches.interpolations)
        return to_points(out, inverse_map)
