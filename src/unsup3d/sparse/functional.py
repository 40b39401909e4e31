"""Sparse convolution as gather - GEMM - scatter per weight row, and global pooling per batch item.

``out[q] = sum_k x[q + offset_k] @ kernel[k]`` over the pairs of a `KernelMap`: for each row `k` the
input rows are gathered, multiplied by ``kernel[k]`` and added into the output rows. The zero offset of
a stride-1 map is a plain matmul over all sites. A custom autograd Function keeps only the input
features, the kernel and the map for backward (no gathered copies), and runs the same loop backwards:
``dx[in] += dy[out] @ kernel[k]^T`` and ``dkernel[k] = x[in]^T @ dy[out]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from unsup3d.sparse import backend
from unsup3d.sparse.kernel_map import KernelMap, get_kernel_map, get_transposed_kernel_map
from unsup3d.sparse.tensor import SparseTensor, make_ntuple

__all__ = ["conv3d", "global_avg_pool", "global_max_pool", "sparse_conv_features"]


def _row_pairs(kmap: KernelMap, k: int, transposed: bool) -> tuple[Tensor, Tensor]:
    i, o = kmap.pairs(k)
    return (o, i) if transposed else (i, o)


def _forward(feats: Tensor, weight: Tensor, kmap: KernelMap, transposed: bool) -> Tensor:
    n_out = kmap.n_in if transposed else kmap.n_out
    out = feats.new_zeros(n_out, weight.shape[2])
    for k in range(weight.shape[0]):
        if k == kmap.identity:
            out.addmm_(feats, weight[k])
            continue
        i, o = _row_pairs(kmap, k, transposed)
        if i.numel():
            out.index_add_(0, o, feats.index_select(0, i).mm(weight[k]))
    return out


class _GatherGemmScatter(torch.autograd.Function):
    """Sparse convolution over a kernel map; saves only inputs, kernel and map for backward."""

    @staticmethod
    def forward(ctx, feats: Tensor, weight: Tensor, kmap: KernelMap, transposed: bool) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        ctx.transposed = transposed
        return _forward(feats, weight, kmap, transposed)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        feats, weight = ctx.saved_tensors
        kmap, transposed = ctx.kmap, ctx.transposed
        grad_out = grad_out.contiguous()
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_x = torch.zeros_like(feats) if need_x else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for k in range(weight.shape[0]):
            if k == kmap.identity:
                if need_x:
                    grad_x.addmm_(grad_out, weight[k].t())
                if need_w:
                    torch.mm(feats.t(), grad_out, out=grad_w[k])
                continue
            i, o = _row_pairs(kmap, k, transposed)
            if i.numel() == 0:
                continue
            g = grad_out.index_select(0, o)
            if need_w:
                torch.mm(feats.index_select(0, i).t(), g, out=grad_w[k])
            if need_x:
                grad_x.index_add_(0, i, g.mm(weight[k].t()))
        return grad_x, grad_w, None, None


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active for `device_type`, or None (works on torch 2.1 and newer)."""
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has no device argument
        enabled = torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled()
    if not enabled:
        return None
    try:
        return torch.get_autocast_dtype(device_type)
    except AttributeError:
        return torch.get_autocast_gpu_dtype() if device_type == "cuda" else torch.get_autocast_cpu_dtype()


def sparse_conv_features(feats: Tensor, weight: Tensor, kmap: KernelMap, transposed: bool = False) -> Tensor:
    """Output features of a convolution over `kmap` (differentiable in `feats` and `weight`)."""
    dtype = _autocast_dtype(feats.device.type)
    if dtype is not None:
        feats, weight = feats.to(dtype), weight.to(dtype)
    elif weight.dtype != feats.dtype:
        raise TypeError(f"conv3d: features are {feats.dtype} but the kernel is {weight.dtype}")
    return _GatherGemmScatter.apply(feats.contiguous(), weight.contiguous(), kmap, transposed)


def _check_weight(weight: Tensor, kernel_size: tuple[int, ...], c_in: int) -> None:
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    if weight.dim() != 3 or weight.shape[0] != volume or weight.shape[1] != c_in:
        raise ValueError(
            f"conv3d: kernel must be (K={volume}, C_in={c_in}, C_out) for kernel size {kernel_size}, "
            f"got {tuple(weight.shape)}"
        )


