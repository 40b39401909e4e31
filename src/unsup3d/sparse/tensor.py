"""The sparse tensor: features on integer voxel coordinates, with torchsparse 2.1's interface.

Coordinates are ``(batch, x, y, z)`` int32 rows. Unlike torchsparse 2.1 (which divides the coordinates
of a stride-`s` tensor by `s`), they stay in input voxel units, multiples of the tensor stride, as in
MinkowskiEngine and torchsparse 2.0; `unsup3d.sparse.backend` converts when it hands work to torchsparse.

Every tensor carries `_caches` (a `TensorCache`): the coordinates of each stride met so far (`cmaps`),
the kernel maps built so far (`kmaps`) and the sorted coordinate keys of each stride (`hashmaps`). Ops
that keep the coordinates (norms, activations, `+`, `cat`) and convolutions hand the same cache object to
their output, so that a transposed convolution finds the map of its downsampling, as in torchsparse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["SparseTensor", "TensorCache", "cat", "fapply", "make_ntuple"]


def make_ntuple(value: int | Sequence[int], ndim: int = 3) -> tuple[int, ...]:
    """`value` as a tuple of `ndim` ints (an int is repeated), as torchsparse's `make_ntuple`."""
    if isinstance(value, (int, np.integer)):
        return (int(value),) * ndim
    if isinstance(value, Tensor):
        value = value.tolist()
    out = tuple(int(v) for v in value)
    if len(out) != ndim:
        raise ValueError(f"expected an int or {ndim} ints, got {value!r}")
    return out


class TensorCache:
    """What the tensors of one forward pass share: per-stride coordinates, kernel maps, sorted keys.

    `cmaps[stride]` is the `(N, 4)` coordinate tensor of that stride; `kmaps[(stride, kernel_size,
    conv_stride, dilation)]` a `unsup3d.sparse.kernel_map.KernelMap`; `hashmaps[stride]` the sorted keys
    of that stride's coordinates; `backend` holds state of other backends (torchsparse's own cache);
    `interpolations` the weights of `unsup3d.models.interpolate.trilinear_interpolate` per stride.
    """

    def __init__(self) -> None:
        self.cmaps: dict[tuple[int, ...], Tensor] = {}
        self.kmaps: dict[tuple[Any, ...], Any] = {}
        self.hashmaps: dict[tuple[int, ...], Any] = {}
        self.backend: dict[str, Any] = {}
        self.interpolations: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return (f"TensorCache(cmaps={sorted(self.cmaps)}, kmaps={len(self.kmaps)}, "
                f"hashmaps={sorted(self.hashmaps)})")


