"""Lloyd's iterations in blocks of rows: the same numbers on 1 or N threads, no collapse on a busy CPU.

Every pass over the rows (assignment, and the sums for the centroid update) works on fixed blocks of
rows. On the CPU, a pool of Python threads takes the blocks one at a time while torch itself runs on
one thread: a thread that shares its core with another program simply does fewer blocks. A thread
team that splits every operation evenly (OpenMP, as in faiss or torch's own intra-op parallelism)
waits for its slowest member at each of the many barriers of an iteration instead; with one of two
cores busy, faiss's K-means ran 3-15x slower than scikit-learn's. The per-block results are combined
in block order, so the result does not depend on the number of threads. On CUDA the blocks are large
and run one after the other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

# Rows per block on the CPU: a 4096 x 64 float32 block (1 MB) is still in cache when its rows are
# summed after the distances; smaller blocks pay more per-operation overhead than they save.
CPU_BLOCK_ROWS = 4096
# On CUDA, blocks hold up to this many scores (k x rows, float32: 64 MB).
_CUDA_BLOCK_SCORES = 1 << 24

T = TypeVar("T")
# What :func:`block_runner` yields: ``run(fn)`` is ``[fn(start, stop) for each block]``, in block order.
BlockRun = Callable[[Callable[[int, int], T]], list[T]]


class Assignment(NamedTuple):
    """The nearest centroid of every row and, when asked for, the per-cluster sums of the rows.

    Attributes:
        labels: int64 ``(n,)``, the centroid of least squared distance (largest inner product in
            spherical mode); ties go to the lowest index.
        scores: float32 ``(n,)``, ``||c||^2 - 2 <x, c>`` at that centroid (``||x - c||^2`` without the
            ``||x||^2`` term), or in spherical mode the inner product.
        sums: float64 ``(k, d)``, the sum of the rows of each cluster (None when not asked for).
        counts: int64 ``(k,)``, rows per cluster (None when not asked for).
    """

    labels: Tensor
    scores: Tensor
    sums: Tensor | None
    counts: Tensor | None


class LloydResult(NamedTuple):
    """Centroids after Lloyd's iterations, the assignment to them, and how many updates were made."""

    centroids: Tensor
    assignment: Assignment
    iterations: int


