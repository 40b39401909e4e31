"""Unsupervised tracking of LiDAR clusters across frames: STSSL Sec. 3.1, Eq. 1.

Clusters of consecutive frames are matched by the Hungarian algorithm on the matching degree matrix
``D = D_loc + alpha * D_feat`` (STSSL Eq. 1). What the paper leaves out follows the authors' release
(``data_preprocessing/TrackClass.py``):

- only consecutive frames are linked, and a track that finds no match in a frame ends (``max_gap=0``);
  ``max_gap=N`` is our option to bridge up to N missing frames;
- only clusters of ``min_points``..``max_points`` points (200..20,000) take part;
- gate: a cluster whose nearest centre in the other frame is more than ``gate`` (5 m) away takes no
  part in the matching; the matrix is built over the clusters that pass;
- ``D_loc`` and ``D_feat`` are each min-max normalised over that matrix before they are summed.

Where we depart from the release: a pair whose centres are more than ``gate`` apart can never match
(the release only gates each cluster by its nearest centre, so the assignment it forces on the
remaining clusters can pair two clusters 5+ m apart); by default ``D_feat`` is the cosine distance
between L2-normalised mean point features. The release's cluster features are an option
(``pooling="max"``, ``feature_distance="euclidean"``, and a ``project`` callable for
:class:`StreamingTracker`): the Euclidean distance between projection-head outputs of the per-cluster
max-pooled backbone features (its ``track_model.py``). A constant matrix (one entry, or all entries
equal) normalises to zeros, where the release divides by zero except in the 1x1 case.

The paper uses no poses: its tracker sees each scan in its own sensor frame, where static clusters
move by the ego motion (about 1 m a frame at 10 Hz, inside the 5 m gate), and that is what
``track_sequence`` does with raw scans. As an option, :func:`to_world` applies poses (e.g. from
``semantic_kitti.read_poses``) so that static clusters stand still.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from unsup3d.stssl.tracking_stats import frame_pairs, matched_pairs, track_lengths, tracking_stats

__all__ = [
    "ClusterSummary",
    "StreamingTracker",
    "cost_matrix",
    "frame_pairs",
    "match_clusters",
    "matched_pairs",
    "summarize_clusters",
    "to_world",
    "track_lengths",
    "track_sequence",
    "tracking_stats",
]


def to_world(points: Sequence[np.ndarray], poses: np.ndarray) -> list[np.ndarray]:
    """Map each frame's xyz by its ``(4, 4)`` pose (sensor -> common frame); other columns are kept.

    ``poses`` is ``(T, 4, 4)`` with ``T == len(points)``, e.g. ``semantic_kitti.read_poses(...)``.
    """
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) != len(points):
        raise ValueError(f"to_world: need poses of shape ({len(points)}, 4, 4), got {poses.shape}")
    out = []
    for t, (frame, pose) in enumerate(zip(points, poses, strict=True)):
        frame = np.asarray(frame)
        if frame.ndim != 2 or frame.shape[1] < 3:
            raise ValueError(f"to_world: frame {t} must be an (N, >=3) array, got shape {frame.shape}")
        world = frame.astype(np.promote_types(frame.dtype, np.float32), copy=True)
        world[:, :3] = frame[:, :3] @ pose[:3, :3].T + pose[:3, 3]
        out.append(world)
    return out


class ClusterSummary:
    """The clusters of one frame that take part in tracking: ids, centres ``(K, 3)``, features ``(K, D)``."""

    __slots__ = ("centres", "features", "ids", "sizes")

    def __init__(self, ids: np.ndarray, sizes: np.ndarray, centres: np.ndarray, features: np.ndarray | None):
        self.ids, self.sizes, self.centres, self.features = ids, sizes, centres, features

    def __len__(self) -> int:
        return len(self.ids)


POOLINGS = ("mean", "max")
FEATURE_DISTANCES = ("cosine", "euclidean")


def summarize_clusters(
    points: np.ndarray,
    clusters: np.ndarray,
    features: np.ndarray | None = None,
    min_points: int = 200,
    max_points: int = 20000,
    pooling: str = "mean",
) -> ClusterSummary:
    """Centre (mean point) and feature of each cluster of ``min_points..max_points`` points.

    ``clusters`` holds int ids, -1 for ground / noise; ids are listed in increasing order. The feature
    is the L2-normalised mean of the points' features (``pooling="mean"``) or their element-wise
    maximum (``"max"``, the release's max pool, float64, not normalised).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"summarize_clusters: pooling must be one of {POOLINGS}, got {pooling!r}")
    valid = clusters >= 0
    labels = clusters[valid]
    nbins = int(labels.max()) + 1 if len(labels) else 0
    sizes = np.bincount(labels, minlength=nbins)
    ids = np.flatnonzero((sizes >= min_points) & (sizes <= max_points))
    if len(ids) == 0:
        empty_feat = None if features is None else np.zeros((0, features.shape[1]))
        return ClusterSummary(ids.astype(np.int64), ids.astype(np.int64), np.zeros((0, 3)), empty_feat)
    pts = np.asarray(points)[valid, :3]
    centres = np.stack([np.bincount(labels, weights=pts[:, d], minlength=nbins) for d in range(3)], axis=1)
    centres = centres[ids] / sizes[ids, None]
    feats = None
    if features is not None:
        # Reduce features per cluster with one sort + reduceat (float64, one gather of the kept rows):
        # no Python loop over points or clusters, and no copy of the whole feature array.
        taken = np.zeros(nbins, dtype=bool)
        taken[ids] = True
        rows = np.flatnonzero(valid)
        rows = rows[taken[labels]]
        rows = rows[np.argsort(clusters[rows], kind="stable")]
        starts = np.searchsorted(clusters[rows], ids)
        kept = np.asarray(features)[rows]
        if pooling == "max":
            feats = np.maximum.reduceat(kept, starts, axis=0).astype(np.float64)
        else:
            sums = np.add.reduceat(kept, starts, axis=0, dtype=np.float64)
            norm = np.linalg.norm(sums, axis=1, keepdims=True)
            feats = sums / np.where(norm > 0, norm, 1.0)
    return ClusterSummary(ids.astype(np.int64), sizes[ids].astype(np.int64), centres, feats)


def _minmax(x: np.ndarray) -> np.ndarray:
    """``(x - min) / (max - min)`` over the whole matrix; a constant (or empty, or 1x1) matrix gives zeros."""
    if x.size == 0:
        return x.copy()
    lo, hi = x.min(), x.max()
    if not hi > lo:
        return np.zeros_like(x)
    return (x - lo) / (hi - lo)


def cost_matrix(
    centres_a: np.ndarray,
    centres_b: np.ndarray,
    features_a: np.ndarray | None = None,
    features_b: np.ndarray | None = None,
    alpha: float = 0.5,
    feature_distance: str = "cosine",
) -> np.ndarray:
    """STSSL Eq. 1: ``D = minmax(D_loc) + alpha * minmax(D_feat)``, ``(M, N)``.

    ``D_loc`` is the Euclidean distance between centres; ``D_feat`` the cosine distance ``1 - cos``
    between features (rows L2-normalised here; ``feature_distance="cosine"``) or their Euclidean
    distance (``"euclidean"``, the release). Each term is min-max normalised over the whole matrix;
    a constant term (a 1x1 matrix, or all entries equal) becomes zeros, i.e. it carries no preference.
    Without features ``D = minmax(D_loc)``.
    """
    if feature_distance not in FEATURE_DISTANCES:
        raise ValueError(
            f"cost_matrix: feature_distance must be one of {FEATURE_DISTANCES}, got {feature_distance!r}"
        )
    d = _minmax(cdist(centres_a, centres_b))
    if features_a is not None and features_b is not None and alpha != 0:
        if feature_distance == "euclidean":
            d = d + alpha * _minmax(cdist(features_a, features_b))
        else:
            fa = features_a / np.maximum(np.linalg.norm(features_a, axis=1, keepdims=True), 1e-12)
            fb = features_b / np.maximum(np.linalg.norm(features_b, axis=1, keepdims=True), 1e-12)
            d = d + alpha * _minmax(1.0 - fa @ fb.T)
    return d


def match_clusters(
    centres_a: np.ndarray,
    centres_b: np.ndarray,
    features_a: np.ndarray | None = None,
    features_b: np.ndarray | None = None,
    alpha: float = 0.5,
    gate: float = 5.0,
    feature_distance: str = "cosine",
) -> tuple[np.ndarray, np.ndarray]:
    """Hungarian matching of clusters ``a`` to ``b`` on Eq. 1 under the gate: ``(rows, cols)`` int64.

    Clusters whose nearest centre on the other side is farther than ``gate`` are left out (release);
    the cost matrix of Eq. 1 is built and normalised over the rest; pairs farther apart than ``gate``
    are forbidden. The result is the largest set of allowed pairs, of least total cost among those.
    ``feature_distance``: as :func:`cost_matrix`.
    """
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if len(centres_a) == 0 or len(centres_b) == 0:
        return empty
    dist = cdist(centres_a, centres_b)
    rows = np.flatnonzero(dist.min(axis=1) <= gate)
    cols = np.flatnonzero(dist.min(axis=0) <= gate)
    if len(rows) == 0 or len(cols) == 0:
        return empty
    fa = None if features_a is None else features_a[rows]
    fb = None if features_b is None else features_b[cols]
    cost = cost_matrix(centres_a[rows], centres_b[cols], fa, fb, alpha, feature_distance)
    forbidden = dist[np.ix_(rows, cols)] > gate
    # Each entry of ``cost`` lies in [0, 1 + alpha]: a forbidden pair costing more than any full
    # assignment of allowed pairs makes the solver first maximise the number of allowed pairs.
    big = (1.0 + max(alpha, 0.0)) * min(cost.shape) + 1.0
    r, c = linear_sum_assignment(np.where(forbidden, big, cost))
    ok = ~forbidden[r, c]
    return rows[r[ok]].astype(np.int64), cols[c[ok]].astype(np.int64)


def _check_settings(
    who: str, alpha: float, gate: float, min_points: int, max_points: int, max_gap: int
) -> None:
    if max_gap < 0:
        raise ValueError(f"{who}: max_gap must be >= 0, got {max_gap}")
    if alpha < 0 or gate < 0:
        raise ValueError(f"{who}: need alpha >= 0 and gate >= 0, got {alpha} and {gate}")
    if min_points > max_points:
        raise ValueError(f"{who}: min_points {min_points} > max_points {max_points}")


def _check_frame(
    who: str, t: int, points: np.ndarray, clusters: np.ndarray, features: np.ndarray | None, dim: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One frame's points ``(N, >=3)``, int64 cluster ids ``(N,)`` and features ``(N, dim)`` (numpy)."""
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] < 3 or not np.issubdtype(p.dtype, np.number):
        raise ValueError(f"{who}: frame {t}: points must be a numeric (N, >=3) array, got {p.shape}")
    c = np.asarray(clusters)
    if c.shape != (len(p),) or not np.issubdtype(c.dtype, np.integer):
        raise ValueError(f"{who}: frame {t}: clusters must be integer ({len(p)},), got {c.dtype} {c.shape}")
    if len(c) and c.min() < -1:
        raise ValueError(f"{who}: frame {t}: cluster ids must be >= -1, found {c.min()}")
    if not np.isfinite(p[:, :3]).all():
        raise ValueError(f"{who}: frame {t}: points have non-finite coordinates")
    f = None
    if features is not None:
        f = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features)
        if f.ndim != 2 or len(f) != len(p) or (dim is not None and f.shape[1] != dim):
            raise ValueError(f"{who}: frame {t}: features must be ({len(p)}, {dim or 'D'}), got {f.shape}")
    return p, c.astype(np.int64, copy=False), f


