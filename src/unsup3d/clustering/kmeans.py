"""Dataset-wide K-means (PointDC Eq. 8): every point used, CUDA where the input is, DDP-aware.

PointDC clusters the L2-normalised super-voxel features of the whole training set with faiss (80
iterations, inner-product index, K = number of classes); ``kmeans(x, k, spherical=True)`` is that step.
The Lloyd iterations are torch's (:mod:`unsup3d.clustering.lloyd`), not faiss's:

- faiss trains on a random subset of ``max_points_per_centroid * k`` rows (256 * k by default)
  without a word; here every row shapes the centroids.
- faiss's OpenMP threads collapse on a shared CPU: with one of two cores busy, 200k x 64 rows into 20
  clusters ran 3.2x slower per iteration than scikit-learn, up to 15x to convergence. Blocks of rows
  handed to a thread pool keep pace with scikit-learn there (``benchmarks/kmeans.py --busy``).
- on CUDA, torch needs no GPU build of faiss.

faiss 1.15, for the record, does not run all ``niter`` iterations either: it stops as soon as an
iteration's objective equals the previous one's (``early_stop_threshold`` 0). Here an iteration whose
assignment equals the previous one ends the run, which changes no result: the centroids are then a
fixed point.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from unsup3d.clustering import distributed as ddp
from unsup3d.clustering.lloyd import BlockRun, block_rows, block_runner, lloyd

log = logging.getLogger(__name__)


class KMeansResult(NamedTuple):
    """What :func:`kmeans` returns.

    Attributes:
        centroids: float32 ``(k, d)`` on the input's device; unit rows in spherical mode.
        assignments: int64 ``(n,)`` on the input's device, the nearest centroid of each row (largest
            inner product in spherical mode). Under DDP, only the calling rank's rows.
        inertia: the objective at the returned centroids and assignments, over all points (all ranks):
            ``sum_i ||x_i - c_{a_i}||^2``, or in spherical mode ``sum_i (1 - cos(x_i, c_{a_i}))``.
    """

    centroids: Tensor
    assignments: Tensor
    inertia: float


def kmeans(
    x: Tensor,
    k: int,
    *,
    niter: int = 80,
    spherical: bool = False,
    nredo: int = 1,
    seed: int = 0,
    init: str = "k-means++",
    distributed: bool | None = None,
    order: Tensor | None = None,
) -> KMeansResult:
    """Lloyd's K-means of the rows of ``x`` (PointDC Eq. 8 when ``spherical=True``).

    Args:
        x: ``(n, d)`` floating-point tensor, finite; clustered in float32.
        k: number of clusters, ``1 <= k <= n`` (n over all ranks under DDP).
        niter: at most this many Lloyd iterations (assign every row to its nearest centroid, move each
            centroid to the mean of its rows). The run stops earlier once an iteration assigns every
            row as the one before and leaves no cluster empty: the centroids are then a fixed point
            and further iterations would change nothing. A cluster left empty takes the row farthest
            from its centroid (scikit-learn's rule).
        spherical: cosine K-means. Rows are L2-normalised (a zero row stays zero), centroids are kept
            on the unit sphere, and points go to the centroid of largest inner product.
        nredo: restarts from different initialisations; the one of lowest inertia is kept.
        seed: seed of the initialisation (restart r uses ``seed + r``); the same seed, input and
            device give the same result bit for bit, on the CPU with any number of threads.
        init: ``"k-means++"`` (default; greedy D^2 seeding, scikit-learn's variant) or ``"random"``:
            k distinct rows drawn at random, faiss's initialisation, which is what PointDC's release
            ran. Random starts often leave two centroids in one well-separated group and none in
            another; k-means++ rarely does.
        distributed: cluster the rows of all processes together. None (default) does so whenever
            ``torch.distributed`` is initialised with more than one process; then every rank must call
            :func:`kmeans` with the same arguments. Pass False to cluster each rank's rows on their own
            (for example from code that runs on rank 0 only).
        order: an integer key per row of ``x`` (``(n,)``). The rows are clustered sorted by key
            (stable: equal keys keep their order, across ranks their rank order). K-means++ draws rows
            by position, so keys that name the rows (a sample id per row, say) make the result
            independent of how the rows are spread over processes and batches. Assignments come
            back in ``x``'s row order either way.

    Under DDP the rows are gathered on rank 0 in rank order (row counts may differ), clustered once
    there, and the centroids and global inertia broadcast; each rank gets the assignments of its own
    rows. The result equals that of one process on the concatenated rows exactly.

    Runs on ``x``'s device. On the CPU, blocks of 4096 rows go to a pool of
    ``min(torch.get_num_threads(), usable cores)`` threads while torch runs single-threaded inside the
    call (its thread count is restored after), so a core taken by another program slows the run by
    its share of the cores, not by a whole barrier per operation.
    """
    _check_params(k, niter, nredo, seed)
    if init not in ("k-means++", "random"):
        raise ValueError(f"kmeans: init must be 'k-means++' or 'random', got {init!r}")
    if distributed is None:
        distributed = ddp.is_distributed()
    if not distributed:
        problem = _data_problem(x) or _order_problem(order, x)
        if problem:
            raise ValueError(problem)
        if x.shape[0] < k:
            raise ValueError(f"kmeans: x has {x.shape[0]} rows, fewer than k={k} clusters")
        perm = None if order is None else torch.argsort(order.cpu(), stable=True).to(x.device)
        rows = x if perm is None else x[perm]
        result = _cluster(rows, k, niter=niter, spherical=spherical, nredo=nredo, seed=seed, init=init)
        return result if perm is None else result._replace(assignments=_unpermute(result.assignments, perm))
    return _cluster_distributed(
        x, k, niter=niter, spherical=spherical, nredo=nredo, seed=seed, init=init, order=order
    )


def _check_params(k: int, niter: int, nredo: int, seed: int) -> None:
    for name, value in (("k", k), ("niter", niter), ("nredo", nredo)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"kmeans: {name} must be a positive int, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ValueError(f"kmeans: seed must be an int in [0, 2**31), got {seed!r}")


def _data_problem(x: Tensor) -> str | None:
    """Why ``x`` cannot be clustered, or None. Returned, not raised, so DDP ranks can agree first."""
    if not isinstance(x, Tensor):
        return f"kmeans: x must be a torch.Tensor, got {type(x).__name__}"
    if x.ndim != 2:
        return f"kmeans: x must be 2-D (n, d), got shape {tuple(x.shape)}"
    if not x.is_floating_point():
        return f"kmeans: x must be floating point, got {x.dtype}"
    if x.shape[1] == 0:
        return "kmeans: x has 0 columns"
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).any(dim=1).sum())
        return f"kmeans: x has {bad} rows with NaN or inf"
    return None


def _order_problem(order: Tensor | None, x: Tensor) -> str | None:
    """Why ``order`` cannot order the rows of ``x`` (a 2-D tensor), or None."""
    if order is None:
        return None
    if not isinstance(order, Tensor) or order.ndim != 1 or order.is_floating_point() or order.is_complex():
        got = getattr(order, "dtype", type(order).__name__)
        return f"kmeans: order must be a 1-D integer tensor, got {got}"
    if len(order) != x.shape[0]:
        return f"kmeans: order has {len(order)} keys for {x.shape[0]} rows"
    return None


def _unpermute(assignments: Tensor, perm: Tensor) -> Tensor:
    """Assignments of the rows ``perm`` (sorted order) back in the original row order."""
    out = torch.empty_like(assignments)
    out[perm] = assignments
    return out


def _inertia(x: Tensor, centroids: Tensor, assignments: Tensor, spherical: bool, run: BlockRun) -> float:
    """The K-means objective at (centroids, assignments): float32 terms, float64 row sums and total."""

    def block_total(start: int, stop: int) -> Tensor:
        xb, cb = x[start:stop], centroids[assignments[start:stop]]
        if spherical:
            return (1.0 - (xb * cb).sum(dim=1, dtype=torch.float64)).sum()
        return ((xb - cb) ** 2).sum(dim=1, dtype=torch.float64).sum()

    return float(sum(run(block_total), torch.zeros((), dtype=torch.float64, device=x.device)))


def _kmeans_plus_plus(x: Tensor, k: int, seed: int, run: BlockRun) -> Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's variant): each new centre
    is the best, by the resulting objective, of ``2 + log k`` rows drawn with probability proportional
    to their squared distance to the nearest centre so far. ``x`` float32, returns ``(k, d)``."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    sq_norms = (x * x).sum(dim=1)

    def nearest_with(idx: Tensor, nearest: Tensor | None) -> Tensor:
        """``(n, len(idx))``: each row's squared distance to its nearest centre once ``idx`` joins."""
        centres, centre_norms = x[idx], sq_norms[idx][None]

        def block(start: int, stop: int) -> Tensor:
            # ||x - c||^2 by expansion: one (rows, d) x (d, m) product, no (rows, m, d) temporary.
            xb = x[start:stop]
            d2 = (sq_norms[start:stop, None] - 2.0 * (xb @ centres.T) + centre_norms).clamp_min_(0.0)
            return d2 if nearest is None else torch.minimum(nearest[start:stop, None], d2)

        return torch.cat(run(block))

    chosen = torch.randint(n, (1,), generator=generator, device=x.device)
    nearest = nearest_with(chosen, None)[:, 0]
    for _ in range(1, k):
        # Inverse-CDF draws (torch.multinomial caps the category count at 2**24).
        cdf = torch.cumsum(nearest.to(torch.float64), dim=0)
        u = torch.rand((trials,), dtype=torch.float64, generator=generator, device=x.device)
        if float(cdf[-1]) > 0.0:
            candidates = torch.searchsorted(cdf, u * cdf[-1]).clamp_max_(n - 1)
        else:  # fewer distinct rows than k: any row will do, Lloyd's empty-cluster rule sorts it out
            candidates = (u * n).long().clamp_max_(n - 1)
        after = nearest_with(candidates, nearest)
        best = int(after.sum(dim=0, dtype=torch.float64).argmin())
        nearest = after[:, best]
        chosen = torch.cat([chosen, candidates[best : best + 1]])
    return x[chosen]


def _random_rows(x: Tensor, k: int, seed: int) -> Tensor:
    """k distinct rows of ``x`` drawn uniformly: the start PointDC's release used (faiss's default)."""
    generator = torch.Generator().manual_seed(seed)
    return x[torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)]


def _cluster(
    x: Tensor, k: int, *, niter: int, spherical: bool, nredo: int, seed: int, init: str
) -> KMeansResult:
    """K-means of one process's rows (already validated)."""
    xf = x.detach().to(torch.float32).contiguous()
    if spherical:
        xf = F.normalize(xf, dim=1)

    n = xf.shape[0]
    best: KMeansResult | None = None
    with block_runner(n, block_rows(n, k, xf.device), xf.device) as run:
        for redo in range(nredo):
            restart_seed = (seed + redo) % 2**31
            if init == "random":
                start = _random_rows(xf, k, restart_seed)
            else:
                start = _kmeans_plus_plus(xf, k, restart_seed, run)
            fit = lloyd(xf, start, niter=niter, spherical=spherical, run=run)
            inertia = _inertia(xf, fit.centroids, fit.assignment.labels, spherical, run)
            log.debug(
                "kmeans: restart %d ran %d Lloyd iterations, inertia %.6g", redo, fit.iterations, inertia
            )
            if best is None or inertia < best.inertia:
                best = KMeansResult(fit.centroids, fit.assignment.labels, inertia)
    assert best is not None
    return best


def _cluster_distributed(
    x: Tensor,
    k: int,
    *,
    niter: int,
    spherical: bool,
    nredo: int,
    seed: int,
    init: str,
    order: Tensor | None,
) -> KMeansResult:
    """Gather all ranks' rows on rank 0, cluster once, send back centroids, inertia and assignments."""
    problem = _data_problem(x)
    ok_shape = problem is None or (isinstance(x, Tensor) and x.ndim == 2)
    if ok_shape:
        problem = problem or _order_problem(order, x)
    n_local = x.shape[0] if ok_shape else 0
    d_local = x.shape[1] if ok_shape else -1
    # One collective tells every rank every rank's row count, width, validity and whether it orders its
    # rows, so all raise together.
    table = ddp.all_gather_ints([n_local, d_local, int(problem is not None), int(order is not None)])
    sizes = table[:, 0].tolist()
    if problem is not None:
        raise ValueError(f"{problem} (rank {dist.get_rank()})")
    bad_ranks = torch.nonzero(table[:, 2]).flatten().tolist()
    if bad_ranks:
        raise ValueError(f"kmeans: invalid input on rank(s) {bad_ranks}; see the error raised there")
    widths = sorted(set(table[:, 1].tolist()))
    if len(widths) > 1:
        raise ValueError(f"kmeans: ranks disagree on the feature dimension: {widths}")
    if len(set(table[:, 3].tolist())) > 1:
        raise ValueError("kmeans: some ranks pass `order` and others do not")
    if sum(sizes) < k:
        raise ValueError(f"kmeans: all ranks together have {sum(sizes)} rows, fewer than k={k} clusters")

    d = widths[0]
    rank = dist.get_rank()
    full = ddp.gather_rows(x.detach().to(torch.float32), sizes)
    keys = None if order is None else ddp.gather_rows(order.detach().long().view(-1, 1), sizes)
    status = torch.zeros(1, dtype=torch.int64)
    centroids = torch.zeros((k, d), dtype=torch.float32)
    inertia = torch.zeros(1, dtype=torch.float64)
    all_assignments = None
    error: Exception | None = None
    if rank == 0:
        try:
            perm = None if keys is None else torch.argsort(keys[:, 0].cpu(), stable=True)
            rows = full if perm is None else full[perm.to(full.device)]
            # Cluster on the caller's device, so that a CUDA input is clustered on rank 0's GPU.
            result = _cluster(
                rows.to(x.device), k, niter=niter, spherical=spherical, nredo=nredo, seed=seed, init=init
            )
            centroids = result.centroids
            inertia = torch.tensor([result.inertia], dtype=torch.float64)
            all_assignments = result.assignments
            if perm is not None:
                all_assignments = _unpermute(all_assignments, perm.to(all_assignments.device))
        except Exception as exc:  # re-raised below, once the other ranks know not to wait
            error = exc
            status[0] = 1
    if int(ddp.broadcast(status)[0]) != 0:
        if error is not None:
            raise error
        raise RuntimeError("kmeans: clustering failed on rank 0; see the error raised there")
    centroids = ddp.broadcast(centroids).to(x.device)
    inertia_value = float(ddp.broadcast(inertia)[0])
    like = torch.empty((0,), dtype=torch.int64)
    assignments = ddp.scatter_rows(all_assignments, sizes, like).to(x.device)
    return KMeansResult(centroids, assignments, inertia_value)
