"""The track cache: frame-by-frame tracking gives known tracks and equals ``track_sequence``;
``prepare_data`` caches location-only tracks per settings; batches carry them; re-tracking with a
backbone's features makes a new version that every data-loader worker serves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from unsup3d.data.formats import semantic_kitti as sk
from unsup3d.data.lidar_frames import SharedPath
from unsup3d.models import MinkUNet, ProjectionHead
from unsup3d.stssl.datamodules import SyntheticLidarDataModule
from unsup3d.stssl.track_cache import StreamingTracker, track_dir, weights_digest
from unsup3d.stssl.tracking import to_world, track_sequence


def _blobs(seed: int, frames: int = 8) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Moving blobs of points: some vanish and come back, cluster ids are shuffled in every frame."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-30, 30, (9, 3))
    velocity = rng.normal(0, 0.8, (9, 3))
    codes = rng.normal(size=(9, 8))
    points, clusters, feats = [], [], []
    for t in range(frames):
        present = np.flatnonzero(rng.random(9) > 0.2)
        ids = rng.permutation(len(present))
        p, c, f = [rng.normal(0, 2, (40, 3))], [np.full(40, -1)], [rng.normal(size=(40, 8))]
        for k, blob in enumerate(present):
            n = int(rng.integers(150, 400))
            p.append(centres[blob] + t * velocity[blob] + rng.normal(0, 0.5, (n, 3)))
            c.append(np.full(n, ids[k]))
            f.append(codes[blob] + rng.normal(0, 0.3, (n, 8)))
        points.append(np.concatenate(p))
        clusters.append(np.concatenate(c))
        feats.append(np.concatenate(f))
    return points, clusters, feats


@pytest.mark.parametrize("max_gap", [0, 1])
@pytest.mark.parametrize("with_features", [False, True])
def test_streaming_tracker_equals_track_sequence(max_gap: int, with_features: bool) -> None:
    points, clusters, feats = _blobs(max_gap + 2 * with_features)
    f = feats if with_features else None
    expected = track_sequence(points, clusters, f, alpha=0.5, gate=5.0, min_points=200, max_gap=max_gap)
    tracker = StreamingTracker(alpha=0.5, gate=5.0, min_points=200, max_gap=max_gap)
    got = [
        tracker.update(p, c, None if f is None else f[t]) for t, (p, c) in enumerate(zip(points, clusters))
    ]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert max(int(a.max()) for a in got) < sum(len(np.unique(c[c >= 0])) for c in clusters)  # tracks link


# Frames in which named objects are present: B misses frame 2, C frames 1-2, D appears in frame 4.
_PRESENT = [("A", "B", "C"), ("A", "B"), ("A",), ("A", "B", "C"), ("A", "B", "C", "D"), ("A", "B", "C", "D")]
# The known answers (ids by first appearance; within a frame, by cluster id): a track bridges a gap of
# up to max_gap missing frames; past it, the object returns as a new track.
_KNOWN_IDS = {
    0: [{"A": 0, "B": 1, "C": 2}, {"A": 0, "B": 1}, {"A": 0}, {"A": 0, "B": 4, "C": 3},
        {"A": 0, "B": 4, "C": 3, "D": 5}, {"A": 0, "B": 4, "C": 3, "D": 5}],
    1: [{"A": 0, "B": 1, "C": 2}, {"A": 0, "B": 1}, {"A": 0}, {"A": 0, "B": 1, "C": 3},
        {"A": 0, "B": 1, "C": 3, "D": 4}, {"A": 0, "B": 1, "C": 3, "D": 4}],
    2: [{"A": 0, "B": 1, "C": 2}, {"A": 0, "B": 1}, {"A": 0}, {"A": 0, "B": 1, "C": 2},
        {"A": 0, "B": 1, "C": 2, "D": 3}, {"A": 0, "B": 1, "C": 2, "D": 3}],
}  # fmt: skip


@pytest.mark.parametrize("max_gap", [0, 1, 2])
@pytest.mark.parametrize("with_features", [False, True])
def test_streaming_tracker_known_identities_across_gaps(max_gap: int, with_features: bool) -> None:
    """Frame by frame, the tracker gives the known track of each named object: A moves 0.4 m a frame,
    B drifts and misses one frame, C stands still and misses two, D appears late; cluster ids are
    listed in reverse in odd frames. A gap of more than ``max_gap`` frames starts a new track."""
    from tests.stssl.test_tracking import _frame, _ids

    scene = {
        "A": lambda t: ((0.4 * t, 0, 0), np.eye(4)[0]),
        "B": lambda t: ((10, 0.3 * t, 0), np.eye(4)[1]),
        "C": lambda t: ((-10, 2, 0), np.eye(4)[2]),
        "D": lambda t: ((0, 15, 0), np.eye(4)[3]),
    }
    tracker = StreamingTracker(alpha=0.5, gate=5.0, min_points=200, max_gap=max_gap)
    for t, present in enumerate(_PRESENT):
        order = sorted(present, reverse=t % 2 == 1)
        points, clusters, feats, names = _frame({k: scene[k](t) for k in present}, order, seed=t)
        tracks = tracker.update(points, clusters, feats if with_features else None)
        assert _ids(tracks, names) == _KNOWN_IDS[max_gap][t], t
        assert (tracks[names == "noise"] == -1).all()


def test_streaming_tracker_checks_each_frame() -> None:
    points, clusters, feats = _blobs(5, frames=3)
    tracker = StreamingTracker(min_points=200)
    with pytest.raises(ValueError, match="StreamingTracker: frame 0: clusters must be integer"):
        tracker.update(points[0], clusters[0].astype(float))
    bad = points[0].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="frame 0: points have non-finite"):
        tracker.update(bad, clusters[0])
    tracker.update(points[0], clusters[0], feats[0])
    with pytest.raises(ValueError, match="frame 1: features must be"):
        tracker.update(points[1], clusters[1], feats[1][:, :4])
    with pytest.raises(ValueError, match="features given in some frames only"):
        tracker.update(points[1], clusters[1])
    with pytest.raises(ValueError, match="max_gap must be >= 0"):
        StreamingTracker(max_gap=-1)

def _module(tmp: Path, **kw) -> SyntheticLidarDataModule:
    args = dict(
        num_sequences=2, num_val=1, frames_per_sequence=5, azimuth_steps=512, data_root=str(tmp),
        voxel_size=0.2, tracks=True, track_min_points=60, max_voxels=None, augment=False, batch_size=1,
    )  # fmt: skip
    return SyntheticLidarDataModule(**{**args, **kw})


def _reference_points(
    dm: SyntheticLidarDataModule, world: bool = False
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Sequence 00's scans read independently: in each scan's own frame (the paper), or through the
    poses in the world frame; and the cached clusters."""
    seq = dm.raw_root / "sequences" / "00"
    points = [sk.read_scan(seq / "velodyne" / f"{t:06d}.bin") for t in range(5)]
    if world:
        points = to_world(points, sk.read_poses(seq / "poses.txt", seq / "calib.txt")[:5])
    clusters = [np.load(dm.prepared_root / "clusters" / "00" / f"{t:06d}.npy") for t in range(5)]
    return points, clusters


