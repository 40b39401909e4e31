"""STSSL's unsupervised tracking on the real KITTI scans, with and without poses (STSSL Sec. 3.1, 4.3).

Clusters each of the 10 scans of SemanticKITTI sequence 00 in samples/ with
``unsup3d.stssl.cluster_points`` (not timed), then tracks them location-only (``D = D_loc``, what
``prepare_data`` caches before the inter-frame stage re-tracks with features) in two settings:

- ``scan frame``: each scan in its own sensor frame, the paper's setting ("without requiring any pose
  sensor") and the default of ``TrackSettings`` / ``LidarDataModule(track_use_poses=False)``;
- ``world frame``: the scans mapped through KITTI's poses (``track_use_poses=True``), so static
  objects stand still.

For each: the share of tracks seen in >= 3 and >= 8 scans (the paper, on all of KITTI: 63.73 % and
31.33 %; with 10 scans the 8-scan share is bounded by the share of tracks that start in scans 0-2,
``share_ge8_bound``), and the label purity of the matched pairs (a track's clusters in consecutive
scans with the same SemanticKITTI majority class, ``pair_purity``; the same object, ``instance_purity``)
over the labelled scans 0-2; and the tracking speed, location only and with 96-d random per-point
features (for timing; their tracks are not scored). Prints a table and appends one JSON row per
setting to benchmarks/results/tracking.jsonl. Quick run: --radius 20 --repeat 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import timeit, write_row  # noqa: E402
from unsup3d.data.formats import semantic_kitti as sk  # noqa: E402
from unsup3d.stssl.ground_clusters import cluster_points  # noqa: E402
from unsup3d.stssl.tracking import to_world, track_sequence, tracking_stats  # noqa: E402

DEFAULT_SEQ = Path(__file__).resolve().parent.parent / "samples" / "semantickitti_seq00"


def load(seq_dir: Path, frames: int, radius: float) -> dict:
    """Points, clusters, labels and instances (None without a label file) of the first ``frames``."""
    poses = sk.read_poses(seq_dir / "poses.txt", seq_dir / "calib.txt")[:frames]
    out: dict = {"points": [], "clusters": [], "labels": [], "instances": [], "poses": poses}
    t0 = time.perf_counter()
    for t in range(frames):
        scan = sk.read_scan(seq_dir / "velodyne" / f"{t:06d}.bin")
        keep = np.linalg.norm(scan[:, :2], axis=1) < radius if radius > 0 else np.ones(len(scan), bool)
        out["points"].append(scan[keep])
        out["clusters"].append(cluster_points(scan[keep]))
        label_file = seq_dir / "labels" / f"{t:06d}.label"
        sem, inst = sk.read_labels(label_file) if label_file.exists() else (None, None)
        out["labels"].append(None if sem is None else sk.map_labels(sem)[keep])
        out["instances"].append(None if inst is None else inst[keep])
    out["cluster_seconds"] = time.perf_counter() - t0
    return out


def stats_of(tracks: list[np.ndarray], data: dict) -> dict:
    stats = tracking_stats(tracks, data["labels"], data["instances"])
    # A track first seen in frame s can last at most T - s frames.
    starts = {}
    for t, tr in enumerate(tracks):
        for i in np.unique(tr[tr >= 0]):
            starts.setdefault(int(i), t)
    first = np.array(list(starts.values()))
    stats["share_ge8_bound"] = float((first <= len(tracks) - 8).mean()) if len(first) else float("nan")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in stats.items()}


SETTINGS = {"scan frame (paper, default)": False, "world frame (poses)": True}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seq-dir", type=Path, default=None, help="a SemanticKITTI sequence folder")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--radius", type=float, default=0.0, help="crop to this xy radius (m); 0: none")
    parser.add_argument("--feature-dim", type=int, default=96)
    parser.add_argument("--max-gap", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    env = os.environ.get("UNSUP3D_SAMPLE_DATA")
    seq_dir = args.seq_dir or (Path(env) / "semantickitti_seq00" if env else DEFAULT_SEQ) / "sequences" / "00"

    data = load(seq_dir, args.frames, args.radius)
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((len(p), args.feature_dim), dtype=np.float32) for p in data["points"]]
    sizes = [np.bincount(c[c >= 0]) for c in data["clusters"]]
    common = {
        "frames": args.frames,
        "radius_m": args.radius,
        "points_per_frame": int(np.mean([len(p) for p in data["points"]])),
        "clusters_per_frame": float(np.mean([len(s) for s in sizes])),
        "tracked_clusters_per_frame": float(np.mean([((s >= 200) & (s <= 20000)).sum() for s in sizes])),
        "max_gap": args.max_gap,
        "cluster_seconds_untimed": round(data["cluster_seconds"], 2),
        "feature_dim": args.feature_dim,
        "paper": {"share_ge3": 0.6373, "share_ge8": 0.3133, "note": "all of KITTI 00-10 but 08"},
    }
    table = []
    for name, use_poses in SETTINGS.items():
        points = to_world(data["points"], data["poses"]) if use_poses else data["points"]

        def run(features=None, points=points):
            return track_sequence(points, data["clusters"], features, max_gap=args.max_gap)

        seconds = timeit(run, repeat=args.repeat)
        seconds_feat = timeit(lambda run=run: run(feats), repeat=args.repeat)
        row = {
            "setting": name,
            "use_poses": use_poses,
            **common,
            "fps": round(args.frames / seconds, 1),
            "fps_with_features": round(args.frames / seconds_feat, 1),
            "stats": stats_of(run(), data),
        }
        write_row("tracking", row)
        table.append(row)

    print(f"\nSTSSL tracking (location only) on {args.frames} KITTI scans of {seq_dir}")
    head = ("setting", "tracks", ">= 3 scans", ">= 8 scans (bound)", "pair purity (links)", "instance purity",
            "scans/s")
    print(" | ".join(head))
    for row in table:
        st = row["stats"]
        print(" | ".join([
            row["setting"], str(st["num_tracks"]), f"{st['share_ge3']:.1%}",
            f"{st['share_ge8']:.1%} ({st['share_ge8_bound']:.1%})",
            f"{st.get('pair_purity', float('nan')):.1%} ({st.get('labelled_links', 0)})",
            f"{st.get('instance_purity', float('nan')):.1%}", f"{row['fps']:.0f}",
        ]))  # fmt: skip


if __name__ == "__main__":
    main()