def conv3d(
    input: SparseTensor,
    weight: Tensor,
    kernel_size: int | Sequence[int] = 3,
    bias: Tensor | None = None,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    transposed: bool = False,
) -> SparseTensor:
    """Sparse 3D convolution with torchsparse's semantics; `weight` is `(K, C_in, C_out)`.

    Stride 1 is submanifold (outputs at the input sites, in their order). Stride > 1 outputs at the
    unique ``floor(c / S) * S``, ``S = input stride * stride``. `transposed` inverts the map of the
    downsampling that produced this stride and returns features at that finer stride's cached sites.
    torchsparse or spconv takes over where `unsup3d.sparse.backend` says so.
    """
    ks = make_ntuple(kernel_size, 3)
    st = make_ntuple(stride, 3)
    dil = make_ntuple(dilation, 3)
    feats = input.feats
    if feats.dim() != 2:
        raise ValueError(f"conv3d: features must be (N, C), got {tuple(feats.shape)}")
    _check_weight(weight, ks, feats.shape[1])
    caches = input._caches
    caches.cmaps.setdefault(input.stride, input.coords)

    if ks == (1, 1, 1) and st == (1, 1, 1):
        # A 1x1x1 convolution touches only its own site: no kernel map (as torchsparse).
        out = feats.mm(weight[0])
        return input.replace_feature(out if bias is None else out + bias)

    engine = backend.resolve(feats, dil, kernel_size=ks, stride=st, transposed=transposed)
    if engine == "torchsparse":
        return backend.torchsparse_conv3d(input, weight, ks, bias, st, dil, transposed)
    if engine == "spconv":
        # Under "auto", a transposed conv whose downsampling ran elsewhere falls back to the built-in path.
        inverts = transposed and st != (1, 1, 1)
        if not inverts or backend.get_backend() == "spconv" or backend.has_downsampling(input, ks, st, dil):
            return backend.spconv_conv3d(input, weight, ks, bias, st, dil, transposed)

    if transposed and st != (1, 1, 1):
        kmap, fine = get_transposed_kernel_map(input, ks, st, dil)
        out = sparse_conv_features(feats, weight, kmap, transposed=True)
        coords, out_stride = kmap.coords_in, fine
    else:
        kmap = get_kernel_map(input, ks, st, dil)
        # A stride-1 transposed convolution is the stride-1 map used backwards (out[p] gets x[p - off]).
        out = sparse_conv_features(feats, weight, kmap, transposed=transposed)
        coords = kmap.coords_out
        out_stride = tuple(a * b for a, b in zip(input.stride, st))
    if bias is not None:
        out = out + bias
    output = SparseTensor.__new__(SparseTensor)
    output.feats, output.coords, output.stride = out, coords, out_stride
    output._caches = caches
    caches.cmaps.setdefault(out_stride, coords)
    return output


def _batch_index(input: SparseTensor) -> tuple[Tensor, int]:
    if input.coords.dim() != 2 or input.coords.shape[1] != 4:
        raise ValueError(
            f"global pooling: coords must be (N, 4) (batch, x, y, z), got {tuple(input.coords.shape)}"
        )
    return input.coords[:, 0].long(), input.batch_size


def global_avg_pool(input: SparseTensor) -> Tensor:
    """Mean of the features of each batch item, `(B, C)` (B = largest batch index + 1; empty items get 0)."""
    batch, size = _batch_index(input)
    feats = input.feats
    sums = feats.new_zeros(size, feats.shape[1]).index_add_(0, batch, feats)
    counts = torch.bincount(batch, minlength=size).clamp_(min=1).to(feats.dtype)
    return sums / counts.unsqueeze(1)


def global_max_pool(input: SparseTensor) -> Tensor:
    """Channel-wise max of the features of each batch item, `(B, C)` (empty items get 0)."""
    batch, size = _batch_index(input)
    feats = input.feats
    index = batch.unsqueeze(1).expand_as(feats)
    return feats.new_zeros(size, feats.shape[1]).scatter_reduce(0, index, feats, reduce="amax",
                                                                include_self=False)