def block_rows(n: int, k: int, device: torch.device) -> int:
    """Rows per block: fixed on the CPU (so results never depend on the thread count), larger on CUDA."""
    if device.type == "cuda":
        return max(1, min(n, _CUDA_BLOCK_SCORES // k))
    return CPU_BLOCK_ROWS


def cpu_workers(n_blocks: int) -> int:
    """Threads for a pass over ``n_blocks`` CPU blocks: torch's thread count, usable cores, or blocks."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(torch.get_num_threads(), cores, n_blocks))


@contextmanager
def block_runner(n: int, block: int, device: torch.device) -> Iterator[BlockRun]:
    """Yield ``run(fn)``, which returns ``[fn(start, stop) for each block]`` in block order.

    On the CPU with more than one worker, the blocks go to a thread pool and torch runs single-threaded
    inside (its thread count is restored on exit); otherwise they run one after the other.
    """
    spans = [(start, min(start + block, n)) for start in range(0, n, block)]
    workers = cpu_workers(len(spans)) if device.type == "cpu" else 1
    if workers == 1:
        yield lambda fn: [fn(start, stop) for start, stop in spans]
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="unsup3d-kmeans") as pool:
            yield lambda fn: list(pool.map(lambda span: fn(*span), spans))
    finally:
        torch.set_num_threads(threads)


def best_per_column(scores: Tensor, *, largest: bool = False) -> tuple[Tensor, Tensor]:
    """``scores.min(dim=0)`` (or ``max``) of a ``(k, rows)`` tensor: values and the first row index.

    The same numbers as torch's, about twice as fast on the CPU: torch's reduction with indices over
    the first dimension runs element by element, while ``amin``, an equality test and an integer
    ``amax`` (which picks the first of tied rows) are vectorised.
    """
    k = scores.shape[0]
    best = scores.amax(dim=0) if largest else scores.amin(dim=0)
    # Row j scores k - j where it holds the best value, 0 elsewhere: the largest is the first such row.
    rank = torch.arange(k, 0, -1, dtype=torch.int32, device=scores.device)[:, None]
    first = (scores == best).to(torch.int32).mul_(rank).amax(dim=0)
    return best, (k - first).to(torch.int64)


def assign(
    x: Tensor,
    centroids: Tensor,
    *,
    spherical: bool,
    with_sums: bool,
    run: BlockRun,
) -> Assignment:
    """Nearest centroid of every row of ``x`` (float32, ``(n, d)``), optionally with cluster sums.

    ``run`` is what :func:`block_runner` yields for ``x``'s row count.
    """
    k, d = centroids.shape
    c_sq = (centroids * centroids).sum(dim=1)

    def one_block(start: int, stop: int) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        xb = x[start:stop]
        if spherical:
            scores, labels = best_per_column((centroids @ xb.T), largest=True)
        else:  # ||c||^2 - 2 <x, c>: one (k, d) x (d, rows) product, then the least over k
            scores, labels = best_per_column(torch.addmm(c_sq[:, None], centroids, xb.T, alpha=-2.0))
        if not with_sums:
            return labels, scores, None, None
        if x.is_cuda:  # a one-hot product: index_add_ on CUDA adds in no fixed order
            one_hot = torch.zeros((k, stop - start), dtype=x.dtype, device=x.device)
            one_hot[labels, torch.arange(stop - start, device=x.device)] = 1.0
            sums = one_hot @ xb
        else:  # one thread adds the rows in order
            sums = torch.zeros((k, d), dtype=x.dtype).index_add_(0, labels, xb)
        return labels, scores, sums.double(), torch.bincount(labels, minlength=k)

    parts = run(one_block)
    labels = torch.cat([p[0] for p in parts])
    scores = torch.cat([p[1] for p in parts])
    if not with_sums:
        return Assignment(labels, scores, None, None)
    sums = parts[0][2].clone()
    counts = parts[0][3].clone()
    for p in parts[1:]:  # in block order: the same float64 sums on any number of threads
        sums += p[2]
        counts += p[3]
    return Assignment(labels, scores, sums, counts)


def update(x: Tensor, centroids: Tensor, a: Assignment, *, spherical: bool) -> Tensor:
    """New centroids: the mean of each cluster's rows (unit length in spherical mode).

    A cluster left empty takes the row farthest from its centroid (least inner product in spherical
    mode) that is not taken yet, as scikit-learn does, and that row leaves its old cluster's mean. A
    cluster that is still empty after that (only possible with fewer distinct rows than clusters)
    keeps its centroid.
    """
    assert a.sums is not None and a.counts is not None
    sums, counts = a.sums.clone(), a.counts.clone()
    empty = torch.nonzero(counts == 0).flatten()
    if len(empty):
        if spherical:
            distance = -a.scores
        else:
            distance = a.scores + (x * x).sum(dim=1)
        farthest = torch.argsort(distance, descending=True, stable=True)[: len(empty)]
        for cluster, row in zip(empty.tolist(), farthest.tolist()):
            old = int(a.labels[row])
            sums[old] -= x[row].double()
            counts[old] -= 1
            sums[cluster] = x[row].double()
            counts[cluster] = 1
    means = (sums / counts.clamp_min(1)[:, None]).to(centroids.dtype)
    if spherical:
        means = F.normalize(means, dim=1)
    return torch.where((counts > 0)[:, None], means, centroids)


def lloyd(
    x: Tensor, centroids: Tensor, *, niter: int, spherical: bool, run: BlockRun | None = None
) -> LloydResult:
    """Up to ``niter`` Lloyd updates of ``centroids`` (float32 ``(k, d)``) on the rows of ``x``.

    An iteration assigns every row to its nearest centroid and moves each centroid to the mean of its
    rows. It stops early when an assignment equals the previous one and leaves no cluster empty: the
    centroids are then a fixed point, and further iterations would repeat the same numbers. The
    returned assignment is to the returned centroids. ``x`` float32 ``(n, d)``, unit rows in spherical
    mode; ``run`` a :func:`block_runner` for ``x`` (one is opened when None).
    """
    if run is None:
        n, k = x.shape[0], centroids.shape[0]
        with block_runner(n, block_rows(n, k, x.device), x.device) as run:
            return lloyd(x, centroids, niter=niter, spherical=spherical, run=run)
    previous: Tensor | None = None
    for iteration in range(niter):
        a = assign(x, centroids, spherical=spherical, with_sums=True, run=run)
        # Same labels and no empty cluster: the update would reproduce these centroids bit for bit.
        if previous is not None and torch.equal(a.labels, previous) and bool((a.counts > 0).all()):
            return LloydResult(centroids, a, iteration)
        centroids = update(x, centroids, a, spherical=spherical)
        previous = a.labels
    return LloydResult(centroids, assign(x, centroids, spherical=spherical, with_sums=False, run=run), niter)
