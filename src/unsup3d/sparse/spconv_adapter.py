"""Sparse convolutions run by spconv 2.3 with this package's semantics (`unsup3d.sparse.backend`).

What spconv can compute exactly as ``unsup3d.sparse.conv3d`` does:

- stride 1 with an odd kernel (any dilation): spconv's ``SubMConv3d``. Ours is
  ``out[p] = sum_k x[p + offset_k] @ kernel[k]``; spconv's weight is ``(C_out, kx, ky, kz, C_in)`` and
  its cell ``u`` holds the neighbour at ``(u - (k - 1) / 2) * dilation``, so row ``k`` of ours goes to
  cell ``offset_k / dilation + (k - 1) / 2``. A stride-1 *transposed* conv (``out[p]`` gets
  ``x[p - offset_k]``) is the same with the offsets negated.
- kernel 2, stride 2: spconv's ``SparseConv3d`` without padding maps grid cell ``i`` to ``i // 2``,
  ours site ``c`` to ``floor(c / S) * S``; kernel offsets 0 and 1 are cells 0 and 1. The grid's origin
  is a multiple of ``S``, so both floor the same way.
- the transposed kernel-2 stride-2 conv: ``SparseInverseConv3d`` on the pairs of the matching
  downsampling, which returns the finer tensor's sites in their order, as ours does.

Anything else (a strided conv whose kernel is not 2, an even stride-1 kernel) is left to the built-in
path: :func:`supports` says which. spconv counts grid cells of the tensor's own stride from a
non-negative origin; the adapter subtracts an origin (a multiple of the output stride) and divides by
the stride on the way in, and multiplies back on the way out. spconv's pairs are kept in our tensor's
cache (``backend["spconv"]``) under keys naming the stride and kernel, so every layer at one stride
reuses them and the transposed convs find their downsampling's.

On the CPU, spconv's build gives wrong results on more than one thread and has no backward: forced
there, the forward runs on one thread (torch's and spconv's OpenMP threads, restored after) and a
kernel or input that needs a gradient is refused.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor

from unsup3d.sparse.kernel_map import kernel_offsets
from unsup3d.sparse.tensor import SparseTensor

__all__ = [
    "has_downsampling",
    "spconv_available",
    "spconv_conv3d",
    "spconv_cuda_available",
    "spconv_weight",
    "supports",
]

_STORE = "spconv"


@functools.lru_cache(maxsize=1)
def spconv_available() -> bool:
    """Whether spconv 2.x (``spconv.pytorch``) imports, CPU-only builds included."""
    try:
        importlib.import_module("spconv.pytorch")
    except Exception:  # missing, or a wheel built for another CUDA: not available either way
        return False
    return True


@functools.lru_cache(maxsize=1)
def spconv_cuda_available() -> bool:
    """Whether the installed spconv was built with CUDA (a ``spconv-cuXXX`` wheel, not ``spconv``)."""
    if not spconv_available():
        return False
    from spconv.cppconstants import CPU_ONLY_BUILD

    return not CPU_ONLY_BUILD


def supports(kernel_size: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
             transposed: bool) -> str | None:
    """None when spconv computes this convolution as ours does, else why not (one line)."""
    if stride == (1, 1, 1):
        if any(k % 2 == 0 for k in kernel_size):
            return f"a stride-1 conv with an even kernel {kernel_size} (spconv's submanifold conv is centred)"
        return None
    if kernel_size != (2, 2, 2) or stride != (2, 2, 2):
        return f"a strided conv with kernel {kernel_size} and stride {stride} (spconv: kernel 2, stride 2)"
    if dilation != (1, 1, 1):
        return f"a strided conv with dilation {dilation}"
    return None


def spconv_weight(kernel: Tensor, kernel_size: tuple[int, ...], dilation: tuple[int, ...],
                  flip: bool = False) -> Tensor:
    """Our ``(K, C_in, C_out)`` kernel in spconv's ``(C_out, kx, ky, kz, C_in)`` layout (differentiable).

    ``flip`` negates the offsets (a stride-1 transposed conv). Stride-1 kernels are odd, so cell
    ``offset / dilation + (k - 1) / 2``; the kernel-2 stride-2 offsets 0, 1 are cells 0, 1.
    """
    offsets = kernel_offsets(kernel_size, dilation).long().to(kernel.device)
    if flip:
        offsets = -offsets
    dil = torch.tensor(dilation, device=kernel.device)
    centre = torch.tensor([(k - 1) // 2 for k in kernel_size], device=kernel.device)
    cells = offsets // dil + centre
    w = kernel.new_zeros(kernel.shape[2], *kernel_size, kernel.shape[1])
    w[:, cells[:, 0], cells[:, 1], cells[:, 2], :] = kernel.permute(2, 0, 1)
    return w


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch and every OpenMP runtime (spconv ships its own) on one thread; restored on exit."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="openmp"):
            yield
    finally:
        torch.set_num_threads(threads)


def _grid(coords: Tensor, stride: tuple[int, ...], align: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """spconv indices ``(b, i, j, l)`` of our coordinates at ``stride`` (cells from an origin that is a
    multiple of ``align``), and that origin ``(3,)`` in input voxel units."""
    c = coords.long()
    a = torch.tensor(align, device=c.device)
    origin = torch.div(c[:, 1:].amin(dim=0), a, rounding_mode="floor") * a
    s = torch.tensor(stride, device=c.device)
    cells = torch.div(c[:, 1:] - origin, s, rounding_mode="floor")
    return torch.cat([c[:, :1], cells], dim=1).int().contiguous(), origin


def _key(kind: str, stride: tuple[int, ...], kernel_size: tuple[int, ...], conv_stride: tuple[int, ...],
         dilation: tuple[int, ...]) -> str:
    return f"{kind}:s{stride}:k{kernel_size}:t{conv_stride}:d{dilation}"


def _down_entry(input: SparseTensor, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                dilation: tuple[int, ...]) -> tuple[str, tuple[int, ...], Any | None]:
    """Key, finer stride and spconv pairs of the downsampling a transposed conv at ``input`` inverts
    (None when spconv did not make ``input``'s sites)."""
    fine = tuple(a // b for a, b in zip(input.stride, stride))
    key = _key("down", fine, kernel_size, stride, dilation)
    store = input._caches.backend.get(_STORE, {})
    coarse = store.get(key + ":coarse")
    same_sites = coarse is not None and (coarse is input.coords or torch.equal(coarse, input.coords))
    if key not in store or not same_sites:
        return key, fine, None
    return key, fine, store[key]


def has_downsampling(input: SparseTensor, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                     dilation: tuple[int, ...]) -> bool:
    """Whether spconv made ``input``'s sites by the downsampling a transposed conv would invert."""
    return _down_entry(input, kernel_size, stride, dilation)[2] is not None


def _describe(cls: type, weight: Tensor, kernel_size: tuple[int, ...], **kwargs: Any) -> Any:
    """A spconv conv module that only describes the convolution: its own weight is on the meta device
    and unused, since ``_conv_forward`` takes the weight as an argument (so gradients reach ours)."""
    with torch.device("meta"):
        return cls(weight.shape[1], weight.shape[2], kernel_size, bias=False, **kwargs)


def _compute_dtype(feats: Tensor) -> torch.dtype:
    """The dtype spconv runs in: the autocast dtype where it is float16, else float32 for any autocast
    (spconv's kernels have no bfloat16), else the features' own."""
    from unsup3d.sparse.functional import _autocast_dtype  # functional imports this module's caller

    autocast = _autocast_dtype(feats.device.type)
    if autocast is None:
        return feats.dtype
    return torch.float16 if autocast == torch.float16 else torch.float32


def spconv_conv3d(input: SparseTensor, weight: Tensor, kernel_size: tuple[int, ...], bias: Tensor | None,
                  stride: tuple[int, ...], dilation: tuple[int, ...], transposed: bool) -> SparseTensor:
    """`unsup3d.sparse.functional.conv3d` run by spconv (a case :func:`supports` accepts)."""
    import spconv.pytorch as sp

    reason = supports(kernel_size, stride, dilation, transposed)
    if reason is not None:
        raise RuntimeError(f"unsup3d.sparse.backend: spconv cannot run {reason}; use the 'torch' backend")
    feats = input.feats
    on_cpu = not feats.is_cuda
    if on_cpu and torch.is_grad_enabled() and (feats.requires_grad or weight.requires_grad):
        raise RuntimeError(
            "unsup3d.sparse.backend: spconv's CPU build has no backward; run the forced 'spconv' backend "
            "on the CPU under torch.no_grad() (for checking), or train on CUDA or with 'torch'"
        )
    caches = input._caches
    store: dict[str, Any] = caches.backend.setdefault(_STORE, {})
    dtype = _compute_dtype(feats)
    batch_size = int(input.coords[:, 0].max()) + 1 if input.coords.shape[0] else 1
    strided = stride != (1, 1, 1)

    if transposed and strided:
        key, fine, data = _down_entry(input, kernel_size, stride, dilation)
        if data is None:
            raise RuntimeError(
                f"unsup3d.sparse.backend: spconv transposed conv at stride {input.stride} has no spconv "
                f"downsampling from stride {fine} to these sites; run the matching downsampling with "
                f"spconv too"
            )
        indices, _ = _grid(input.coords, input.stride, input.stride)
        spatial_shape = list(data.out_spatial_shape)
        out_coords, out_stride = store[key + ":fine"], fine
        module = _describe(sp.SparseInverseConv3d, weight, kernel_size, indice_key=key)
        dict_in = dict(store)
    else:
        out_stride = tuple(a * b for a, b in zip(input.stride, stride))
        indices, origin = _grid(input.coords, input.stride, out_stride)
        spatial_shape = [int(n) + 1 for n in indices[:, 1:].amax(dim=0)] if indices.shape[0] else [1, 1, 1]
        if strided:
            key = _key("down", input.stride, kernel_size, stride, dilation)
            spatial_shape = [-(-n // s) * s for n, s in zip(spatial_shape, stride)]  # whole cells only
            module = _describe(sp.SparseConv3d, weight, kernel_size, stride=stride, indice_key=key)
            # spconv never reuses a strided conv's pairs and refuses a key it already holds.
            dict_in = {k: v for k, v in store.items() if k != key}
        else:
            key = _key("subm", input.stride, kernel_size, stride, dilation)
            module = _describe(sp.SubMConv3d, weight, kernel_size, dilation=dilation, indice_key=key)
            dict_in = dict(store)
            out_coords = input.coords
    w = spconv_weight(weight, kernel_size, dilation, flip=transposed and not strided).to(dtype)
    tensor = sp.SparseConvTensor(feats.to(dtype).contiguous(), indices, spatial_shape, batch_size,
                                 indice_dict=dict_in)
    with _one_thread() if on_cpu else nullcontext(), torch.autocast(feats.device.type, enabled=False):
        out = module._conv_forward(torch.is_grad_enabled(), tensor, w.contiguous(), None)
    store.update(out.indice_dict)
    if strided and not transposed:
        o = out.indices.long()
        s = torch.tensor(out_stride, device=o.device)
        out_coords = torch.cat([o[:, :1], o[:, 1:] * s + origin], dim=1).int()
        store[key + ":coarse"] = out_coords
        store[key + ":fine"] = input.coords
    result = out.features if bias is None else out.features + bias
    output = SparseTensor.__new__(SparseTensor)
    output.feats, output.coords, output.stride = result, out_coords, out_stride
    output._caches = caches
    caches.cmaps.setdefault(out_stride, out_coords)
    return output
