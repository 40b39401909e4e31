"""Batching of per-sample sparse tensors, as torchsparse 2.1's `sparse_collate` / `sparse_collate_fn`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from unsup3d.sparse.tensor import SparseTensor

__all__ = ["sparse_collate", "sparse_collate_fn"]


def sparse_collate(inputs: Sequence[SparseTensor]) -> SparseTensor:
    """One batch from per-sample tensors with `(N_k, 3)` coordinates: sample `k` gets batch index `k`.

    As torchsparse 2.1: the batch column goes first (``(k, x, y, z)``), features are concatenated in
    input order, and all inputs must share one stride.
    """
    if len(inputs) == 0:
        raise ValueError("sparse_collate: no tensors given")
    stride = inputs[0].stride
    coords, feats = [], []
    for k, x in enumerate(inputs):
        c, f = x.coords, x.feats
        if isinstance(c, np.ndarray):
            c = torch.from_numpy(c)
        if isinstance(f, np.ndarray):
            f = torch.from_numpy(f)
        if c.dim() != 2 or c.shape[1] != 3:
            raise ValueError(
                f"sparse_collate: input {k} has coords of shape {tuple(c.shape)}; collate takes the "
                f"unbatched (N, 3) coordinates of one sample"
            )
        if x.stride != stride:
            raise ValueError(f"sparse_collate: input {k} has stride {x.stride}, input 0 has {stride}")
        batch = torch.full((c.shape[0], 1), k, dtype=torch.int32, device=c.device)
        coords.append(torch.cat([batch, c.to(torch.int32)], dim=1))
        feats.append(f)
    return SparseTensor(torch.cat(feats, dim=0), torch.cat(coords, dim=0), stride=stride)


def sparse_collate_fn(inputs: Sequence[Any]) -> Any:
    """DataLoader `collate_fn`: dicts recurse, sparse tensors collate, arrays and tensors stack.

    As torchsparse 2.1: a key whose values are `SparseTensor` goes through `sparse_collate`, numpy arrays
    and tensors are stacked on a new first dimension, anything else becomes a list.
    """
    if len(inputs) == 0 or not isinstance(inputs[0], dict):
        return inputs
    output: dict[str, Any] = {}
    for name in inputs[0]:
        values = [sample[name] for sample in inputs]
        first = values[0]
        if isinstance(first, dict):
            output[name] = sparse_collate_fn(values)
        elif isinstance(first, np.ndarray):
            output[name] = torch.stack([torch.as_tensor(v) for v in values], dim=0)
        elif isinstance(first, torch.Tensor):
            output[name] = torch.stack(values, dim=0)
        elif isinstance(first, SparseTensor):
            output[name] = sparse_collate(values)
        else:
            output[name] = values
    return output
