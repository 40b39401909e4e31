"""`Conv3d`: torchsparse 2.1's sparse convolution module (submanifold, strided, transposed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from unsup3d.sparse.functional import conv3d
from unsup3d.sparse.tensor import SparseTensor, make_ntuple

__all__ = ["Conv3d"]


class Conv3d(nn.Module):
    """Sparse 3D convolution with weight `kernel` `(K, C_in, C_out)` in `kernel_offsets` order.

    ``stride == 1``: submanifold, ``out[p] = sum_k x[p + offset_k] @ kernel[k]`` at the input sites.
    ``stride > 1``: output sites ``floor(c / S) * S`` with ``S = tensor stride * stride``, offsets scaled
    by the input tensor stride. ``transposed=True``: the inverse of the matching downsampling, back to
    its input sites (the kernel map is reused from the tensor's cache). Unlike torchsparse, the K
    dimension is kept for ``kernel_size == 1`` too.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, dilation: int | Sequence[int] = 1, bias: bool = False,
                 transposed: bool = False) -> None:
        super().__init__()
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError(f"Conv3d: channels must be positive, got {in_channels} -> {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = make_ntuple(kernel_size, 3)
        self.stride = make_ntuple(stride, 3)
        self.dilation = make_ntuple(dilation, 3)
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise ValueError(
                f"Conv3d: kernel_size {self.kernel_size}, stride {self.stride} and dilation "
                f"{self.dilation} must be positive"
            )
        self.transposed = transposed
        self.kernel_volume = math.prod(self.kernel_size)
        self.kernel = nn.Parameter(torch.empty(self.kernel_volume, in_channels, out_channels))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform in ``+-1 / sqrt(fan)`` with fan = C_in * K (C_out * K if transposed), as torchsparse."""
        fan = (self.out_channels if self.transposed else self.in_channels) * self.kernel_volume
        bound = 1.0 / math.sqrt(fan)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1, 1):
            s += f", stride={self.stride}"
        if self.dilation != (1, 1, 1):
            s += f", dilation={self.dilation}"
        if self.bias is None:
            s += ", bias=False"
        if self.transposed:
            s += ", transposed=True"
        return s

    def forward(self, input: SparseTensor) -> SparseTensor:
        return conv3d(input, self.kernel, self.kernel_size, bias=self.bias, stride=self.stride,
                      dilation=self.dilation, transposed=self.transposed)
