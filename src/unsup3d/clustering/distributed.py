"""Collectives for dataset-wide work under DDP: rows of unequal count gathered to one rank and sent back.

``torch.distributed`` gathers and scatters only tensors of one shape, so every helper here pads each
rank's rows to the largest count and trims after; the row counts travel first.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def comm_device() -> torch.device:
    """The device collective tensors must live on: CUDA for a pure NCCL group, else CPU (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_ints(values: list[int]) -> Tensor:
    """Every rank's ``values`` (same length on all ranks), as an int64 CPU tensor ``(world_size, len)``."""
    device = comm_device()
    mine = torch.tensor(values, dtype=torch.int64, device=device)
    out = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return torch.stack(out).cpu()


def gather_rows(x: Tensor, sizes: list[int], dst: int = 0) -> Tensor | None:
    """Concatenate every rank's rows of ``x`` in rank order on ``dst``; other ranks get None.

    ``sizes[r]`` is rank r's row count (from :func:`all_gather_ints`); the trailing shape and dtype must
    agree across ranks. The result is on :func:`comm_device`.
    """
    device = comm_device()
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]), device=device)
    padded[: x.shape[0]] = x.to(device)
    if dist.get_rank() == dst:
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.gather(padded, buffers, dst=dst)
        return torch.cat([buf[:n] for buf, n in zip(buffers, sizes)])
    dist.gather(padded, None, dst=dst)
    return None


def scatter_rows(full: Tensor | None, sizes: list[int], like: Tensor, src: int = 0) -> Tensor:
    """Inverse of :func:`gather_rows`: rank r receives rows ``sum(sizes[:r]) : sum(sizes[:r + 1])`` of
    ``full`` (given on ``src`` only). ``like`` supplies dtype and trailing shape on every rank."""
    device = comm_device()
    longest = max(sizes)
    out = torch.empty((longest, *like.shape[1:]), dtype=like.dtype, device=device)
    if dist.get_rank() == src:
        assert full is not None, "scatter_rows: the source rank must pass the full tensor"
        chunks = []
        for part in torch.split(full.to(device), sizes):
            padded = torch.zeros_like(out)
            padded[: part.shape[0]] = part
            chunks.append(padded)
        dist.scatter(out, chunks, src=src)
    else:
        dist.scatter(out, None, src=src)
    return out[: sizes[dist.get_rank()]]


def broadcast(t: Tensor, src: int = 0) -> Tensor:
    """``t`` from ``src`` on every rank (each rank passes a tensor of the same shape and dtype)."""
    buf = t.to(comm_device()).contiguous()
    dist.broadcast(buf, src=src)
    return buf
