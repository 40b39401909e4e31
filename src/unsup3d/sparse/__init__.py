"""unsup3d.sparse: sparse tensors and convolutions with torchsparse 2.1's interface, in pure PyTorch.

`SparseTensor`, `sparse_quantize`, `sparse_collate`, `kernel_offsets`, and the modules of
`unsup3d.sparse.nn`. Where torchsparse or a CUDA build of spconv is installed and the tensors are on
CUDA, `unsup3d.sparse.backend` hands convolutions to it.
"""

from unsup3d.sparse import backend, nn
from unsup3d.sparse.collate import sparse_collate, sparse_collate_fn
from unsup3d.sparse.functional import conv3d, global_avg_pool, global_max_pool
from unsup3d.sparse.kernel_map import kernel_offsets
from unsup3d.sparse.quantize import ravel_hash, sparse_quantize
from unsup3d.sparse.tensor import SparseTensor, TensorCache, cat, fapply

__all__ = [
    "SparseTensor",
    "TensorCache",
    "backend",
    "cat",
    "conv3d",
    "fapply",
    "global_avg_pool",
    "global_max_pool",
    "kernel_offsets",
    "nn",
    "ravel_hash",
    "sparse_collate",
    "sparse_collate_fn",
    "sparse_quantize",
]
