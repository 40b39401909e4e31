"""Speed of STSSL's per-frame preprocessing on the real KITTI frames: ground removal, then clustering.

Each stage runs over the whole sequence and is timed on its own (frames per second); "total" times
the stages back to back. A stage is a function of the list of frames (dicts holding ``points`` and
what earlier stages wrote), so a sequence-level stage such as tracking is one more entry in
``STAGES``. Quality figures ride along: ground share, clusters a frame and, on the frames with
SemanticKITTI labels, cluster purity (share of clustered, labelled points whose cluster's majority
class is their own). Prints and appends one JSON row to benchmarks/results/lidar_preprocess.jsonl.
Quick run: --frames 3 --repeat 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from unsup3d.stssl.ground_clusters import cluster_points, remove_ground  # noqa: E402
from unsup3d.stssl.tracking import track_sequence  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SEQ = REPO / "samples" / "semantickitti_seq00" / "sequences" / "00"

Frame = dict[str, np.ndarray]


def stage_ground(frames: list[Frame]) -> None:
    for frame in frames:
        frame["ground"] = remove_ground(frame["points"])


def stage_cluster(frames: list[Frame]) -> None:
    for frame in frames:
        frame["clusters"] = cluster_points(frame["points"], ground=frame["ground"])


def stage_track(frames: list[Frame]) -> None:
    # STSSL Eq. 1, location only, in each scan's sensor frame as the paper does (no poses).
    tracks = track_sequence([f["points"] for f in frames], [f["clusters"] for f in frames])
    for frame, track in zip(frames, tracks):
        frame["track"] = track


# In pipeline order; each stage may read what the ones before it wrote.
STAGES: list[tuple[str, Callable[[list[Frame]], None]]] = [
    ("ground", stage_ground),
    ("cluster", stage_cluster),
    ("track", stage_track),
]


def load(seq_dir: Path, frames: int) -> list[Frame]:
    """Points of the first ``frames`` scans, with raw semantic ids where a label file exists."""
    out = []
    for t in range(frames):
        scan = seq_dir / "velodyne" / f"{t:06d}.bin"
        if not scan.exists():
            break
        frame: Frame = {"points": np.fromfile(scan, dtype=np.float32).reshape(-1, 4)}
        label = seq_dir / "labels" / f"{t:06d}.label"
        if label.exists():
            frame["semantic"] = (np.fromfile(label, dtype=np.uint32) & 0xFFFF).astype(np.int64)
        out.append(frame)
    if not out:
        raise SystemExit(f"no scans under {seq_dir / 'velodyne'}")
    return out


def purity(clusters: np.ndarray, semantic: np.ndarray) -> tuple[int, int]:
    """(points whose cluster's majority class is theirs, clustered labelled points); 0/1 unlabelled."""
    keep = (clusters >= 0) & (semantic > 1)
    pair, count = np.unique(clusters[keep] * 1000 + semantic[keep], return_counts=True)
    majority = np.zeros(int(clusters.max()) + 1, dtype=np.int64)
    np.maximum.at(majority, pair // 1000, count)
    return int(majority.sum()), int(keep.sum())


def fresh(frames: list[Frame]) -> list[Frame]:
    return [{"points": f["points"]} for f in frames]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-dir", type=Path, default=DEFAULT_SEQ, help="a SemanticKITTI sequence folder")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each stage; the median is kept")
    args = parser.parse_args()

    frames = load(args.seq_dir.resolve(), args.frames)
    n = len(frames)
    seconds: dict[str, float] = {}
    timed = fresh(frames)
    for name, stage in STAGES:
        runs = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            stage(timed)
            runs.append(time.perf_counter() - t0)
        seconds[name] = float(np.median(runs))
    totals = []
    for _ in range(max(1, args.repeat)):
        run = fresh(frames)
        t0 = time.perf_counter()
        for _, stage in STAGES:
            stage(run)
        totals.append(time.perf_counter() - t0)
    seconds["total"] = float(np.median(totals))

    good = total = 0
    for source, frame in zip(frames, timed):
        if "semantic" in source:
            g, t = purity(frame["clusters"], source["semantic"])
            good, total = good + g, total + t
    row = {
        "frames": n,
        "points_mean": float(np.mean([len(f["points"]) for f in frames])),
        "fps": {k: n / v for k, v in seconds.items()},
        "ms_per_frame": {k: 1000 * v / n for k, v in seconds.items()},
        "ground_share": float(np.mean([f["ground"].mean() for f in timed])),
        "clusters_per_frame": float(np.mean([f["clusters"].max() + 1 for f in timed])),
        "cluster_purity": good / total if total else None,
        "labelled_frames": sum("semantic" in f for f in frames),
        "seq_dir": str(args.seq_dir),
    }
    write_row("lidar_preprocess", row)


if __name__ == "__main__":
    main()
