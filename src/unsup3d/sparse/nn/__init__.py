"""`unsup3d.sparse.nn`: modules on `SparseTensor`, named as torchsparse's `torchsparse.nn`."""

from unsup3d.sparse.nn.activation import LeakyReLU, ReLU, SiLU
from unsup3d.sparse.nn.conv import Conv3d
from unsup3d.sparse.nn.norm import BatchNorm, InstanceNorm, LayerNorm
from unsup3d.sparse.nn.pooling import GlobalAvgPool, GlobalMaxPool

__all__ = [
    "BatchNorm",
    "Conv3d",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "InstanceNorm",
    "LayerNorm",
    "LeakyReLU",
    "ReLU",
    "SiLU",
]
