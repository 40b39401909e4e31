"""Unsupervised tracking (STSSL Sec. 3.1, Eq. 1): synthetic known answers, references, real KITTI frames."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from unsup3d.stssl.tracking import (
    StreamingTracker,
    cost_matrix,
    frame_pairs,
    match_clusters,
    matched_pairs,
    summarize_clusters,
    to_world,
    track_lengths,
    track_sequence,
    tracking_stats,
)

# A 7x7x7 grid (343 points, inside 200..20,000) whose mean is exactly its centre.
_GRID = np.stack(np.meshgrid(*[np.linspace(-0.3, 0.3, 7)] * 3, indexing="ij"), -1).reshape(-1, 3)


def _frame(objects: dict[str, tuple], order: list[str] | None = None, noise: int = 50, seed: int = 0):
    """Points, cluster ids and features of named boxes ``name -> (centre, feature[, n_points])``.

    Cluster ids follow ``order`` (default: insertion order); ``noise`` points get -1. Returns the
    per-point object names too, to read the answer back.
    """
    rng = np.random.default_rng(seed)
    order = order or list(objects)
    pts, cls, feats, names = [], [], [], []
    for cid, name in enumerate(order):
        centre, feat, *n = objects[name]
        grid = _GRID if not n else _GRID[: n[0]] - _GRID[: n[0]].mean(0)
        pts.append(grid + np.asarray(centre, dtype=float))
        cls.append(np.full(len(grid), cid))
        feats.append(np.tile(np.asarray(feat, dtype=float), (len(grid), 1)))
        names += [name] * len(grid)
    dim = len(feats[0][0]) if feats else 3
    pts.append(rng.uniform(-20, 20, (noise, 3)))
    cls.append(np.full(noise, -1))
    feats.append(rng.normal(size=(noise, dim)))
    names += ["noise"] * noise
    return np.concatenate(pts), np.concatenate(cls).astype(np.int64), np.concatenate(feats), np.array(names)


def _ids(tracks: np.ndarray, names: np.ndarray) -> dict[str, int]:
    """The one track id of each object's points (asserting that it is one)."""
    out = {}
    for name in np.unique(names):
        ids = np.unique(tracks[names == name])
        if name != "noise":
            assert len(ids) == 1, (name, ids)
            out[str(name)] = int(ids[0])
    return out


def _run(frames, **kw):
    pts, cls, feats, names = zip(*frames, strict=True)
    tracks = track_sequence(
        list(pts), list(cls), list(feats) if kw.pop("use_features", False) else None, **kw
    )
    return [_ids(tr, nm) for tr, nm in zip(tracks, names, strict=True)], tracks, names


E = np.eye(4)


def test_known_identities_leave_and_appear():
    seq = []
    for t in range(4):
        objs = {
            "A": ((0.5 * t, 0, 0), E[0]),
            "B": ((10, 0.3 * t, 0), E[1]),
        }
        if t < 2:
            objs["C"] = ((-10, 2, 0), E[2])  # leaves after frame 1
        if t >= 2:
            objs["D"] = ((0, 15 + 0.2 * t, 0), E[3])  # appears in frame 2
        order = sorted(objs, reverse=t % 2 == 1)  # cluster ids change order from frame to frame
        seq.append(_frame(objs, order, seed=t))
    ids, tracks, names = _run(seq)
    # Frame 0 numbers its clusters in cluster-id order A, B, C; D is the next id.
    assert ids[0] == {"A": 0, "B": 1, "C": 2}
    assert ids[1] == {"A": 0, "B": 1, "C": 2}
    assert ids[2] == {"A": 0, "B": 1, "D": 3}
    assert ids[3] == {"A": 0, "B": 1, "D": 3}
    for tr, nm in zip(tracks, names, strict=True):
        assert tr.dtype == np.int64
        assert (tr[nm == "noise"] == -1).all()


