"""Speed and purity of FH super-voxels (``felzenszwalb_superpoints``) on synthetic rooms.

A room (floor, ceiling, walls; furniture boxes with their own colours; 3 mm position noise, colour
noise) is sampled at each requested size; the segmentation is timed from raw points and colours
(k-NN graph, normals, weights, FH, relabelling) and scored with ``superpoint_stats`` against the
surfaces' classes. ``--sequential`` also times the pure-Python FH loop at the smallest size and checks
that the vectorised rounds give the identical segmentation. Prints and appends one JSON row to
benchmarks/results/superpoints.jsonl. Quick run: --points 50000 --repeat 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from unsup3d.data.superpoints import felzenszwalb_superpoints, superpoint_stats  # noqa: E402

BOXES = [  # lo, hi, class, colour
    ((1.0, 1.0, 0.0), (2.5, 2.0, 0.75), 3, (150, 80, 40)),
    ((5.0, 3.0, 0.0), (6.0, 5.5, 1.8), 4, (60, 60, 160)),
    ((3.0, 4.0, 0.0), (3.6, 4.6, 0.45), 5, (40, 140, 60)),
    ((1.5, 4.5, 0.75), (2.2, 5.2, 1.2), 6, (200, 50, 50)),
    ((6.5, 0.5, 0.0), (7.5, 1.2, 1.0), 4, (60, 60, 160)),
]
COLOURS = {0: (120, 100, 80), 1: (230, 230, 230), 2: (200, 200, 190)}


def box_faces(rng: np.random.Generator, lo, hi, density: float) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points on an axis-aligned box's six faces, and the face (0-5) of each."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    pts, face = [], []
    for axis in range(3):
        u, v = [i for i in range(3) if i != axis]
        n = int((hi[u] - lo[u]) * (hi[v] - lo[v]) * density)
        for side, level in enumerate((lo[axis], hi[axis])):
            p = np.empty((n, 3))
            p[:, axis] = level
            p[:, u] = lo[u] + rng.random(n) * (hi[u] - lo[u])
            p[:, v] = lo[v] + rng.random(n) * (hi[v] - lo[v])
            pts.append(p)
            face.append(np.full(n, 2 * axis + side))
    return np.concatenate(pts), np.concatenate(face)


def room(n: int, seed: int = 0, colour_noise: float = 6.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About ``n`` points of an 8 x 6 x 3 m room: coord float32, colour uint8, class id (0-6)."""
    rng = np.random.default_rng(seed)
    shell = (np.zeros(3), np.array([8.0, 6.0, 3.0]))
    boxes = [(np.asarray(lo), np.asarray(hi)) for lo, hi, _, _ in BOXES]
    area = sum(2 * (d[0] * d[1] + d[0] * d[2] + d[1] * d[2]) for d in (hi - lo for lo, hi in [shell, *boxes]))
    density = n / area
    coord, face = box_faces(rng, *shell, density)
    parts = [coord]
    # Floor (face 4) 0, ceiling (face 5) 1, walls 2.
    labels = [np.where(face == 4, 0, np.where(face == 5, 1, 2))]
    colours = dict(COLOURS)
    for lo, hi, cls, colour in BOXES:
        pts = box_faces(rng, lo, hi, density)[0]
        parts.append(pts)
        labels.append(np.full(len(pts), cls))
        colours[cls] = colour
    coord = np.concatenate(parts) + rng.normal(0, 0.003, (sum(map(len, parts)), 3))
    label = np.concatenate(labels)
    palette = np.array([colours[c] for c in range(max(colours) + 1)], float)
    colour = np.clip(palette[label] + rng.normal(0, colour_noise, coord.shape), 0, 255)
    return coord.astype(np.float32), colour.astype(np.uint8), label


def best_of(fn, repeat: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=str, default="200000,1000000", help="comma-separated sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the median is kept")
    parser.add_argument("--c", type=float, default=0.1, help="FH scale")
    parser.add_argument("--color-weight", type=float, default=1.0)
    parser.add_argument("--sequential", action="store_true", help="also time the pure-Python FH loop")
    args = parser.parse_args()

    sizes = sorted(int(s) for s in args.points.split(","))
    results = []
    for n in sizes:
        coord, colour, label = room(n)
        kwargs = dict(c=args.c, color_weight=args.color_weight)
        seconds, segment = best_of(lambda: felzenszwalb_superpoints(coord, colour, **kwargs), args.repeat)  # noqa: B023
        entry = {"points": len(coord), "seconds": seconds, "points_per_s": len(coord) / seconds}
        entry.update(superpoint_stats(segment, label))
        if args.sequential and n == sizes[0]:
            loop_seconds, loop = best_of(
                lambda: felzenszwalb_superpoints(coord, colour, method="sequential", **kwargs),  # noqa: B023
                1,
            )
            entry["sequential_seconds"] = loop_seconds
            entry["sequential_identical"] = bool(np.array_equal(loop, segment))
        print(entry, flush=True)
        results.append(entry)
    write_row("superpoints", {"c": args.c, "color_weight": args.color_weight, "sizes": results})


if __name__ == "__main__":
    main()
