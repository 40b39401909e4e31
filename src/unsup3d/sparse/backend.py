"""Which engine runs sparse convolutions: torchsparse 2.1 or spconv 2.3 on CUDA where installed, PyTorch
elsewhere.

``set_backend("auto" | "torch" | "torchsparse" | "spconv")`` sets it for the process, ``use_backend(...)``
for a block. On CUDA, "auto" picks torchsparse when it imports and the dilation is 1 (torchsparse 2.1's
kernel-map builders ignore dilation), else spconv when a CUDA build of it imports and can compute the
convolution exactly (:func:`unsup3d.sparse.spconv_adapter.supports`), else the built-in path. On the
CPU "auto" always runs the built-in path: spconv's CPU build gives wrong results on more than one
thread and has no backward. A forced backend where it cannot run raises, naming the reason; "spconv"
forced on the CPU runs the forward single-threaded, for checking against the built-in path.

torchsparse 2.1 stores the coordinates of a stride-`s` tensor divided by `s`, ours stay in input voxel
units: the adapter divides on the way in and multiplies on the way out. Its own cache (`_caches`) is
kept in ours under ``backend["torchsparse"]`` so its kernel maps are reused across layers. Downsampling
runs in torchsparse's "minkowski" mode, whose output sites are ours (``floor(c / S) * S``). The spconv
adapter is `unsup3d.sparse.spconv_adapter`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from unsup3d.sparse.spconv_adapter import (
    has_downsampling,
    spconv_available,
    spconv_conv3d,
    spconv_cuda_available,
    supports,
)
from unsup3d.sparse.tensor import SparseTensor

__all__ = [
    "BACKENDS",
    "from_torchsparse",
    "get_backend",
    "has_downsampling",
    "resolve",
    "set_backend",
    "spconv_available",
    "spconv_conv3d",
    "to_torchsparse",
    "torchsparse_available",
    "torchsparse_conv3d",
    "use_backend",
]

BACKENDS = ("auto", "torch", "torchsparse", "spconv")
_state = {"backend": "auto"}


def set_backend(name: str) -> None:
    """Use `name` ("auto", "torch", "torchsparse" or "spconv") for every sparse convolution from now on."""
    if name not in BACKENDS:
        raise ValueError(f"unsup3d.sparse.backend: unknown backend {name!r}; choose one of {BACKENDS}")
    _state["backend"] = name


def get_backend() -> str:
    """The backend setting: "auto", "torch", "torchsparse" or "spconv"."""
    return _state["backend"]


@contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Within the block, sparse convolutions use backend `name`; the previous setting comes back after."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = previous


@functools.lru_cache(maxsize=1)
def torchsparse_available() -> bool:
    """Whether torchsparse (with its compiled backend) imports."""
    try:
        importlib.import_module("torchsparse")
        importlib.import_module("torchsparse.nn.functional")
    except Exception:  # a missing package or a broken CUDA build alike mean "not available"
        return False
    return True


def resolve(
    feats: Tensor,
    dilation: Sequence[int] = (1, 1, 1),
    *,
    kernel_size: Sequence[int] = (3, 3, 3),
    stride: Sequence[int] = (1, 1, 1),
    transposed: bool = False,
) -> str:
    """The engine ("torch", "torchsparse" or "spconv") for a convolution of `feats` under the setting."""
    name = get_backend()
    if name == "torch":
        return "torch"
    dil = tuple(int(d) for d in dilation)
    plain = all(d == 1 for d in dil)
    shape = (tuple(int(k) for k in kernel_size), tuple(int(s) for s in stride), dil, transposed)
    if name == "auto":
        if not feats.is_cuda:
            return "torch"
        if plain and torchsparse_available():
            return "torchsparse"
        if spconv_cuda_available() and supports(*shape) is None:
            return "spconv"
        return "torch"
    if name == "spconv":
        return _check_spconv(feats, shape)
    if not torchsparse_available():
        raise RuntimeError(
            "unsup3d.sparse.backend: backend 'torchsparse' was forced but torchsparse is not installed "
            "(it is not on PyPI: build torchsparse 2.1 from source on a CUDA machine), or use "
            "set_backend('auto') / set_backend('torch')"
        )
    if not feats.is_cuda:
        raise RuntimeError(
            f"unsup3d.sparse.backend: backend 'torchsparse' was forced but the features are on "
            f"{feats.device}; torchsparse 2.1 builds kernel maps on CUDA only"
        )
    if not plain:
        raise RuntimeError(
            f"unsup3d.sparse.backend: backend 'torchsparse' was forced for dilation {tuple(dilation)}; "
            f"torchsparse 2.1 ignores dilation, use the 'torch' backend"
        )
    return "torchsparse"


def _check_spconv(feats: Tensor, shape: tuple) -> str:
    """"spconv", or the error of forcing it where it cannot run this convolution."""
    if not spconv_available():
        raise RuntimeError(
            "unsup3d.sparse.backend: backend 'spconv' was forced but spconv does not import; install "
            "the wheel for your CUDA (spconv-cu118 / -cu121 / -cu124 / -cu126, see the README), or use "
            "set_backend('auto') / set_backend('torch')"
        )
    if feats.is_cuda and not spconv_cuda_available():
        raise RuntimeError(
            "unsup3d.sparse.backend: backend 'spconv' was forced for CUDA features but the installed "
            "spconv is the CPU-only build; install spconv-cuXXX for your CUDA"
        )
    reason = supports(*shape)
    if reason is not None:
        raise RuntimeError(f"unsup3d.sparse.backend: spconv cannot run {reason}; use the 'torch' backend")
    return "spconv"


def to_torchsparse(x: SparseTensor) -> Any:
    """A `torchsparse.SparseTensor` of `x` (coordinates divided by the stride), sharing one cache."""
    import torchsparse

    coords = x.coords.clone()
    stride = torch.tensor(x.stride, dtype=coords.dtype, device=coords.device)
    coords[:, 1:] = torch.div(coords[:, 1:], stride, rounding_mode="floor")
    out = torchsparse.SparseTensor(feats=x.feats, coords=coords.int().contiguous(), stride=x.stride)
    cache = x._caches.backend.get("torchsparse")
    if cache is None:
        x._caches.backend["torchsparse"] = out._caches
    else:
        out._caches = cache
    return out


def from_torchsparse(t: Any, like: SparseTensor | None = None) -> SparseTensor:
    """Our `SparseTensor` of torchsparse tensor `t` (coordinates times the stride).

    With `like`, the result shares `like`'s cache (and keeps `t`'s torchsparse cache in it).
    """
    stride = tuple(int(s) for s in t.stride)
    coords = t.coords.clone().int()
    coords[:, 1:] *= torch.tensor(stride, dtype=coords.dtype, device=coords.device)
    out = SparseTensor(t.feats, coords, stride)
    if like is not None:
        out._caches = like._caches
    out._caches.backend["torchsparse"] = t._caches
    out._caches.cmaps.setdefault(out.stride, out.coords)
    return out


def torchsparse_conv3d(input: SparseTensor, weight: Tensor, kernel_size: tuple[int, ...], bias: Tensor | None,
                       stride: tuple[int, ...], dilation: tuple[int, ...], transposed: bool) -> SparseTensor:
    """`unsup3d.sparse.functional.conv3d` run by torchsparse 2.1's `conv3d` (same kernel layout)."""
    import torchsparse.nn.functional as tsF
    from torchsparse.nn.functional.conv import conv_config as ts_config

    t = to_torchsparse(input)
    if transposed:
        fine = tuple(a // b for a, b in zip(input.stride, stride))
        if (fine, kernel_size, stride, dilation) not in t._caches.kmaps:
            raise RuntimeError(
                f"unsup3d.sparse.backend: torchsparse transposed conv at stride {input.stride} has no "
                f"kernel map from stride {fine}; run the matching downsampling with torchsparse too"
            )
    training = torch.is_grad_enabled() and (input.feats.requires_grad or weight.requires_grad)
    config = ts_config.get_default_conv_config(training=training).copy()
    config.kmap_mode = "hashmap"  # the on-the-fly builder downsamples spconv-style, ignoring the mode
    config.downsample_mode = "minkowski"
    padding = tuple((k - 1) // 2 if k % 2 == 1 and s == 1 else 0 for k, s in zip(kernel_size, stride))
    volume = kernel_size[0] * kernel_size[1] * kernel_size[2]
    w = weight[0] if volume == 1 and stride == (1, 1, 1) else weight
    out = tsF.conv3d(t, w, kernel_size, bias=bias, stride=stride, padding=padding, dilation=dilation,
                     config=config, transposed=transposed, training=training)
    return from_torchsparse(out, like=input)
