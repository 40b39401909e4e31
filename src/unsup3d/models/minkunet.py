"""MinkUNet: STSSL's sparse backbone (SegContrast's / torchsparse's MinkUNet, 96-d output).

Channels ``cs = 32, 32, 64, 128, 256, 256, 128, 96, 96`` (times `width`, SegContrast's `cr`):
- stem: two 3x3x3 submanifold convs, each with BN and ReLU (cs[0]);
- four down stages: k2 s2 conv - BN - ReLU, then two residual blocks (cs[1..4], strides 2..16);
- four up stages: k2 s2 transposed conv - BN - ReLU (cs[5..8]), concatenate the encoder features of that
  stride (the transposed conv's output first, as `ME.cat(y, x)`), two residual blocks.
The backbone ends at the last residual block; classifiers and projection heads are separate modules.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from unsup3d.models.blocks import ConvBlock, DeconvBlock, ResidualBlock, to_points
from unsup3d.sparse import SparseTensor, cat
from unsup3d.sparse import nn as spnn

__all__ = ["MinkUNet"]

MINKUNET_CHANNELS = (32, 32, 64, 128, 256, 256, 128, 96, 96)


class MinkUNet(nn.Module):
    """STSSL's / SegContrast's MinkUNet; per-voxel (or per-point) `out_channels`-d features.

    Args:
        in_channels: input feature channels (STSSL: x, y, z, intensity = 4).
        width: channel multiplier (SegContrast's and torchsparse's `cr`); each width is ``int(width * c)``.
        channels: the nine widths before `width` is applied (stem, 4 down, 4 up).
    """

    def __init__(self, in_channels: int = 4, width: float = 1.0, channels: Sequence[int] = MINKUNET_CHANNELS):
        super().__init__()
        if len(channels) != 9:
            raise ValueError(f"MinkUNet: channels must list 9 widths, got {len(channels)}: {tuple(channels)}")
        if in_channels <= 0 or not width > 0:
            raise ValueError(f"MinkUNet: in_channels and width must be positive, got {in_channels}, {width}")
        cs = [int(width * c) for c in channels]
        if min(cs) <= 0:
            raise ValueError(f"MinkUNet: width {width} leaves a stage with no channels: {cs}")
        # the constructor's arguments, as plain data: checkpoints rebuild the backbone from them
        self.init_args = {"in_channels": in_channels, "width": width, "channels": list(channels)}
        self.in_channels = in_channels
        self.channels = tuple(cs)
        self.out_channels = cs[8]

        # Attribute names are torchsparse's / SegContrast's, so their checkpoints load key for key.
        self.stem = nn.Sequential(
            spnn.Conv3d(in_channels, cs[0], 3), spnn.BatchNorm(cs[0]), spnn.ReLU(inplace=True),
            spnn.Conv3d(cs[0], cs[0], 3), spnn.BatchNorm(cs[0]), spnn.ReLU(inplace=True),
        )
        for i in range(4):
            setattr(self, f"stage{i + 1}", nn.Sequential(
                ConvBlock(cs[i], cs[i], 2, stride=2),
                ResidualBlock(cs[i], cs[i + 1]),
                ResidualBlock(cs[i + 1], cs[i + 1]),
            ))
        # Up stage i upsamples cs[4 + i] -> cs[5 + i] and merges the encoder output of width cs[3 - i].
        for i in range(4):
            c_in, c_out, c_skip = cs[4 + i], cs[5 + i], cs[3 - i]
            setattr(self, f"up{i + 1}", nn.ModuleList([
                DeconvBlock(c_in, c_out, 2, stride=2),
                nn.Sequential(ResidualBlock(c_out + c_skip, c_out), ResidualBlock(c_out, c_out)),
            ]))

    def forward(self, x: SparseTensor, inverse_map: Tensor | None = None) -> Tensor:
        """Features `(N_voxels, out_channels)` in `x`'s voxel order, or per point via `inverse_map`."""
        if x.F.dim() != 2 or x.F.shape[1] != self.in_channels:
            raise ValueError(
                f"MinkUNet: expected input features (N, {self.in_channels}), got {tuple(x.F.shape)}"
            )
        encoded = [self.stem(x)]
        for i in range(1, 5):
            encoded.append(getattr(self, f"stage{i}")(encoded[-1]))
        y = encoded.pop()
        for i in range(1, 5):
            up, blocks = getattr(self, f"up{i}")
            y = blocks(cat([up(y), encoded.pop()]))
        return to_points(y.F, inverse_map)
