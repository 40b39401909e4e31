"""Ground removal and clustering of LiDAR frames: the segments of STSSL Sec. 3.1.

STSSL's release clusters each frame with SegContrast's ``clusterize_pcd``: Open3D
``segment_plane(distance_threshold=0.25, ransac_n=3, num_iterations=200)`` removes the ground, Open3D
``cluster_dbscan(eps=0.25, min_points=10)`` clusters the rest, and the 50 largest clusters are kept.
This module does the same in numpy/scipy, with these differences:

- RANSAC draws its samples from ``numpy.random.default_rng(seed)``, not Open3D's mt19937, so the
  chosen plane differs from Open3D's for the same seed; the rule is the same (most inliers, ties to the
  smaller inlier error, strict ``distance < threshold``, degenerate samples skipped, the returned
  inliers are those of the RANSAC plane). ``refit=True`` adds a least-squares refit on the inliers.
- DBSCAN is an exact re-implementation of scikit-learn's (``min_points`` counts the point itself,
  border points join the first cluster that reaches them), faster than ``sklearn.cluster.DBSCAN``.
- Kept clusters are relabelled 0..K-1 by decreasing size (SegContrast keeps DBSCAN's ids), ties
  broken by the cluster's first point, so that ids are reproducible.
"""

from __future__ import annotations

import numpy as np

from unsup3d.data.knn import check_points, components, radius_pairs

__all__ = ["cluster_points", "dbscan", "fit_ground_plane", "keep_largest", "remove_ground"]

# Points scored per block in RANSAC: (block, planes) float32 stays in cache.
_RANSAC_BLOCK = 2048


def _candidate_planes(xyz: np.ndarray, num_iterations: int, seed: int) -> np.ndarray:
    """Planes ``(P, 4)`` through random point triples; repeated or collinear triples are skipped."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(xyz), size=(num_iterations, 3))
    p0, p1, p2 = xyz[idx[:, 0]], xyz[idx[:, 1]], xyz[idx[:, 2]]
    normal = np.cross(p1 - p0, p2 - p0)
    length = np.linalg.norm(normal, axis=1)
    ok = length > 1e-12 * np.maximum(1.0, np.abs(xyz).max()) ** 2
    normal = normal[ok] / length[ok, None]
    return np.concatenate([normal, -(normal * p0[ok]).sum(1, keepdims=True)], axis=1)


def _inlier_counts(xyz: np.ndarray, planes: np.ndarray, threshold: float) -> np.ndarray:
    """Inliers of every candidate plane at once, over blocks of points."""
    # Centre before float32 so that 80 m ranges keep millimetre precision.
    centre = xyz.mean(axis=0)
    pts = (xyz - centre).astype(np.float32)
    normals = planes[:, :3].T.astype(np.float32)
    offsets = (planes[:, 3] + planes[:, :3] @ centre).astype(np.float32)
    counts = np.zeros(len(planes), dtype=np.int64)
    dist = np.empty((_RANSAC_BLOCK, len(planes)), dtype=np.float32)
    term = np.empty_like(dist)
    for start in range(0, len(pts), _RANSAC_BLOCK):
        block = pts[start : start + _RANSAC_BLOCK]
        d, t = dist[: len(block)], term[: len(block)]
        # Three broadcast multiply-adds, not a (block, 3) x (3, planes) matmul: BLAS threads on such
        # thin products are slower, and far slower on a busy machine.
        np.multiply(block[:, :1], normals[0], out=d)
        for axis in (1, 2):
            np.multiply(block[:, axis : axis + 1], normals[axis], out=t)
            d += t
        d += offsets
        np.abs(d, out=d)
        counts += np.count_nonzero(d < threshold, axis=0)
    return counts


def fit_ground_plane(
    points: np.ndarray,
    distance_threshold: float = 0.25,
    num_iterations: int = 200,
    seed: int = 0,
    *,
    refit: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC plane (STSSL Sec. 3.1, after SegContrast): ``(plane (4,) as a, b, c, d; inlier mask)``.

    The plane maximises the inlier count (points closer than ``distance_threshold``), ties going to
    the smaller summed inlier distance, as Open3D's ``segment_plane``. With ``refit`` the plane is
    refitted by least squares on its inliers and the mask recomputed from the refitted plane.
    Fewer than 3 points, or only degenerate samples, give an all-False mask and a zero plane.
    """
    xyz = check_points(points, "fit_ground_plane")
    if distance_threshold <= 0 or num_iterations < 1:
        raise ValueError(
            f"fit_ground_plane: need distance_threshold > 0 and num_iterations >= 1, "
            f"got {distance_threshold} and {num_iterations}"
        )
    none = (np.zeros(4), np.zeros(len(xyz), dtype=bool))
    if len(xyz) < 3:
        return none
    planes = _candidate_planes(xyz, num_iterations, seed)
    if len(planes) == 0:
        return none
    counts = _inlier_counts(xyz, planes, distance_threshold)
    tied = np.flatnonzero(counts == counts.max())
    if len(tied) > 1:
        error = np.empty(len(tied))
        for i, plane in enumerate(planes[tied]):  # ties are few on real scans, many on exact planes
            dist = np.abs(xyz @ plane[:3] + plane[3])
            error[i] = dist[dist < distance_threshold].sum()
        tied = tied[np.argsort(error, kind="stable")]
    plane = planes[tied[0]]
    mask = np.abs(xyz @ plane[:3] + plane[3]) < distance_threshold
    if refit and mask.sum() >= 3:
        centre = xyz[mask].mean(axis=0)
        normal = np.linalg.svd(xyz[mask] - centre, full_matrices=False)[2][2]
        plane = np.append(normal, -normal @ centre)
        mask = np.abs(xyz @ plane[:3] + plane[3]) < distance_threshold
    return plane, mask