def _crossing():
    # A and B cross; C, 4.5 m away, stretches D_loc's range so that A/B's location costs nearly tie
    # (and location alone prefers the swap: 0.45 + 0.45 < 0.55 + 0.55).
    f0 = _frame({"A": ((0, 0, 0), E[0]), "B": ((1, 0, 0), E[1]), "C": ((4.5, 0, 0), E[2])})
    f1 = _frame({"A": ((0.55, 0, 0), E[0]), "B": ((0.45, 0, 0), E[1]), "C": ((4.5, 0, 0), E[2])}, seed=1)
    return [f0, f1]


def test_crossing_needs_features():
    ids, _, _ = _run(_crossing())
    assert ids[1] == {"A": 1, "B": 0, "C": 2}  # location alone swaps them
    ids, _, _ = _run(_crossing(), use_features=True, alpha=0.5)
    assert ids[1] == {"A": 0, "B": 1, "C": 2}
    ids, _, _ = _run(_crossing(), use_features=True, alpha=0.0)
    assert ids[1] == {"A": 1, "B": 0, "C": 2}


def test_crossing_with_the_release_features():
    """Max-pooled features compared by Euclidean distance (the release's D_feat) also untangle A and B."""
    ids, _, _ = _run(_crossing(), use_features=True, alpha=0.5, pooling="max", feature_distance="euclidean")
    assert ids[1] == {"A": 0, "B": 1, "C": 2}


def test_summarize_clusters_pools_mean_or_max():
    rng = np.random.default_rng(3)
    # ids -1..5 with sizes about 300, 420, 150, 900, 420, 0 (no points) and 810
    clusters = rng.choice(np.arange(-1, 6), 3000, p=[0.1, 0.14, 0.05, 0.3, 0.14, 0.0, 0.27])
    points, feats = rng.normal(size=(3000, 4)), rng.normal(size=(3000, 5)).astype(np.float32)
    mean = summarize_clusters(points, clusters, feats, min_points=300, max_points=600)
    top = summarize_clusters(points, clusters, feats, min_points=300, max_points=600, pooling="max")
    sizes = [int((clusters == i).sum()) for i in range(6)]
    expected_ids = [i for i in range(6) if 300 <= sizes[i] <= 600]
    assert expected_ids == [0, 3] and list(mean.ids) == list(top.ids) == expected_ids
    for k, i in enumerate(expected_ids):
        rows = [j for j in range(3000) if clusters[j] == i]
        np.testing.assert_allclose(top.features[k], [max(feats[j, d] for j in rows) for d in range(5)])
        m = np.array([sum(float(feats[j, d]) for j in rows) / len(rows) for d in range(5)])
        np.testing.assert_allclose(mean.features[k], m / np.linalg.norm(m), rtol=1e-6)
        np.testing.assert_allclose(top.centres[k], points[rows, :3].mean(0))
    with pytest.raises(ValueError, match="pooling must be one of"):
        summarize_clusters(points, clusters, feats, pooling="sum")


def test_streaming_tracker_projects_the_pooled_features():
    """``project`` maps each frame's max-pooled cluster features; the reference gives every point its
    cluster's projected feature up front (whose max pool is that feature itself)."""
    rng = np.random.default_rng(4)
    weight = rng.normal(size=(4, 3))

    def project(pooled: np.ndarray) -> np.ndarray:
        return np.tanh(pooled @ weight)

    frames = [*_crossing(), _frame({"A": ((1.1, 0, 0), E[0]), "B": ((0, 0, 0), E[1])}, seed=2)]
    noisy = [(p, c, f + rng.normal(0, 0.1, f.shape)) for p, c, f, _ in frames]
    kw = dict(alpha=0.5, pooling="max", feature_distance="euclidean")
    tracker = StreamingTracker(**kw, project=project)
    got = [tracker.update(p, c, f) for p, c, f in noisy]
    assert tracker.feats.shape[1] == 3  # the candidates keep the projected features

    broadcast = []
    for _, c, f in noisy:
        pooled = {int(i): project(f[c == i].max(0)[None])[0] for i in np.unique(c[c >= 0])}
        broadcast.append(np.stack([pooled[int(i)] if i >= 0 else np.zeros(3) for i in c]))
    expected = track_sequence([p for p, _, _ in noisy], [c for _, c, _ in noisy], broadcast, **kw)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _ids(got[1], frames[1][3]) == {"A": 0, "B": 1, "C": 2}