class StreamingTracker:
    """The tracker of STSSL Sec. 3.1 (Eq. 1), one frame at a time; :func:`track_sequence` runs it over a
    whole sequence, and the track cache (:mod:`unsup3d.stssl.track_cache`) frame by frame, so that a
    long sequence never sits in memory. ``update`` takes a frame's points, cluster ids and optional
    per-point features and returns its points' track ids (see :func:`track_sequence`).

    It keeps the candidate tracks: id, last frame seen, last centre and last cluster feature.

    Cluster features (Eq. 1's ``D_feat``): by default the L2-normalised mean of the points' features,
    compared by cosine distance. The release's: ``pooling="max"`` (max pool per cluster), ``project``
    (a callable mapping the ``(K, D)`` pooled features to ``(K, D')``, e.g. the BYOL projection head)
    and ``feature_distance="euclidean"``.
    """

    def __init__(
        self, alpha: float = 0.5, gate: float = 5.0, min_points: int = 200, max_points: int = 20000,
        max_gap: int = 0, *, pooling: str = "mean", feature_distance: str = "cosine",
        project: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:  # fmt: skip
        _check_settings("StreamingTracker", alpha, gate, min_points, max_points, max_gap)
        if pooling not in POOLINGS or feature_distance not in FEATURE_DISTANCES:
            raise ValueError(
                f"StreamingTracker: pooling must be one of {POOLINGS} and feature_distance one of "
                f"{FEATURE_DISTANCES}, got {pooling!r} and {feature_distance!r}"
            )
        self.pooling, self.feature_distance, self.project = pooling, feature_distance, project
        self.alpha, self.gate, self.max_gap = alpha, gate, max_gap
        self.min_points, self.max_points = min_points, max_points
        self.t = 0
        self.next_id = 0
        self.ids = np.zeros(0, dtype=np.int64)
        self.seen = np.zeros(0, dtype=np.int64)
        self.centres = np.zeros((0, 3))
        self.feats: np.ndarray | None = None
        self._dim: int | None = None

    def update(
        self, points: np.ndarray, clusters: np.ndarray, features: np.ndarray | None = None
    ) -> np.ndarray:
        """Track ids (int64, ``(N,)``, -1 where the point's cluster takes no part) of the next frame."""
        p, c, f = _check_frame("StreamingTracker", self.t, points, clusters, features, self._dim)
        return self._advance(p, c, f)

    def _advance(self, points: np.ndarray, clusters: np.ndarray, features: np.ndarray | None) -> np.ndarray:
        """``update`` on a checked frame."""
        if self.t > 0 and (features is None) != (self._dim is None):
            raise ValueError(f"StreamingTracker: frame {self.t}: features given in some frames only")
        if features is not None:
            self._dim = features.shape[1]
        t = self.t
        summary = summarize_clusters(
            points, clusters, features, self.min_points, self.max_points, self.pooling
        )
        if self.project is not None and summary.features is not None and len(summary):
            projected = np.asarray(self.project(summary.features), dtype=np.float64)
            if projected.ndim != 2 or len(projected) != len(summary):
                raise ValueError(
                    f"StreamingTracker: frame {t}: project gave {projected.shape} for {len(summary)} clusters"
                )
            summary.features = projected
        alive = self.seen >= t - 1 - self.max_gap
        self.ids, self.seen, self.centres = self.ids[alive], self.seen[alive], self.centres[alive]
        if self.feats is not None:
            self.feats = self.feats[alive]
        r, c = match_clusters(
            self.centres, summary.centres, self.feats, summary.features, self.alpha, self.gate,
            self.feature_distance,
        )  # fmt: skip
        track_of = np.full(len(summary), -1, dtype=np.int64)
        track_of[c] = self.ids[r]
        new = track_of < 0
        track_of[new] = self.next_id + np.arange(int(new.sum()))
        self.next_id += int(new.sum())

        lut = np.full(int(clusters.max()) + 2 if len(clusters) else 1, -1, dtype=np.int64)
        lut[summary.ids] = track_of
        out = lut[clusters]  # id -1 (ground / noise) reads the last entry, which no cluster id reaches

        # Tracks seen now replace their old entries; the others keep theirs until the gap runs out.
        stale = ~np.isin(self.ids, track_of)
        self.ids = np.concatenate([self.ids[stale], track_of])
        self.seen = np.concatenate([self.seen[stale], np.full(len(track_of), t)])
        self.centres = np.concatenate([self.centres[stale], summary.centres])
        if summary.features is not None and len(summary):  # (projected features may change width)
            old = self.feats[stale] if self.feats is not None else np.zeros((0, summary.features.shape[1]))
            self.feats = np.concatenate([old, summary.features])
        elif self.feats is not None:
            self.feats = self.feats[stale]
        self.t += 1
        return out


def track_sequence(
    points: Sequence[np.ndarray],
    clusters: Sequence[np.ndarray],
    features: Sequence[np.ndarray] | None = None,
    alpha: float = 0.5,
    gate: float = 5.0,
    min_points: int = 200,
    max_points: int = 20000,
    *,
    max_gap: int = 0,
    pooling: str = "mean",
    feature_distance: str = "cosine",
) -> list[np.ndarray]:
    """Track clusters through a sequence (STSSL Sec. 3.1, Eq. 1): one int64 ``(N_t,)`` array a frame.

    Each point gets the id of its cluster's track, -1 where its cluster takes no part (ground, noise,
    too small or too large); the same id in two frames is the same object. Ids are consecutive from 0 in
    order of first appearance (within a frame, by cluster id).

    ``points``: ``(N_t, >=3)`` arrays, each scan in its own sensor frame (the paper) or all in one
    common frame (see :func:`to_world`); ``clusters``: int ``(N_t,)`` ids, -1 ground / noise
    (``unsup3d.stssl.ground_clusters.cluster_points``); ``features``: optional ``(N_t, D)`` per-point features
    (cluster feature: their mean, L2-normalised; ``pooling="max"`` and ``feature_distance="euclidean"``
    give the release's max pool and distance, see :class:`StreamingTracker`). The clusters of frame t
    are matched (:func:`match_clusters`) to the tracks seen in frame t-1; a matched cluster continues
    its track, an unmatched one starts a new track, and a track unmatched in a frame ends. With
    ``max_gap=N`` tracks last seen in frames t-1-N..t-2 are candidates too, with their last centre
    and feature. Every frame
    is checked before any is tracked; the frames then go through one :class:`StreamingTracker`.
    """
    _check_settings("track_sequence", alpha, gate, min_points, max_points, max_gap)
    if len(points) != len(clusters):
        raise ValueError(f"track_sequence: {len(points)} frames of points but {len(clusters)} of clusters")
    if features is not None and len(features) != len(points):
        raise ValueError(f"track_sequence: {len(points)} frames of points but {len(features)} of features")
    frames, dim = [], None
    for t in range(len(points)):
        f = None if features is None else features[t]
        frames.append(_check_frame("track_sequence", t, points[t], clusters[t], f, dim))
        dim = None if frames[-1][2] is None else frames[-1][2].shape[1]
    tracker = StreamingTracker(
        alpha, gate, min_points, max_points, max_gap, pooling=pooling, feature_distance=feature_distance
    )
    return [tracker._advance(p, c, f) for p, c, f in frames]
