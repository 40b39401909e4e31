"""Normalisation over the features of a sparse tensor (torchsparse's `BatchNorm`, `GroupNorm`...)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from unsup3d.sparse.functional import global_avg_pool
from unsup3d.sparse.tensor import SparseTensor, fapply

__all__ = ["BatchNorm", "InstanceNorm", "LayerNorm"]

# What torchsparse's BatchNorm (an `nn.BatchNorm1d`) keeps in a state dict, with no `bn.` in between.
_STATE_NAMES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class BatchNorm(nn.Module):
    """`torch.nn.BatchNorm1d` over the `(N, C)` features; the sites count as the batch.

    The normalisation is an inner `nn.BatchNorm1d`, ``self.bn``, handed ``input.F``. Under
    `torch.nn.SyncBatchNorm.convert_sync_batchnorm` (Lightning's ``sync_batchnorm=True``) this module
    synchronises by itself: it keeps the inner module and normalises over the sites of all processes
    of the group (:func:`sync_batch_norm`, torch's SyncBatchNorm statistics and gradients), on any
    device. torch's own SyncBatchNorm could not stand in: it takes no sparse tensor, refuses CPU
    tensors, and DDP refuses it in a CPU model. ``sync`` and ``process_group`` say whether and over
    which group it synchronises. State-dict keys are torchsparse's (``weight``, ``running_mean``, ...,
    no ``bn.``), so every checkpoint loads either way.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.bn: nn.modules.batchnorm._BatchNorm = nn.BatchNorm1d(
            num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype
        )
        #: synchronise the statistics across processes (set by ``convert_sync_batchnorm``)
        self.sync = False
        self.process_group: Any = None
        self.register_state_dict_post_hook(_flatten_keys)

    def add_module(self, name: str, module: nn.Module | None) -> None:
        # convert_sync_batchnorm hands the converted inner module back through add_module; it shares
        # the parameters and buffers of the one kept here.
        if name == "bn" and isinstance(module, nn.SyncBatchNorm) and "bn" in self._modules:
            self.sync, self.process_group = True, module.process_group
            return
        super().add_module(name, module)

    # The inner module's attributes, as on torchsparse's BatchNorm (tests and tools read them).
    num_features = property(lambda self: self.bn.num_features)
    affine = property(lambda self: self.bn.affine)
    track_running_stats = property(lambda self: self.bn.track_running_stats)
    weight = property(lambda self: self.bn.weight)
    bias = property(lambda self: self.bn.bias)
    running_mean = property(lambda self: self.bn.running_mean)
    running_var = property(lambda self: self.bn.running_var)
    num_batches_tracked = property(lambda self: self.bn.num_batches_tracked)

    @property
    def eps(self) -> float:
        return self.bn.eps

    @eps.setter
    def eps(self, value: float) -> None:
        self.bn.eps = value

    @property
    def momentum(self) -> float | None:
        return self.bn.momentum

    @momentum.setter
    def momentum(self, value: float | None) -> None:
        self.bn.momentum = value

    def forward(self, input: SparseTensor) -> SparseTensor:
        if self.sync and self.training and _world_size(self.process_group) > 1:
            return input.replace_feature(sync_batch_norm(input.F, self.bn, self.process_group))
        return fapply(input, self.bn)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Keys without `bn.` (ours, torchsparse's) go to the inner module; torch filters each child's
        # entries out of this same dict afterwards, so renaming here is enough.
        for name in _STATE_NAMES:
            if prefix + name in state_dict:
                state_dict[f"{prefix}bn.{name}"] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, sparse"


def _flatten_keys(module: BatchNorm, state_dict: dict[str, Any], prefix: str, metadata: Mapping) -> None:
    """State-dict post-hook: the inner module's entries under the wrapper's own prefix."""
    for name in _STATE_NAMES:
        key = f"{prefix}bn.{name}"
        if key in state_dict:
            state_dict[prefix + name] = state_dict.pop(key)


def _world_size(group: Any) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group or dist.group.WORLD)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of each input is the sum of every process's gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


def sync_batch_norm(x: Tensor, bn: nn.modules.batchnorm._BatchNorm, group: Any = None) -> Tensor:
    """Batch normalisation of ``(N, C)`` rows, in training mode, over the rows of all processes of
    ``group`` (default: all), with ``bn``'s parameters; its running statistics are updated as
    torch's SyncBatchNorm updates them, and gradients are those of SyncBatchNorm.

    Mean first, then the (biased) variance about it, one all-reduce each: as exact as one process
    holding every row. Every process of the group must call it (a process may have no rows).
    """
    group = group or dist.group.WORLD
    channels = x.shape[1]
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    local = torch.cat([xf.sum(0), xf.new_tensor([float(xf.shape[0])])])
    total = _AllReduceSum.apply(local, group)
    count = total[channels].detach()
    if float(count) <= 1:
        raise ValueError(
            f"sync_batch_norm: expected more than 1 value per channel over all processes, got {int(count)}"
        )
    mean = total[:channels] / count
    centred = xf - mean
    var = _AllReduceSum.apply((centred * centred).sum(0), group) / count
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - factor).add_(mean.detach().to(bn.running_mean), alpha=factor)
            unbiased = var.detach() * count / (count - 1)
            bn.running_var.mul_(1 - factor).add_(unbiased.to(bn.running_var), alpha=factor)
    out = centred * torch.rsqrt(var + bn.eps)
    if bn.affine:
        out = out * bn.weight + bn.bias
    return out.to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """`torch.nn.LayerNorm` over the channels of each site."""

    def forward(self, input: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return fapply(input, super().forward)


class InstanceNorm(nn.Module):
    """Per batch item and channel: zero mean, unit variance over that item's sites, then affine."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm1d(num_features, eps=eps, affine=affine)

    def forward(self, input: SparseTensor) -> SparseTensor:
        batch = input.coords[:, 0].long()
        mean = global_avg_pool(input)[batch]
        var = global_avg_pool(input.replace_feature((input.feats - mean) ** 2))[batch]
        out = (input.feats - mean) / (var + self.norm.eps).sqrt()
        if self.norm.affine:
            out = out * self.norm.weight + self.norm.bias
        return input.replace_feature(out)