def test_features_as_torch_tensors():
    pts, cls, feats, names = zip(*_crossing(), strict=True)
    tracks = track_sequence(list(pts), list(cls), [torch.from_numpy(f).float() for f in feats])
    assert _ids(tracks[1], names[1]) == {"A": 0, "B": 1, "C": 2}


def test_gate_blocks_far_match():
    f0 = _frame({"A": ((0, 0, 0), E[0])})
    ids, _, _ = _run([f0, _frame({"A": ((6, 0, 0), E[0])})])
    assert ids[1] == {"A": 1}
    ids, _, _ = _run([f0, _frame({"A": ((6, 0, 0), E[0])})], gate=7.0)
    assert ids[1] == {"A": 0}


def test_gate_forbids_a_far_pair_the_features_prefer():
    # Every cluster has a neighbour within 5 m, so the release's nearest-centre gate keeps all four, and
    # the features favour P-S (5.5 m apart) + Q-R; the pair gate forces P-R + Q-S instead.
    f0 = _frame({"P": ((0, 0, 0), E[0]), "Q": ((1, 0, 0), E[1])})
    f1 = _frame({"R": ((0.5, 0, 0), E[1]), "S": ((5.5, 0, 0), E[0])}, seed=1)
    ids, _, _ = _run([f0, f1], use_features=True, alpha=0.5)
    assert ids[1] == {"R": 0, "S": 1}
    ids, _, _ = _run([f0, f1], use_features=True, alpha=0.5, gate=6.0)
    assert ids[1] == {"R": 1, "S": 0}


def test_min_max_points_filter():
    objs = {"small": ((0, 0, 0), E[0], 150), "mid": ((5, 0, 0), E[1], 300), "big": ((10, 0, 0), E[2])}
    pts, cls, _, names = _frame(objs)
    tr = track_sequence([pts], [cls])[0]
    assert (tr[names == "small"] == -1).all()
    assert _ids(tr[names != "small"], names[names != "small"]) == {"mid": 0, "big": 1}
    tr = track_sequence([pts], [cls], min_points=100, max_points=320)[0]
    assert _ids(tr[names != "big"], names[names != "big"]) == {"small": 0, "mid": 1}
    assert (tr[names == "big"] == -1).all()


def test_max_gap_bridges_missing_frames():
    def seq(present):
        return [
            _frame(
                {"A": ((0.3 * t, 0, 0), E[0]), "B": ((0, 8, 0), E[1])} if p else {"B": ((0, 8, 0), E[1])},
                seed=t,
            )
            for t, p in enumerate(present)
        ]

    one_missing = seq([1, 1, 0, 1])
    ids, _, _ = _run(one_missing)
    assert ids[1]["A"] == 0 and ids[3]["A"] == 2  # default: the track ended in frame 2
    ids, _, _ = _run(one_missing, max_gap=1)
    assert ids[3]["A"] == 0 and ids[3]["B"] == 1
    ids, _, _ = _run(seq([1, 0, 0, 1]), max_gap=1)
    assert ids[3]["A"] == 2  # two missing frames exceed max_gap=1
    ids, _, _ = _run(seq([1, 0, 0, 1]), max_gap=2)
    assert ids[3]["A"] == 0


def test_empty_frames_end_every_track():
    f0 = _frame({"A": ((0, 0, 0), E[0])})
    empty = (np.zeros((0, 4)), np.zeros(0, dtype=np.int64), np.zeros((0, 4)), np.array([], dtype=str))
    noise_only = _frame({}, noise=30)
    ids, tracks, _ = _run([f0, empty, f0, noise_only, f0])
    assert [i.get("A") for i in ids] == [0, None, 1, None, 2]
    assert tracks[1].shape == (0,) and (tracks[3] == -1).all()