def remove_ground(
    points: np.ndarray,
    distance_threshold: float = 0.25,
    num_iterations: int = 200,
    seed: int = 0,
    *,
    refit: bool = False,
) -> np.ndarray:
    """Bool mask of ground points of an ``(N, >=3)`` frame: the RANSAC plane's inliers (STSSL Sec. 3.1)."""
    return fit_ground_plane(points, distance_threshold, num_iterations, seed, refit=refit)[1]


def dbscan(xyz: np.ndarray, eps: float, min_points: int) -> np.ndarray:
    """DBSCAN (Ester et al. 1996, STSSL's clusterer) labels, -1 for noise; identical to scikit-learn's.

    A point is core when at least ``min_points`` points (itself included) lie within ``eps``; clusters
    are the connected components of core points, numbered by their first core point; a border point
    takes the smallest cluster id among its core neighbours, the cluster that reaches it first in
    scikit-learn's scan.
    """
    xyz = check_points(xyz, "dbscan")
    if eps <= 0 or min_points < 1:
        raise ValueError(f"dbscan: need eps > 0 and min_points >= 1, got {eps} and {min_points}")
    n = len(xyz)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    pairs = radius_pairs(xyz, eps)
    core = np.bincount(pairs.ravel(), minlength=n) + 1 >= min_points
    core_idx = np.flatnonzero(core)
    if len(core_idx) == 0:
        return labels
    both = core[pairs[:, 0]] & core[pairs[:, 1]]
    comp = components(n, pairs[both, 0], pairs[both, 1])[core_idx]
    # Number the components by their first core point, as scikit-learn's scan in index order does.
    uniq, first, inverse = np.unique(comp, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    labels[core_idx] = rank[inverse]
    # Border points: non-core points with a core neighbour.
    mixed = pairs[core[pairs[:, 0]] != core[pairs[:, 1]]]
    swap = core[mixed[:, 0]]
    border = np.where(swap, mixed[:, 1], mixed[:, 0])
    via = labels[np.where(swap, mixed[:, 0], mixed[:, 1])]
    best = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, border, via)
    reached = ~core & (best < np.iinfo(np.int64).max)
    labels[reached] = best[reached]
    return labels


def keep_largest(labels: np.ndarray, max_clusters: int | None) -> np.ndarray:
    """Keep the ``max_clusters`` largest clusters, relabelled 0..K-1 by decreasing size; others -1.

    Ties in size go to the cluster whose first point comes first; ``None`` keeps every cluster.
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(labels.shape, -1, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    uniq, first, inverse, sizes = np.unique(
        labels[valid], return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -sizes))
    if max_clusters is not None:
        order = order[: max(int(max_clusters), 0)]
    rank = np.full(len(uniq), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    out[valid] = rank[inverse]
    return out


def cluster_points(
    points: np.ndarray,
    eps: float = 0.25,
    min_points: int = 10,
    max_clusters: int = 50,
    *,
    ground: np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Cluster id (int64) per point of an ``(N, >=3)`` frame, -1 for ground and noise (STSSL Sec. 3.1).

    The ground is removed by ``remove_ground`` with its defaults (and ``seed``) unless a precomputed
    bool ``ground`` mask is given; DBSCAN(``eps``, ``min_points``) clusters the rest and the
    ``max_clusters`` largest clusters are kept, numbered 0..K-1 by decreasing size.
    """
    xyz = check_points(points, "cluster_points")
    if ground is None:
        ground = remove_ground(xyz, seed=seed)
    else:
        ground = np.asarray(ground)
        if ground.dtype != bool or ground.shape != (len(xyz),):
            raise ValueError(
                f"cluster_points: ground must be a bool mask of shape ({len(xyz)},), "
                f"got {ground.dtype} {ground.shape}"
            )
    labels = np.full(len(xyz), -1, dtype=np.int64)
    rest = np.flatnonzero(~ground)
    labels[rest] = keep_largest(dbscan(xyz[rest], eps, min_points), max_clusters)
    return labels
