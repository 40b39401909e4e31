"""Neighbour graphs of point clouds on scipy's cKDTree, and PCA normals on them: shared by super-voxels
and LiDAR clustering."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = [
    "check_points",
    "components",
    "knn_table",
    "pca_normals",
    "radius_pairs",
    "relabel_first_seen",
    "smallest_eigenvector",
    "undirected_edges",
]


def check_points(points: np.ndarray, name: str, *, min_dim: int = 3) -> np.ndarray:
    """Return the xyz of an ``(N, >=min_dim)`` array as float64; raise ValueError naming ``name``."""
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] < min_dim:
        raise ValueError(f"{name}: points must be an (N, >={min_dim}) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: points must be numeric, got dtype {arr.dtype}")
    xyz = np.ascontiguousarray(arr[:, :3], dtype=np.float64)
    bad = ~np.isfinite(xyz).all(axis=1)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} of {len(xyz)} points have non-finite coordinates")
    return xyz


def knn_table(coord: np.ndarray, k: int, *, workers: int = -1) -> np.ndarray:
    """The ``k`` nearest points of every point, itself first (unless duplicated): int64 ``(N, min(k, N))``."""
    k = max(1, min(k, len(coord)))
    # An unbalanced tree builds twice as fast and queries as fast; querying in the tree's own order
    # keeps neighbouring queries in cache, almost halving the time on unordered clouds.
    tree = cKDTree(coord, balanced_tree=False, compact_nodes=False)
    order = tree.indices
    idx = np.empty((len(coord), k), dtype=np.int64)
    idx[order] = tree.query(coord[order], k=[*range(1, k + 1)], workers=workers)[1]
    return idx


def undirected_edges(nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges of a neighbour table as unique unordered pairs ``(src, dst)``, ``src < dst``, sorted."""
    n = len(nbr)
    shift = max(1, int(n - 1).bit_length())
    src = np.repeat(np.arange(n, dtype=np.int64), nbr.shape[1])
    dst = nbr.reshape(-1)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    # Self loops, and duplicates with the point itself not first, drop out with lo == hi.
    key = (lo << shift) | hi
    key = np.sort(key[lo != hi])
    # Sort and compare neighbours: numpy 2's hash-based unique is several times slower here.
    key = key[np.concatenate([[True], key[1:] != key[:-1]])]
    return key >> shift, key & ((1 << shift) - 1)


def radius_pairs(coord: np.ndarray, radius: float, *, tree: cKDTree | None = None) -> np.ndarray:
    """All unordered pairs ``(i, j)``, ``i < j``, at distance at most ``radius``: int64 ``(M, 2)``."""
    if len(coord) < 2:
        return np.empty((0, 2), dtype=np.int64)
    tree = cKDTree(coord) if tree is None else tree
    return tree.query_pairs(radius, output_type="ndarray").astype(np.int64, copy=False)


def components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component id of each of ``n`` nodes under the undirected edges ``a[i] - b[i]``."""
    # int32 data: duplicate edges are summed, and must not wrap round to zero.
    graph = coo_matrix((np.ones(len(a), dtype=np.int32), (a, b)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64, copy=False)


def relabel_first_seen(labels: np.ndarray) -> np.ndarray:
    """Map non-negative ids to 0..S-1 in order of their first point; negative ids become -1."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int64)
    valid = labels >= 0
    if not valid.any():
        return out
    uniq, first, inverse = np.unique(labels[valid], return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    out[valid] = rank[inverse]
    return out


def smallest_eigenvector(cov: np.ndarray) -> np.ndarray:
    """Unit eigenvector of the smallest eigenvalue of each symmetric ``(M, 3, 3)``, in closed form.

    Eigenvalues by the trigonometric formula (Smith 1961), the vector as the longest cross product of
    two rows of ``A - lambda I``; LAPACK's batched ``eigh`` is several times slower on 3x3 blocks and
    is kept for the rows where the closed form is ill-conditioned (two small eigenvalues alike).
    """
    a00, a01, a02, _, a11, a12, _, _, a22 = cov.reshape(-1, 9).T
    q = (a00 + a11 + a22) / 3.0
    b00, b11, b22 = a00 - q, a11 - q, a22 - q
    p = np.sqrt((b00**2 + b11**2 + b22**2 + 2.0 * (a01**2 + a02**2 + a12**2)) / 6.0)
    det = b00 * (b11 * b22 - a12**2) - a01 * (a01 * b22 - a12 * a02) + a02 * (a01 * a12 - b11 * a02)
    r = np.clip(det / (2.0 * np.where(p > 0, p, 1.0) ** 3), -1.0, 1.0)
    lam = q + 2.0 * p * np.cos(np.arccos(r) / 3.0 + 2.0 * np.pi / 3.0)
    # Rows of A - lam I; the eigenvector is orthogonal to all three.
    r0 = np.stack([a00 - lam, a01, a02], axis=1)
    r1 = np.stack([a01, a11 - lam, a12], axis=1)
    r2 = np.stack([a02, a12, a22 - lam], axis=1)
    cands = np.stack([np.cross(r0, r1), np.cross(r0, r2), np.cross(r1, r2)])
    norms = np.sqrt((cands**2).sum(axis=2))
    pick = norms.argmax(axis=0)
    rows = np.arange(len(lam))
    best = norms[pick, rows]
    vec = cands[pick, rows] / np.where(best > 0, best, 1.0)[:, None]
    # Ill-conditioned when the best cross product is tiny next to the matrix's scale squared.
    scale = np.abs(cov.reshape(-1, 9)).max(axis=1)
    weak = best <= 1e-6 * scale**2
    if weak.any():
        vec[weak] = np.linalg.eigh(cov[weak])[1][:, :, 0]
    return vec


def pca_normals(coord: np.ndarray, nbr: np.ndarray, viewpoint: np.ndarray | None) -> np.ndarray:
    """Unit normal of each point: the smallest-variance direction of its neighbourhood ``nbr`` (N, k).

    Oriented towards ``viewpoint`` when given, else with a non-negative z component.
    """
    normals = np.empty((len(coord), 3), dtype=np.float64)
    # float32 halves the traffic of the (N, k, 3) gather; centring first keeps the precision.
    pts32 = coord.astype(np.float32)
    for start in range(0, len(coord), 1 << 16):
        stop = min(start + (1 << 16), len(coord))
        pts = pts32[nbr[start:stop]]
        pts -= pts.mean(axis=1, keepdims=True)
        cov = (pts.transpose(0, 2, 1) @ pts).astype(np.float64)
        normals[start:stop] = smallest_eigenvector(cov)
    # PCA leaves the sign free: point to the viewpoint when there is one, else upwards, so the
    # output is reproducible.
    facing = (viewpoint - coord) if viewpoint is not None else np.array([0.0, 0.0, 1.0])
    flip = (normals * facing).sum(axis=1) < 0
    normals[flip] *= -1
    return normals