def test_deterministic_and_independent_of_point_order():
    rng = np.random.default_rng(0)
    frames = [
        _frame({f"o{i}": ((3 * i + 0.2 * t, 0.1 * t * i, 0), rng.normal(size=4)) for i in range(6)}, seed=t)
        for t in range(5)
    ]
    pts, cls, feats, _ = zip(*frames, strict=True)
    a = track_sequence(list(pts), list(cls), list(feats))
    b = track_sequence(list(pts), list(cls), list(feats))
    perms = [rng.permutation(len(p)) for p in pts]
    c = track_sequence(
        [p[i] for p, i in zip(pts, perms, strict=True)],
        [x[i] for x, i in zip(cls, perms, strict=True)],
        [f[i] for f, i in zip(feats, perms, strict=True)],
    )
    for x, y, z, i in zip(a, b, c, perms, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x[i], z)


def _loop_cost(ca, cb, fa, fb, alpha, feature_distance="cosine"):
    """Eq. 1 with plain loops: Euclidean and cosine (or Euclidean) distances, each min-max normalised."""
    m, n = len(ca), len(cb)
    loc = [[math.dist(ca[i], cb[j]) for j in range(n)] for i in range(m)]
    feat = [
        [
            math.dist(fa[i], fb[j])
            if feature_distance == "euclidean"
            else 1
            - sum(x * y for x, y in zip(fa[i], fb[j], strict=True))
            / (math.hypot(*fa[i]) * math.hypot(*fb[j]))
            for j in range(n)
        ]
        for i in range(m)
    ]

    def norm(mat):
        flat = [v for row in mat for v in row]
        lo, hi = min(flat), max(flat)
        return [[(v - lo) / (hi - lo) if hi > lo else 0.0 for v in row] for row in mat]

    loc, feat = norm(loc), norm(feat)
    return np.array([[loc[i][j] + alpha * feat[i][j] for j in range(n)] for i in range(m)])


def test_cost_matrix_matches_plain_loops():
    rng = np.random.default_rng(1)
    ca, cb = rng.normal(size=(5, 3)) * 3, rng.normal(size=(7, 3)) * 3
    fa, fb = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    for alpha in (0.0, 0.5, 0.9):
        np.testing.assert_allclose(
            cost_matrix(ca, cb, fa, fb, alpha), _loop_cost(ca, cb, fa, fb, alpha), atol=1e-12
        )
    np.testing.assert_allclose(cost_matrix(ca, cb), _loop_cost(ca, cb, fa, fb, 0.0), atol=1e-12)
    euclidean = cost_matrix(ca, cb, fa, fb, 0.5, "euclidean")
    np.testing.assert_allclose(euclidean, _loop_cost(ca, cb, fa, fb, 0.5, "euclidean"), atol=1e-12)
    assert not np.allclose(euclidean, cost_matrix(ca, cb, fa, fb, 0.5))
    # One entry, or constant entries, normalise to zeros: no preference.
    np.testing.assert_array_equal(cost_matrix(ca[:1], cb[:1], fa[:1], fb[:1]), [[0.0]])
    same = np.zeros((3, 3))
    np.testing.assert_array_equal(
        cost_matrix(same, same[:2], np.ones((3, 2)), np.ones((2, 2))), np.zeros((3, 2))
    )


def _brute_force(ca, cb, fa, fb, alpha, gate):
    """All matchings by enumeration: most pairs within the gate, then least Eq. 1 cost."""
    dist = np.array([[math.dist(a, b) for b in cb] for a in ca])
    rows = [i for i in range(len(ca)) if dist[i].min() <= gate]
    cols = [j for j in range(len(cb)) if dist[:, j].min() <= gate]
    if not rows or not cols:
        return 0, 0.0
    cost = _loop_cost(ca[rows], cb[cols], fa[rows], fb[cols], alpha)
    best = (0, 0.0)
    for k in range(1, min(len(rows), len(cols)) + 1):
        for rs in itertools.combinations(range(len(rows)), k):
            for cs in itertools.permutations(range(len(cols)), k):
                if all(dist[rows[r], cols[c]] <= gate for r, c in zip(rs, cs, strict=True)):
                    total = sum(cost[r, c] for r, c in zip(rs, cs, strict=True))
                    if k > best[0] or (k == best[0] and total < best[1] - 1e-12):
                        best = (k, total)
    return best


