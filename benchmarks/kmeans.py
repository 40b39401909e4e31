"""K-means speed and quality: unsup3d.clustering.kmeans against scikit-learn (and stock faiss, --faiss).

Default: 1M x 128 float32 rows drawn around 20 Gaussian centres, 20 clusters, at most 80 Lloyd
iterations, one k-means++ initialisation per run on both sides, three seeds. Both stop once an
iteration changes no assignment (scikit-learn with tol=0 does exactly that), so the times are to
convergence.

``--busy`` starts a busy-loop process for the whole measurement (``--busy-core C`` pins it to core C),
the shared-machine case where faiss's OpenMP threads collapsed. ``--repeat R`` alternates ours and
scikit-learn R times and takes the median per seed; ``--seeds S`` times S initialisations and sums
(iterations to convergence vary with the start). The issue-14 figure is

    python benchmarks/kmeans.py --n 200000 --d 64 --busy

and the row's ``ratio_vs_sklearn`` is our time over scikit-learn's, each summed over the seeds (at
most 1.5 wanted). Appends one JSON row to benchmarks/results/kmeans.jsonl.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from unsup3d.clustering import kmeans  # noqa: E402

BUSY_LOOP = "while True:\n    pass\n"


def make_data(n: int, d: int, centres: int, spread: float, seed: int) -> np.ndarray:
    """Rows ``centre + N(0, 1)`` with centres ``N(0, spread^2)``: overlap grows as spread shrinks."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=spread, size=(centres, d)).astype(np.float32)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x += means[rng.integers(0, centres, n)]
    return x


@contextmanager
def busy_core(enabled: bool, core: int | None) -> Iterator[int | None]:
    """Run a busy-loop process (pinned to ``core`` when given) for the duration; yields its pid."""
    if not enabled:
        yield None
        return
    pin = None if core is None else (lambda: os.sched_setaffinity(0, {core}))
    proc = subprocess.Popen([sys.executable, "-c", BUSY_LOOP], preexec_fn=pin)
    try:
        time.sleep(0.5)  # let it start spinning
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