class SparseTensor:
    """Features `(N, C)` at int32 coordinates `(N, 4)` ``(batch, x, y, z)`` of tensor stride `stride`.

    A per-sample tensor that has not been batched yet may have `(N, 3)` coordinates; `sparse_collate`
    adds the batch column. Convolutions need the `(N, 4)` form.
    """

    def __init__(self, feats: Tensor, coords: Tensor, stride: int | Sequence[int] = 1) -> None:
        if isinstance(coords, np.ndarray):
            coords = torch.from_numpy(coords)
        if isinstance(feats, np.ndarray):
            feats = torch.from_numpy(feats)
        if not isinstance(coords, Tensor) or not isinstance(feats, Tensor):
            raise TypeError(
                f"SparseTensor: feats and coords must be tensors, got {type(feats)}, {type(coords)}"
            )
        if coords.dim() != 2 or coords.shape[1] not in (3, 4):
            raise ValueError(
                f"SparseTensor: coords must be (N, 4) (batch, x, y, z), got {tuple(coords.shape)}"
            )
        if coords.is_floating_point() or coords.is_complex() or coords.dtype == torch.bool:
            raise ValueError(f"SparseTensor: coords must be integers, got {coords.dtype}")
        if feats.dim() == 0 or feats.shape[0] != coords.shape[0]:
            raise ValueError(
                f"SparseTensor: feats {tuple(feats.shape)} and coords {tuple(coords.shape)} differ in N"
            )
        if coords.dtype != torch.int32:
            coords = coords.to(torch.int32)
        self.feats = feats
        self.coords = coords
        self.stride = make_ntuple(stride, 3)
        if min(self.stride) <= 0:
            raise ValueError(f"SparseTensor: stride must be positive, got {self.stride}")
        self._caches = TensorCache()

    # torchsparse's short names.
    @property
    def F(self) -> Tensor:
        return self.feats

    @F.setter
    def F(self, feats: Tensor) -> None:
        self.feats = feats

    @property
    def C(self) -> Tensor:
        return self.coords

    @C.setter
    def C(self, coords: Tensor) -> None:
        self.coords = coords

    @property
    def s(self) -> tuple[int, ...]:
        return self.stride

    @s.setter
    def s(self, stride: int | Sequence[int]) -> None:
        self.stride = make_ntuple(stride, 3)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def batch_size(self) -> int:
        """Number of batch items: the largest batch index plus one (0 when empty)."""
        if self.coords.shape[0] == 0:
            return 0
        return int(self.coords[:, 0].max()) + 1

    def __len__(self) -> int:
        return self.coords.shape[0]

    def __repr__(self) -> str:
        return (f"SparseTensor(N={self.coords.shape[0]}, feats={tuple(self.feats.shape)}, "
                f"stride={self.stride}, device={self.feats.device}, dtype={self.feats.dtype})")

    def replace_feature(self, feats: Tensor) -> SparseTensor:
        """A tensor at the same coordinates and stride with `feats`, sharing this tensor's caches."""
        if feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"SparseTensor.replace_feature: {feats.shape[0]} feature rows for "
                f"{self.coords.shape[0]} sites"
            )
        out = SparseTensor.__new__(SparseTensor)
        out.feats = feats
        out.coords = self.coords
        out.stride = self.stride
        out._caches = self._caches
        return out

    def _moved(self, device: torch.device | str | None) -> None:
        # Kernel maps live on the old device; a moved tensor starts a fresh cache (others keep theirs).
        if device is not None and torch.device(device) != self.coords.device:
            self._caches = TensorCache()

    def to(self, device: torch.device | str | None = None, non_blocking: bool = False,
           dtype: torch.dtype | None = None) -> SparseTensor:
        """Move coordinates and features (in place, returning self, as torchsparse); `dtype` casts feats."""
        self._moved(device)
        self.coords = self.coords.to(device, non_blocking=non_blocking)
        self.feats = self.feats.to(device=device, dtype=dtype, non_blocking=non_blocking)
        return self

    def cpu(self) -> SparseTensor:
        return self.to("cpu")

    def cuda(self, device: int | str | None = None) -> SparseTensor:
        target = torch.device("cuda") if device is None else torch.device(
            f"cuda:{device}" if isinstance(device, int) else device)
        return self.to(target)

    def half(self) -> SparseTensor:
        self.feats = self.feats.half()
        return self

    def float(self) -> SparseTensor:
        self.feats = self.feats.float()
        return self

    def double(self) -> SparseTensor:
        self.feats = self.feats.double()
        return self

    def detach(self) -> SparseTensor:
        self.coords = self.coords.detach()
        self.feats = self.feats.detach()
        return self

    def __add__(self, other: SparseTensor | Tensor | float) -> SparseTensor:
        """Sum of features at the same sites (torchsparse keeps this tensor's coordinates and caches)."""
        if isinstance(other, SparseTensor):
            if other.coords.shape[0] != self.coords.shape[0]:
                raise ValueError(
                    f"SparseTensor +: {self.coords.shape[0]} sites vs {other.coords.shape[0]} sites"
                )
            other = other.feats
        return self.replace_feature(self.feats + other)

    def dense(self, spatial_range: Sequence[int] | None = None,
              origin: Sequence[int] = (0, 0, 0)) -> Tensor:
        """Dense `(B, X, Y, Z, C)` grid in units of the stride (torchsparse's `dense()` layout).

        Site ``(b, x, y, z)`` lands at ``[b, (x - ox) // sx, (y - oy) // sy, (z - oz) // sz]``;
        `spatial_range` ``(B, X, Y, Z)`` defaults to the smallest grid holding every site.
        """
        if self.coords.shape[1] != 4:
            raise ValueError("SparseTensor.dense: needs batched (N, 4) coordinates")
        o = torch.tensor(make_ntuple(origin, 3), device=self.coords.device, dtype=torch.long)
        s = torch.tensor(self.stride, device=self.coords.device, dtype=torch.long)
        idx = self.coords.long()
        xyz = torch.div(idx[:, 1:] - o, s, rounding_mode="floor")
        if xyz.numel() and int(xyz.min()) < 0:
            raise ValueError(f"SparseTensor.dense: sites lie below origin {tuple(o.tolist())}")
        if spatial_range is None:
            hi = (xyz.max(0).values + 1).tolist() if xyz.numel() else [0, 0, 0]
            spatial_range = (self.batch_size, *hi)
        spatial_range = tuple(int(v) for v in spatial_range)
        if len(spatial_range) != 4:
            raise ValueError(f"SparseTensor.dense: spatial_range must be (B, X, Y, Z), got {spatial_range}")
        if idx.numel() and (int(idx[:, 0].max()) >= spatial_range[0]
                            or bool((xyz >= torch.tensor(spatial_range[1:], device=xyz.device)).any())):
            raise ValueError(f"SparseTensor.dense: sites fall outside spatial_range {spatial_range}")
        out = self.feats.new_zeros(*spatial_range, *self.feats.shape[1:])
        out[idx[:, 0], xyz[:, 0], xyz[:, 1], xyz[:, 2]] = self.feats
        return out


def fapply(input: SparseTensor, fn: Callable[..., Tensor], *args: Any, **kwargs: Any) -> SparseTensor:
    """`fn` applied to the features; same sites, stride and caches (torchsparse's `fapply`)."""
    return input.replace_feature(fn(input.feats, *args, **kwargs))


def cat(inputs: Sequence[SparseTensor]) -> SparseTensor:
    """Channel-wise concatenation of tensors at the same sites (torchsparse's `cat`), sharing caches."""
    if len(inputs) == 0:
        raise ValueError("cat: no tensors given")
    first = inputs[0]
    for k, x in enumerate(inputs[1:], start=1):
        if x.coords.shape[0] != first.coords.shape[0] or x.stride != first.stride:
            raise ValueError(
                f"cat: tensor {k} has {x.coords.shape[0]} sites at stride {x.stride}, "
                f"tensor 0 has {first.coords.shape[0]} at stride {first.stride}"
            )
    return first.replace_feature(torch.cat([x.feats for x in inputs], dim=1))