def test_match_clusters_against_brute_force():
    rng = np.random.default_rng(2)
    for trial in range(40):
        m, n = rng.integers(1, 5), rng.integers(1, 5)
        ca, cb = rng.uniform(0, 8, (m, 3)), rng.uniform(0, 8, (n, 3))
        fa, fb = rng.normal(size=(m, 4)), rng.normal(size=(n, 4))
        r, c = match_clusters(ca, cb, fa, fb, alpha=0.5, gate=5.0)
        k, total = _brute_force(ca, cb, fa, fb, 0.5, 5.0)
        assert len(r) == k, trial
        assert len(set(r)) == len(r) and len(set(c)) == len(c)
        assert (np.linalg.norm(ca[r] - cb[c], axis=1) <= 5.0).all()
        if k:
            dist = np.linalg.norm(ca[:, None] - cb[None], axis=2)
            rows = np.flatnonzero(dist.min(1) <= 5.0)
            cols = np.flatnonzero(dist.min(0) <= 5.0)
            cost = cost_matrix(ca[rows], cb[cols], fa[rows], fb[cols], 0.5)
            got = cost[np.searchsorted(rows, r), np.searchsorted(cols, c)].sum()
            assert got == pytest.approx(total, abs=1e-9), trial


def test_to_world():
    rot = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    poses = np.stack([np.eye(4), np.eye(4)])
    poses[1, :3, :3], poses[1, :3, 3] = rot, (10, 0, 1)
    frames = [np.array([[1.0, 2, 3, 0.5]], dtype=np.float32)] * 2
    world = to_world(frames, poses)
    np.testing.assert_allclose(world[0], frames[0])
    np.testing.assert_allclose(world[1], [[8.0, 1, 4, 0.5]])
    assert world[1].dtype == np.float32
    with pytest.raises(ValueError, match="poses of shape"):
        to_world(frames, poses[:1])


def test_bad_inputs_name_the_frame():
    pts, cls, feats, _ = _frame({"A": ((0, 0, 0), E[0])})
    with pytest.raises(ValueError, match="2 frames of points but 1 of clusters"):
        track_sequence([pts, pts], [cls])
    with pytest.raises(ValueError, match="frame 1: clusters"):
        track_sequence([pts, pts], [cls, cls[:-1]])
    with pytest.raises(ValueError, match="frame 0: features"):
        track_sequence([pts], [cls], [feats[:-1]])
    with pytest.raises(ValueError, match="frame 0: cluster ids must be >= -1"):
        track_sequence([pts], [np.where(cls < 0, -2, cls)])
    bad = pts.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="frame 0: points have non-finite"):
        track_sequence([bad], [cls])


