"""K-means speed and quality: unsup3d.clustering.kmeans (faiss, every point used) against scikit-learn.

Default: 1M x 128 float32 rows drawn around 20 Gaussian centres, 20 clusters, 80 Lloyd iterations and
one initialisation on both sides (scikit-learn with tol=0 so it runs every iteration too). Prints and
appends one JSON row to benchmarks/results/kmeans.jsonl. Quick run: --n 100000 --niter 20.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from unsup3d.clustering import faiss_has_gpu, kmeans  # noqa: E402


def make_data(n: int, d: int, centres: int, spread: float, seed: int) -> np.ndarray:
    """Rows ``centre + N(0, 1)`` with centres ``N(0, spread^2)``: overlap grows as spread shrinks."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=spread, size=(centres, d)).astype(np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x += means[rng.integers(0, centres, n)]
    return x


def run_ours(x: torch.Tensor, k: int, niter: int, seed: int, init: str) -> dict:
    t0 = time.perf_counter()
    result = kmeans(x, k, niter=niter, nredo=1, seed=seed, init=init)
    if x.is_cuda:
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "inertia": result.inertia, "init": init}


def run_sklearn(x: np.ndarray, k: int, niter: int, seed: int) -> dict:
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    model = KMeans(k, init="k-means++", n_init=1, max_iter=niter, tol=0.0, random_state=seed).fit(x)
    return {
        "seconds": time.perf_counter() - t0,
        "inertia": float(model.inertia_),
        "init": "k-means++",
        "iterations": int(model.n_iter_),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="rows")
    parser.add_argument("--d", type=int, default=128, help="columns")
    parser.add_argument("--k", type=int, default=20, help="clusters (and Gaussian centres)")
    parser.add_argument("--niter", type=int, default=80, help="Lloyd iterations on both sides")
    parser.add_argument("--spread", type=float, default=0.5, help="std of the centres; noise std is 1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-sklearn", action="store_true", help="time faiss only")
    args = parser.parse_args()

    x_np = make_data(args.n, args.d, args.k, args.spread, args.seed)
    x = torch.from_numpy(x_np).to(args.device)
    row = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "niter": args.niter,
        "spread": args.spread,
        "device": args.device,
        "faiss_gpu": bool(x.is_cuda and faiss_has_gpu()),
        "faiss": run_ours(x, args.k, args.niter, args.seed, "k-means++"),
        "faiss_random_init": run_ours(x, args.k, args.niter, args.seed, "random"),
    }
    if not args.skip_sklearn:
        row["sklearn"] = run_sklearn(x_np, args.k, args.niter, args.seed)
        row["speedup_vs_sklearn"] = row["sklearn"]["seconds"] / row["faiss"]["seconds"]
        row["inertia_ratio_vs_sklearn"] = row["faiss"]["inertia"] / row["sklearn"]["inertia"]
    # Shared machines: the 1-minute load average says how far the timings can be trusted.
    row["load_average_1min"] = os.getloadavg()[0]
    write_row("kmeans", row)


if __name__ == "__main__":
    main()
