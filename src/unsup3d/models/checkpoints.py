"""Load checkpoints without running pickled code, and the releases' backbone checkpoints into
`MinkUNet` / `Res16UNet`.

The modules here carry the releases' attribute names, so a checkpoint differs only where the engines
nest parameters differently:
- MinkowskiEngine (SegContrast, STSSL, GrowSP, PointDC): `MinkowskiBatchNorm` keeps its parameters in
  a `bn` child (``stem.1.bn.weight``) and `MinkowskiLinear` in a `linear` child (``delayer1.linear.weight``);
- torchsparse 2.1 stores the kernel of a 1x1x1 convolution as `(C_in, C_out)`, without the K axis.

Kernels are `(K, C_in, C_out)` in all three, rows in the order of `unsup3d.sparse.kernel_offsets`
(torchsparse's). That order is MinkowskiEngine's for odd kernels (x varies fastest) but not for the
2x2x2 kernels of the strided and transposed convolutions: MinkowskiEngine's `kernel_region` puts x
fastest there too (row ``x + 2y + 4z``) where torchsparse puts z fastest (row ``4x + 2y + z``), so
those rows are permuted when converting a MinkowskiEngine checkpoint.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["UnsafeCheckpointError", "convert_release_state_dict", "load_release_weights", "load_tensors"]


class UnsafeCheckpointError(ValueError):
    """A file ``torch.load(weights_only=True)`` refuses: it holds pickled code, or is no pickle at all."""


def load_tensors(path: str | os.PathLike, *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU: tensors and plain containers only, no
    pickled code runs. A file that would need more is an :class:`UnsafeCheckpointError` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **({"mmap": True} if mmap else {}))
    except pickle.UnpicklingError as e:
        if code := re.search(r"Unsupported global: GLOBAL (\S+)", str(e)):
            raise UnsafeCheckpointError(
                f"{path}: refusing to load it: it holds pickled code ({code[1]}), "
                "not only tensors and plain containers"
            ) from e
        raise UnsafeCheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle)") from e

_ME_BN = re.compile(r"(^|\.)bn\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_ME_LINEAR = re.compile(r"(^|\.)linear\.(weight|bias)$")
# Our row 4x + 2y + z of a 2x2x2 kernel is MinkowskiEngine's row x + 2y + 4z.
_ME_K2_ROWS = torch.tensor([x + 2 * y + 4 * z for x in (0, 1) for y in (0, 1) for z in (0, 1)])


def _minkowski_kernel(key: str, kernel: Tensor) -> Tensor:
    volume = kernel.shape[0]
    if volume == 8:
        return kernel[_ME_K2_ROWS.to(kernel.device)]
    if volume % 2 == 0:
        raise ValueError(
            f"convert_release_state_dict: {key!r} has an even kernel volume {volume} other than 2x2x2, whose "
            f"offsets differ between MinkowskiEngine and torchsparse"
        )
    return kernel


def convert_release_state_dict(state_dict: Mapping[str, Tensor], prefix: str = "",
                               engine: str = "minkowski") -> dict[str, Tensor]:
    """Rename (and for MinkowskiEngine, reorder) a release checkpoint to this package's modules.

    Args:
        state_dict: the release's `state_dict`.
        prefix: keep only keys under this prefix and strip it, e.g. ``"model_q."`` for STSSL's online
            backbone or ``"module."`` for a `DataParallel` checkpoint.
        engine: ``"minkowski"`` (SegContrast, STSSL, GrowSP, PointDC) or ``"torchsparse"``.
    """
    if engine not in ("minkowski", "torchsparse"):
        raise ValueError(
            f"convert_release_state_dict: engine must be 'minkowski' or 'torchsparse', got {engine!r}"
        )
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if prefix:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix):]
        if engine == "minkowski":
            key = _ME_BN.sub(r"\1\2", key)
            key = _ME_LINEAR.sub(r"\1\2", key)
            if key.endswith("kernel") and value.dim() == 3:
                value = _minkowski_kernel(key, value)
        if key in out:
            raise ValueError(f"convert_release_state_dict: two checkpoint entries map to {key!r}")
        out[key] = value
    return out


def load_release_weights(model: nn.Module, state_dict: Mapping[str, Tensor], prefix: str = "",
                         engine: str = "minkowski", strict: bool = True) -> None:
    """Load a release checkpoint (see `convert_release_state_dict`) into `model`, in place.

    torchsparse's `(C_in, C_out)` 1x1x1 kernels get their K axis back; every other shape must match.
    """
    weights = convert_release_state_dict(state_dict, prefix, engine)
    own = model.state_dict()
    if not weights:
        raise ValueError(f"load_release_weights: no checkpoint entries under prefix {prefix!r}")
    for key, value in weights.items():
        target = own.get(key)
        if target is not None and value.dim() == 2 and tuple(target.shape) == (1, *value.shape):
            weights[key] = value.unsqueeze(0)
    model.load_state_dict(weights, strict=strict)