class _Iterations(logging.Handler):
    """Collects the Lloyd iteration counts that unsup3d.clustering.kmeans logs at DEBUG level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        found = re.search(r"ran (\d+) Lloyd iterations", record.getMessage())
        if found:
            self.counts.append(int(found.group(1)))


def run_ours(x: torch.Tensor, k: int, niter: int, seed: int, init: str) -> dict:
    handler = _Iterations()
    logger = logging.getLogger("unsup3d.clustering.kmeans")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        t0 = time.perf_counter()
        result = kmeans(x, k, niter=niter, nredo=1, seed=seed, init=init)
        if x.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    finally:
        logger.removeHandler(handler)
    iterations = handler.counts[0] if handler.counts else None
    return {"seconds": seconds, "inertia": result.inertia, "init": init, "iterations": iterations}


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


def run_faiss(x: np.ndarray, k: int, niter: int, seed: int) -> dict:
    """Stock faiss K-means on every row (random init; faiss stops when its objective stops changing)."""
    import faiss

    t0 = time.perf_counter()
    model = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, max_points_per_centroid=len(x))
    model.train(x)
    seconds = time.perf_counter() - t0
    _, labels = model.index.search(x, 1)
    inertia = float(((x - model.centroids[labels[:, 0]]) ** 2).sum(dtype=np.float64))
    return {"seconds": seconds, "inertia": inertia, "init": "random", "iterations": len(model.obj)}


def summed(runs: dict[int, list[dict]]) -> dict:
    """Per seed the run of median time; their times, inertias and iterations summed over the seeds."""
    per_seed = {}
    for seed, repeats in runs.items():
        ordered = sorted(repeats, key=lambda r: r["seconds"])
        per_seed[seed] = {**ordered[len(ordered) // 2], "all_seconds": [r["seconds"] for r in repeats]}
    picked = list(per_seed.values())
    iterations = [r.get("iterations") for r in picked]
    return {
        "seconds": sum(r["seconds"] for r in picked),
        "inertia": sum(r["inertia"] for r in picked),
        "iterations": None if None in iterations else sum(iterations),
        "per_seed": per_seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="rows")
    parser.add_argument("--d", type=int, default=128, help="columns")
    parser.add_argument("--k", type=int, default=20, help="clusters (and Gaussian centres)")
    parser.add_argument("--niter", type=int, default=80, help="most Lloyd iterations on both sides")
    parser.add_argument("--spread", type=float, default=0.5, help="std of the centres; noise std is 1")
    parser.add_argument("--seed", type=int, default=0, help="first seed (data and initialisation)")
    parser.add_argument("--seeds", type=int, default=3, help="initialisations timed, seed, seed + 1, ...")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeat", type=int, default=1, help="alternate ours and scikit-learn this often")
    parser.add_argument("--busy", action="store_true", help="keep one core busy with a spinning process")
    parser.add_argument("--busy-core", type=int, default=None, help="pin the busy loop to this core")
    parser.add_argument("--faiss", action="store_true", help="also time stock faiss (CPU)")
    parser.add_argument("--random-init", action="store_true", help="also time ours from random rows")
    parser.add_argument("--skip-sklearn", action="store_true", help="time ours only")
    args = parser.parse_args()

    x_np = make_data(args.n, args.d, args.k, args.spread, args.seed)
    x = torch.from_numpy(x_np).to(args.device)
    seeds = list(range(args.seed, args.seed + args.seeds))
    ours: dict[int, list[dict]] = {s: [] for s in seeds}
    theirs: dict[int, list[dict]] = {s: [] for s in seeds}
    stock: dict[int, list[dict]] = {s: [] for s in seeds}
    with busy_core(args.busy, args.busy_core) as busy_pid:
        load = os.getloadavg()[0]
        for seed in seeds:
            for _ in range(args.repeat):
                ours[seed].append(run_ours(x, args.k, args.niter, seed, "k-means++"))
                if not args.skip_sklearn:
                    theirs[seed].append(run_sklearn(x_np, args.k, args.niter, seed))
                if args.faiss:
                    stock[seed].append(run_faiss(x_np, args.k, args.niter, seed))
        random_init = run_ours(x, args.k, args.niter, args.seed, "random") if args.random_init else None
    row = {
        "n": args.n,
        "d": args.d,
        "k": args.k,
        "niter": args.niter,
        "spread": args.spread,
        "device": args.device,
        "seeds": seeds,
        "repeat": args.repeat,
        "busy_core": ("any" if args.busy_core is None else args.busy_core) if busy_pid else None,
        "torch_threads": torch.get_num_threads(),
        "ours": summed(ours),
    }
    if random_init is not None:
        row["ours_random_init"] = random_init
    if args.faiss:
        row["faiss"] = summed(stock)
    if not args.skip_sklearn:
        row["sklearn"] = summed(theirs)
        row["ratio_vs_sklearn"] = row["ours"]["seconds"] / row["sklearn"]["seconds"]
        row["inertia_ratio_vs_sklearn"] = row["ours"]["inertia"] / row["sklearn"]["inertia"]
        if args.faiss:
            row["faiss_ratio_vs_sklearn"] = row["faiss"]["seconds"] / row["sklearn"]["seconds"]
    # Shared machines: the 1-minute load average (busy loop included) says how far to trust the times.
    row["load_average_1min"] = load
    write_row("kmeans", row)
    if not args.skip_sklearn:
        busy = f", one core busy ({row['busy_core']})" if busy_pid else ""
        faiss_part = f"; stock faiss {row['faiss_ratio_vs_sklearn']:.2f}x" if args.faiss else ""
        print(
            f"\n{args.n} x {args.d} into {args.k}{busy}, {len(seeds)} seed(s): ours "
            f"{row['ours']['seconds']:.2f} s ({row['ours']['iterations']} iterations), scikit-learn "
            f"{row['sklearn']['seconds']:.2f} s ({row['sklearn']['iterations']} iterations) -> ratio "
            f"{row['ratio_vs_sklearn']:.2f}{faiss_part}"
        )

if __name__ == "__main__":
    main()
