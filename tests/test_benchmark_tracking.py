"""The tracking benchmark (benchmarks/tracking.py): its statistics on hand-made tracks whose answers are
worked out by hand, and its loader on the real KITTI frames in samples/."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.tracking import load, stats_of

FRAMES = 10
# track id -> the frames it is seen in (ids need not be contiguous; track 11 skips frame 7)
SEEN = {7: range(10), 2: (2, 3, 4), 5: (3, 4), 11: (5, 6, 8, 9)}


def _tracks() -> list[np.ndarray]:
    """Per-point track ids of 10 frames: 3 points per observation, plus 2 untracked points (-1)."""
    frames = []
    for t in range(FRAMES):
        ids = [i for i, frames_seen in SEEN.items() if t in frames_seen]
        frames.append(np.array([-1] + [i for i in ids for _ in range(3)] + [-1], dtype=np.int64))
    return frames


def _labels(tracks: list[np.ndarray], per_frame: dict[int, int]) -> list[np.ndarray | None]:
    """Track 7's points get ``per_frame[t]``'s entry in frames 0-2, every other point class 0 / instance 0;
    frames 3-9 have no labels (None), as the KITTI sample."""
    out: list[np.ndarray | None] = []
    for t, tr in enumerate(tracks):
        out.append(np.where(tr == 7, per_frame[t], 0).astype(np.int64) if t in per_frame else None)
    return out


def test_stats_of_hand_made_tracks() -> None:
    """Starts 0, 2, 3, 5 and lengths 10, 3, 2, 4 frames: worked out by hand."""
    tracks = _tracks()
    # track 7 is class 1 in frames 0-2 (its two labelled links agree on the class) but instance 10, 10
    # then 11 (one of its two links agrees on the object); track 2's labelled frame 2 links to frame 3,
    # which has no labels, so only track 7's links count
    labels = _labels(tracks, {0: 1, 1: 1, 2: 1})
    instances = _labels(tracks, {0: 10, 1: 10, 2: 11})
    stats = stats_of(tracks, {"labels": labels, "instances": instances})
    assert stats["num_frames"] == 10 and stats["num_tracks"] == 4
    assert stats["num_clusters"] == 10 + 3 + 2 + 4
    assert stats["num_links"] == 9 + 2 + 1 + 3
    assert stats["mean_length"] == 19 / 4
    assert stats["share_ge3"] == 3 / 4  # tracks 7, 2, 11
    assert stats["share_ge8"] == 1 / 4  # track 7
    # only a track starting in frames 0-2 can last 8 of 10 frames: tracks 7 and 2
    assert stats["share_ge8_bound"] == 2 / 4
    # observations of tracks seen in >= 3 frames: 17 of 19, rounded to 4 decimals
    assert stats["cluster_share_ge3"] == 0.8947
    assert stats["cluster_share_ge8"] == 0.5263  # 10 / 19
    assert stats["labelled_links"] == 2 and stats["pair_purity"] == 1.0
    assert stats["instance_links"] == 2 and stats["instance_purity"] == 0.5


def test_stats_of_bound_counts_each_track_from_its_first_frame_only() -> None:
    """A track seen in frames 0 and 9 starts in frame 0; one first seen in frame 3 cannot reach 8 scans
    even if it reappears; with no labels the purities are absent."""
    tracks = [np.full(4, -1, dtype=np.int64) for _ in range(FRAMES)]
    tracks[0][:2] = [4, 4]
    tracks[9][:2] = [4, 6]
    tracks[3][0] = 6
    stats = stats_of(tracks, {"labels": None, "instances": None})
    assert stats["num_tracks"] == 2 and stats["share_ge8_bound"] == 0.5
    assert stats["share_ge3"] == 0.0 and "pair_purity" not in stats


def test_stats_of_no_tracks_is_nan() -> None:
    """No tracked point at all: the bound is NaN, not a division error."""
    tracks = [np.full(5, -1, dtype=np.int64) for _ in range(FRAMES)]
    stats = stats_of(tracks, {"labels": None, "instances": None})
    assert stats["num_tracks"] == 0 and math.isnan(stats["share_ge8_bound"])


def test_load_reads_the_first_frames_and_labels_only_where_labelled(kitti_seq_dir: Path) -> None:
    """Frames 0-3 of the sample cropped to 10 m: labels (mapped) and instances for frames 0-2, None for 3;
    every per-point array matches the cropped scan read straight from the files."""
    data = load(kitti_seq_dir, frames=4, radius=10.0)
    assert data["poses"].shape == (4, 4, 4)
    assert np.allclose(data["poses"][0], np.eye(4), atol=1e-6)  # frame 0 is the world frame
    assert all(len(data[k]) == 4 for k in ("points", "clusters", "labels", "instances"))
    assert data["labels"][3] is None and data["instances"][3] is None
    for t in range(4):
        raw = np.fromfile(kitti_seq_dir / "velodyne" / f"{t:06d}.bin", dtype=np.float32).reshape(-1, 4)
        keep = np.hypot(raw[:, 0], raw[:, 1]) < 10.0
        assert 0 < keep.sum() < len(raw)
        np.testing.assert_array_equal(data["points"][t], raw[keep])
        assert data["clusters"][t].shape == (keep.sum(),)
        if t == 3:
            continue
        label = np.fromfile(kitti_seq_dir / "labels" / f"{t:06d}.label", dtype=np.uint32)[keep]
        np.testing.assert_array_equal(data["instances"][t], (label >> 16).astype(np.int64))
        lab, sem = data["labels"][t], label & 0xFFFF
        assert lab.shape == (keep.sum(),)
        # semantic-kitti.yaml's learning map, minus one: unlabelled -> ignored, road 8, building 12, car 0
        for raw_id, cls in ((0, -1), (40, 8), (50, 12), (10, 0)):
            assert (sem == raw_id).any() and (lab[sem == raw_id] == cls).all(), raw_id