def test_prepare_data_caches_location_tracks_served_in_batches(tmp_path: Path) -> None:
    dm = _module(tmp_path)
    dm.prepare_data()
    root = dm.track_root
    assert root.parent == dm.prepared_root / "tracks" and (root / "tracks.json").is_file()
    files = sorted((root / "00").glob("*.npy"))
    assert len(files) == 5
    points, clusters = _reference_points(dm)
    expected = track_sequence(points, clusters, min_points=60)
    for t, exp in enumerate(expected):
        np.testing.assert_array_equal(np.load(files[t]), exp)
    assert any(
        len(set(e[e >= 0]) & set(expected[t + 1][expected[t + 1] >= 0])) for t, e in enumerate(expected[:-1])
    )

    stamp = files[0].stat().st_mtime_ns
    dm.prepare_data()  # cached: not recomputed
    assert files[0].stat().st_mtime_ns == stamp
    assert _module(tmp_path, track_gate=2.0).track_root != root  # other settings, another version

    dm.setup("fit")
    ds = dm.datasets["train"]
    sample = ds[(0, 3)]
    np.testing.assert_array_equal(sample["track"], expected[3][sample["point_index"]])


def test_tracks_without_poses_by_default_and_with_them_on_request(tmp_path: Path) -> None:
    """The paper tracks each scan in its own sensor frame; ``track_use_poses`` tracks in the world frame."""
    dm = _module(tmp_path)
    assert not dm.track_settings.use_poses
    dm.prepare_data()
    posed = _module(tmp_path, track_use_poses=True)
    posed.prepare_data()
    assert posed.track_root != dm.track_root
    sensor_ref, clusters = _reference_points(dm)
    world_ref, _ = _reference_points(dm, world=True)
    for module, points, world in ((dm, sensor_ref, False), (posed, world_ref, True)):
        assert json.loads((module.track_root / "00.done.json").read_text())["world_frame"] is world
        expected = track_sequence(points, clusters, min_points=60)
        for t, exp in enumerate(expected):
            np.testing.assert_array_equal(np.load(module.track_root / "00" / f"{t:06d}.npy"), exp)
    # the two frames give different tracks on this sequence (the ego car moves): the setting matters
    other = track_sequence(world_ref, clusters, min_points=60)
    assert any((a != b).any() for a, b in zip(track_sequence(sensor_ref, clusters, min_points=60), other))