def test_stats_pairs_and_purity_by_hand():
    # Track 0 in frames 0-3, track 1 in frames 0-1, track 2 in frame 3 only; one point of noise each.
    tracks = [
        np.array([0, 0, 1, 1, -1]),
        np.array([0, 0, 1, 1, -1]),
        np.array([0, 0, -1, -1, -1]),
        np.array([0, 0, 2, 2, -1]),
    ]
    labels = [
        np.array([5, 5, 2, 2, 7]),
        np.array([5, 3, 3, 3, 7]),  # track 0 ties 5 vs 3: the smaller class, 3, is its majority
        np.array([5, 5, -1, -1, 7]),
        None,
    ]
    instances = [np.array([1, 1, 0, 0, 0]), np.array([2, 1, 0, 0, 0]), np.array([1, 1, 0, 0, 0]), None]
    stats = tracking_stats(tracks, labels, instances)
    assert stats["num_tracks"] == 3 and stats["num_clusters"] == 7 and stats["num_links"] == 4
    assert stats["mean_length"] == pytest.approx(7 / 3)
    assert stats["share_ge3"] == pytest.approx(1 / 3) and stats["cluster_share_ge3"] == pytest.approx(4 / 7)
    assert stats["share_ge8"] == 0.0
    # Labelled links: track 0 0->1 (5 vs 3), 1->2 (3 vs 5), track 1 0->1 (2 vs 3): none agree.
    assert stats["labelled_links"] == 3 and stats["pair_purity"] == 0.0
    labels[1] = np.array([5, 5, 2, 3, 7])  # track 1 now ties 2 vs 3 -> 2; track 0 -> 5
    stats = tracking_stats(tracks, labels, instances)
    assert stats["pair_purity"] == 1.0
    # Frame 1's track 0 is (5, 2) and (5, 1): tie -> (5, 1), which agrees with frames 0 and 2.
    assert stats["instance_purity"] == 1.0 and stats["instance_links"] == 3
    instances[1] = np.array([2, 2, 0, 0, 0])
    assert tracking_stats(tracks, labels, instances)["instance_purity"] == pytest.approx(1 / 3)

    ids, lengths = track_lengths(tracks)
    np.testing.assert_array_equal(ids, [0, 1, 2])
    np.testing.assert_array_equal(lengths, [4, 2, 1])
    np.testing.assert_array_equal(matched_pairs(tracks[0], tracks[1]), [0, 1])
    np.testing.assert_array_equal(matched_pairs(tracks[0], tracks[3]), [0])
    pairs = frame_pairs(tracks, 2)
    assert [(a, b, list(i)) for a, b, i in pairs] == [(0, 2, [0]), (1, 3, [0])]


# ---------------------------------------------------------------- real KITTI sequence 00, frames 0-9


@pytest.fixture(scope="module")
def kitti_tracks(kitti_seq_dir):
    from unsup3d.data.formats import semantic_kitti as sk
    from unsup3d.stssl.ground_clusters import cluster_points

    poses = sk.read_poses(kitti_seq_dir / "poses.txt", kitti_seq_dir / "calib.txt")
    points, clusters, labels, instances = [], [], [], []
    for t in range(10):
        scan = sk.read_scan(kitti_seq_dir / "velodyne" / f"{t:06d}.bin")
        keep = np.linalg.norm(scan[:, :2], axis=1) < 30.0  # crop: keeps clustering to ~1 s a frame
        points.append(scan[keep])
        clusters.append(cluster_points(scan[keep]))
        label_file = kitti_seq_dir / "labels" / f"{t:06d}.label"
        if label_file.exists():
            sem, inst = sk.read_labels(label_file)
            labels.append(sk.map_labels(sem)[keep])
            instances.append(inst[keep])
        else:
            labels.append(None)
            instances.append(None)
    tracks = track_sequence(to_world(points, poses[:10]), clusters)
    return tracks, clusters, labels, instances


def test_kitti_tracks_last_and_are_pure(kitti_tracks):
    tracks, clusters, labels, instances = kitti_tracks
    stats = tracking_stats(tracks, labels, instances)
    # Measured: 41 tracks; 70.7 % seen in >= 3 frames (93.4 % of clusters), 46.3 % in >= 8 (of 10);
    # frames 0-2: 42 labelled links, 95.2 % same majority class and instance.
    assert stats["share_ge3"] >= 0.55
    assert stats["cluster_share_ge3"] >= 0.8
    assert stats["share_ge8"] >= 0.3
    assert stats["labelled_links"] >= 30
    assert stats["pair_purity"] >= 0.85
    assert stats["instance_purity"] >= 0.85
    for tr, cl in zip(tracks, clusters, strict=True):
        # A track is a whole cluster: every point of a cluster has its cluster's one track id (or none).
        lut = np.full(cl.max() + 1, -2)
        lut[cl[cl >= 0]] = tr[cl >= 0]
        np.testing.assert_array_equal(lut[cl[cl >= 0]], tr[cl >= 0])
        assert (tr[cl < 0] == -1).all()
