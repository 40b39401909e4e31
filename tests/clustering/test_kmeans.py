"""kmeans against scikit-learn, a numpy spherical K-means, and itself on 1 and 2 processes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from tests._dist import run_distributed
from unsup3d.clustering import KMeansResult, kmeans
from unsup3d.clustering.lloyd import (
    assign,
    best_per_column,
    block_rows,
    block_runner,
    cpu_workers,
    lloyd,
    update,
)


def _blobs(std: float, n: int = 3000, centers: int = 6, dim: int = 8, seed: int = 0) -> torch.Tensor:
    x, _ = make_blobs(n, dim, centers=centers, cluster_std=std, random_state=seed)
    return torch.from_numpy(x.astype(np.float32))


def _directions(n: int = 3000, k: int = 5, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Points around k directions with norms spread over two decades: only their angles cluster."""
    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(k, dim))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    x = axes[rng.integers(0, k, n)] + 0.35 * rng.normal(size=(n, dim))
    x *= rng.uniform(0.1, 10.0, (n, 1)) / np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x.astype(np.float32))


def _numpy_objective(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, float]:
    d2 = ((x[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(-1)
    return d2.argmin(1), float(d2.min(1).sum())


def _spherical_reference(x: np.ndarray, k: int, niter: int = 50, restarts: int = 10) -> float:
    """Plain spherical K-means (Dhillon & Modha 2001): best sum(1 - cos) over random restarts."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    best = np.inf
    for seed in range(restarts):
        rng = np.random.default_rng(seed)
        c = xn[rng.choice(len(xn), k, replace=False)]
        for _ in range(niter):
            a = (xn @ c.T).argmax(1)
            for j in range(k):
                if (a == j).any():
                    m = xn[a == j].sum(0)
                    c[j] = m / np.linalg.norm(m)
        best = min(best, float((1.0 - (xn @ c.T).max(1)).sum()))
    return best


@pytest.mark.parametrize("std", [1.0, 4.0], ids=["separated", "overlapping"])
def test_inertia_within_two_percent_of_sklearn(std):
    x = _blobs(std)
    for seed in range(3):
        ours = kmeans(x, 6, niter=50, nredo=3, seed=seed)
        theirs = KMeans(6, n_init=3, max_iter=50, random_state=seed).fit(x.numpy()).inertia_
        assert ours.inertia <= 1.02 * theirs, (seed, ours.inertia, theirs)


def test_result_is_consistent_with_its_centroids():
    x = _blobs(4.0, n=2000)
    result = kmeans(x, 5, niter=20)
    assert isinstance(result, KMeansResult)
    centroids, assignments, inertia = result
    assert centroids.shape == (5, 8) and centroids.dtype == torch.float32
    assert assignments.shape == (2000,) and assignments.dtype == torch.int64
    assert isinstance(inertia, float)
    nearest, objective = _numpy_objective(x.numpy(), centroids.numpy())
    assert (assignments.numpy() == nearest).mean() > 0.999  # float32 ties may go either way
    assert inertia == pytest.approx(objective, rel=1e-5)


def test_spherical_matches_numpy_reference():
    x = _directions()
    result = kmeans(x, 5, spherical=True, niter=50, nredo=3)
    np.testing.assert_allclose(result.centroids.norm(dim=1).numpy(), 1.0, atol=1e-5)
    xn = x.numpy() / np.linalg.norm(x.numpy(), axis=1, keepdims=True)
    cos = xn @ result.centroids.numpy().T
    assert (result.assignments.numpy() == cos.argmax(1)).mean() > 0.999
    assert result.inertia == pytest.approx(float((1.0 - cos.max(1)).sum()), rel=1e-5)
    assert result.inertia <= 1.02 * _spherical_reference(x.numpy(), 5)
    # Euclidean K-means on the raw rows groups by norm as much as by angle: a far worse cosine fit.
    plain = kmeans(x, 5, niter=50, nredo=3).assignments.numpy()
    plain_centroids = np.stack([xn[plain == j].sum(0) for j in range(5)])
    plain_centroids /= np.linalg.norm(plain_centroids, axis=1, keepdims=True)
    assert (1.0 - (xn * plain_centroids[plain]).sum(1)).sum() > 1.2 * result.inertia


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_same_seed_same_result(init):
    x = _blobs(4.0, n=2000)
    a, b = (
        kmeans(x, 6, niter=20, nredo=2, seed=5, init=init),
        kmeans(x, 6, niter=20, nredo=2, seed=5, init=init),
    )
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.assignments, b.assignments)
    assert a.inertia == b.inertia
    # Converged runs from two seeds may well agree; after one iteration their starts still show.
    c, d = (kmeans(x, 6, niter=1, seed=seed, init=init) for seed in (5, 6))
    assert not torch.equal(c.centroids, d.centroids)


def test_every_point_is_used():
    # faiss alone trains on 256 * k rows sampled from the input: with k = 1 its centroid is the mean of
    # a 256-row sample, some 0.06 from the mean here. Ours must be the mean of all 50,000 rows.
    x = torch.randn(50_000, 4, generator=torch.Generator().manual_seed(0))
    result = kmeans(x, 1, niter=2)
    torch.testing.assert_close(result.centroids[0], x.mean(0), atol=1e-5, rtol=0)
    assert result.inertia == pytest.approx(float(((x.double() - x.double().mean(0)) ** 2).sum()), rel=1e-6)

    faiss = pytest.importorskip("faiss")  # the comparison only: unsup3d's K-means does not use faiss
    stock = faiss.Kmeans(4, 1, niter=2, seed=0)
    stock.train(x.numpy())
    assert np.abs(stock.centroids[0] - x.mean(0).numpy()).max() > 1e-3  # the test can tell

    # With k > 1, every centroid is the mean of all the points it was assigned (Lloyd has converged).
    blobs = _blobs(1.0, n=40_000, centers=4, dim=4)
    result = kmeans(blobs, 4, niter=30)
    for j in range(4):
        torch.testing.assert_close(
            result.centroids[j], blobs[result.assignments == j].mean(0), atol=1e-4, rtol=0
        )


def test_random_init_matches_sklearn_on_overlapping_data():
    x = _blobs(4.0)
    ours = kmeans(x, 6, niter=50, nredo=5, init="random")
    theirs = KMeans(6, n_init=5, max_iter=50, random_state=0).fit(x.numpy()).inertia_
    assert ours.inertia <= 1.02 * theirs


@pytest.mark.parametrize(
    "x,k,kwargs,error,match",
    [
        (torch.zeros(10), 2, {}, ValueError, "2-D"),
        (torch.zeros(10, 3, dtype=torch.int64), 2, {}, ValueError, "floating point"),
        (torch.tensor([[0.0, 1.0], [float("nan"), 0.0], [1.0, 1.0]]), 2, {}, ValueError, "1 rows with NaN"),
        (torch.zeros(3, 2), 4, {}, ValueError, "fewer than k=4"),
        (torch.zeros(3, 2), 0, {}, ValueError, "k must be a positive int"),
        (torch.zeros(3, 2), 2, {"init": "kmeans"}, ValueError, "init must be"),
        (np.zeros((3, 2), np.float32), 2, {}, ValueError, "torch.Tensor"),
    ],
)
def test_bad_input_is_refused(x, k, kwargs, error, match):
    with pytest.raises(error, match=match):
        kmeans(x, k, **kwargs)


@pytest.mark.gpu
def test_gpu_input_gives_gpu_output():
    x = _blobs(1.0, n=5000)  # separated: CPU and CUDA draw different starts but reach one optimum
    cpu = kmeans(x, 6, niter=30, nredo=2)
    gpu = kmeans(x.cuda(), 6, niter=30, nredo=2)
    assert gpu.centroids.is_cuda and gpu.assignments.is_cuda
    assert gpu.inertia == pytest.approx(cpu.inertia, rel=0.02)


def _cluster_my_rows(rank: int, world_size: int, x: torch.Tensor, split: int) -> dict:
    mine = x[:split] if rank == 0 else x[split:]
    out = {}
    for spherical in (False, True):
        r = kmeans(mine, 5, niter=15, nredo=2, seed=3, spherical=spherical)
        out[spherical] = (r.centroids.numpy(), r.assignments.numpy(), r.inertia)
    # Invalid rows on one rank must make every rank raise, not leave the others waiting.
    bad = mine.clone()
    if rank == 1:
        bad[0, 0] = float("nan")
    try:
        kmeans(bad, 5, niter=2)
        out["error"] = None
    except ValueError as exc:
        out["error"] = str(exc)
    local = kmeans(mine, 5, niter=15, seed=3, distributed=False)
    out["local"] = local.assignments.numpy()
    # Interleaved rows (rank r holds rows r, r + 2, ...) keyed by their row number: the one-process order.
    ordered = kmeans(x[rank::2], 5, niter=15, seed=3, spherical=True, order=torch.arange(rank, len(x), 2))
    out["ordered"] = (ordered.centroids.numpy(), ordered.assignments.numpy())
    return out


@pytest.mark.distributed
def test_two_processes_equal_one_on_the_concatenated_rows():
    x = _directions(n=1500, dim=8, seed=1)
    split = 613  # unequal row counts on the two ranks
    ranks = run_distributed(_cluster_my_rows, 2, x, split)
    for spherical in (False, True):
        single = kmeans(x, 5, niter=15, nredo=2, seed=3, spherical=spherical)
        for r in ranks:
            np.testing.assert_array_equal(r[spherical][0], single.centroids.numpy())
            assert r[spherical][2] == single.inertia
        both = np.concatenate([ranks[0][spherical][1], ranks[1][spherical][1]])
        np.testing.assert_array_equal(both, single.assignments.numpy())
    assert "NaN" in ranks[1]["error"] and "rank(s) [1]" in ranks[0]["error"]
    assert len(ranks[0]["local"]) == split and len(ranks[1]["local"]) == 1500 - split
    np.testing.assert_array_equal(
        ranks[0]["local"], kmeans(x[:split], 5, niter=15, seed=3).assignments.numpy()
    )
    single = kmeans(x, 5, niter=15, seed=3, spherical=True)
    for rank, (centroids, assignments) in enumerate(r["ordered"] for r in ranks):
        np.testing.assert_array_equal(centroids, single.centroids.numpy())
        np.testing.assert_array_equal(assignments, single.assignments.numpy()[rank::2])


def test_order_keys_make_the_result_independent_of_row_order():
    x = _directions(n=400, dim=6, seed=2)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    plain = kmeans(x, 4, niter=10, seed=1)
    shuffled = kmeans(x[perm], 4, niter=10, seed=1, order=perm)
    assert torch.equal(shuffled.centroids, plain.centroids) and shuffled.inertia == plain.inertia
    assert torch.equal(shuffled.assignments, plain.assignments[perm])  # in the caller's row order
    # without the keys, the permuted rows seed k-means++ differently
    assert not torch.equal(kmeans(x[perm], 4, niter=10, seed=1).centroids, plain.centroids)
    with pytest.raises(ValueError, match="order has 3 keys for 400 rows"):
        kmeans(x, 4, order=torch.arange(3))
    with pytest.raises(ValueError, match="order must be a 1-D integer tensor"):
        kmeans(x, 4, order=torch.zeros(400))


@pytest.mark.parametrize("spherical", [False, True])
def test_thread_count_does_not_change_the_result(spherical):
    # 30,000 rows are eight blocks: with 2 threads they go to the pool, with 1 they run in order.
    x = _directions(n=30_000, k=7, dim=16, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kmeans(x, 7, niter=25, seed=2, spherical=spherical)
        torch.set_num_threads(2)
        assert cpu_workers(4) == min(2, len(os.sched_getaffinity(0)))  # the pool path, where 2 cores
        two = kmeans(x, 7, niter=25, seed=2, spherical=spherical)
        assert torch.get_num_threads() == 2  # restored after the pool ran torch on one thread
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one.centroids, two.centroids) and torch.equal(one.assignments, two.assignments)
    assert one.inertia == two.inertia


def _numpy_lloyd(x: np.ndarray, start: np.ndarray, niter: int) -> tuple[np.ndarray, np.ndarray]:
    c = start.astype(np.float64)
    for _ in range(niter):
        a = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([x[a == j].mean(0) for j in range(len(c))])
    return c, ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)


def test_lloyd_follows_a_numpy_lloyd_from_the_same_start():
    x = _blobs(2.0, n=20_000, centers=5, dim=6)
    start = x[:5].clone()
    fit = lloyd(x, start, niter=4, spherical=False)
    c, a = _numpy_lloyd(x.numpy().astype(np.float64), start.numpy(), 4)
    assert fit.iterations == 4
    np.testing.assert_allclose(fit.centroids.numpy(), c, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(fit.assignment.labels.numpy(), a)


def test_early_stop_is_a_fixed_point():
    x = _blobs(1.0, n=10_000, centers=4, dim=5)
    fit = lloyd(x, x[:4].clone(), niter=500, spherical=False)
    assert 1 <= fit.iterations < 500
    with block_runner(len(x), block_rows(len(x), 4, x.device), x.device) as run:
        again = assign(x, fit.centroids, spherical=False, with_sums=True, run=run)
    assert torch.equal(again.labels, fit.assignment.labels)
    assert torch.equal(update(x, fit.centroids, again, spherical=False), fit.centroids)


def test_an_empty_cluster_takes_the_farthest_row():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [10.0, 10.0], [11.0, 10.0]])
    start = torch.tensor([[0.0, 0.0], [10.0, 10.0], [100.0, 100.0]])  # the third one wins no row
    with block_runner(len(x), 8192, x.device) as run:
        a = assign(x, start, spherical=False, with_sums=True, run=run)
    assert a.counts.tolist() == [3, 2, 0]
    moved = update(x, start, a, spherical=False)
    torch.testing.assert_close(moved[2], x[2])  # [0, 3] is 3 from its centroid, every other row <= 1
    torch.testing.assert_close(moved[0], (x[0] + x[1]) / 2)  # and it left its old cluster
    torch.testing.assert_close(moved[1], (x[3] + x[4]) / 2)


@pytest.mark.parametrize("largest", [False, True])
def test_best_per_column_equals_torch_with_ties(largest):
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (7, 500), generator=g).float()  # many ties in every column
    expected = scores.max(dim=0) if largest else scores.min(dim=0)
    values, rows = best_per_column(scores, largest=largest)
    assert torch.equal(values, expected.values)
    first = torch.stack([torch.nonzero(col == v)[0, 0] for col, v in zip(scores.T, values)])
    assert torch.equal(rows, first)  # the first of tied rows, as torch.argmin documents