def test_refresh_tracks_with_features_makes_a_new_version(tmp_path: Path) -> None:
    dm = _module(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    location = dm.track_root
    torch.manual_seed(0)
    backbone = MinkUNet(4, width=0.25).eval()
    tag = dm.refresh_tracks(backbone)
    assert tag == weights_digest(backbone) and dm.track_root != location
    assert (dm.track_root / "tracks.json").is_file()

    # reference: per-point features through the data module's own loader, tracked over the sequence
    points, clusters = _reference_points(dm)
    feats = []
    with torch.no_grad():
        for t in range(5):
            batch = dm.collate([dm.datasets["train_eval"][t]])
            feats.append(backbone(batch["sparse"], batch["inverse"]).numpy())
    expected = track_sequence(points, clusters, feats, alpha=0.5, min_points=60)
    for t in range(5):
        np.testing.assert_array_equal(np.load(dm.track_root / "00" / f"{t:06d}.npy"), expected[t])
        sample = dm.datasets["train"][(0, t)]
        np.testing.assert_array_equal(sample["track"], expected[t][sample["point_index"]])

    stamp = (dm.track_root / "00" / "000000.npy").stat().st_mtime_ns
    assert dm.refresh_tracks(backbone) == tag  # same weights: the version is reused
    assert (dm.track_root / "00" / "000000.npy").stat().st_mtime_ns == stamp
    dm.use_tracks(None)
    assert dm.track_root == location and dm.datasets["train"].track_root.get() == location



def test_refresh_tracks_with_the_release_cluster_features(tmp_path: Path) -> None:
    """``max_projection``: per cluster, the max of the points' backbone features through the projection
    head, compared by Euclidean distance (the release's ``track_model.py``)."""
    dm = _module(tmp_path, track_cluster_features="max_projection")
    dm.prepare_data()
    dm.setup("fit")
    torch.manual_seed(0)
    backbone = MinkUNet(4, width=0.25).eval()
    head = ProjectionHead(backbone.out_channels, 16, 8)
    with pytest.raises(ValueError, match="needs the projection head"):
        dm.refresh_tracks(backbone)
    head.train()
    tag = dm.refresh_tracks(backbone, projector=head)
    assert head.training  # put back as it was
    assert tag == weights_digest(backbone, head) != weights_digest(backbone)
    mean = _module(tmp_path)
    # location-only tracks are shared by both settings
    location = track_dir(dm.prepared_root, dm.track_settings)
    assert location == track_dir(mean.prepared_root, mean.track_settings) != dm.track_root

    points, clusters = _reference_points(dm)
    head.eval()
    broadcast = []
    with torch.no_grad():
        for t in range(5):
            batch = dm.collate([dm.datasets["train_eval"][t]])
            feats = backbone(batch["sparse"], batch["inverse"])
            c = torch.from_numpy(clusters[t]).long()
            out = torch.zeros(len(c), 8, dtype=torch.float64)
            for i in torch.unique(c[c >= 0]):
                out[c == i] = head(feats[c == i].max(0).values[None]).double()
            broadcast.append(out.numpy())
    expected = track_sequence(
        points, clusters, broadcast, alpha=0.5, min_points=60, pooling="max", feature_distance="euclidean"
    )
    for t in range(5):
        np.testing.assert_allclose(np.load(dm.track_root / "00" / f"{t:06d}.npy"), expected[t])
    location_only = track_sequence(points, clusters, min_points=60)
    assert any((a != b).any() for a, b in zip(expected, location_only))  # the features decide some matches

class _Echo(Dataset):
    def __init__(self) -> None:
        self.path = SharedPath(Path("/first"))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> str:
        return str(self.path.get())


def test_shared_path_reaches_persistent_workers() -> None:
    ds = _Echo()
    loader = DataLoader(ds, batch_size=2, num_workers=1, persistent_workers=True)
    assert next(iter(loader)) == ["/first", "/first"]
    ds.path.set(Path("/second/version"))  # after the worker started
    assert next(iter(loader)) == ["/second/version", "/second/version"]
