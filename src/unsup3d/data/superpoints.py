"""Super-voxels of bare point clouds: the segments that PointDC's Eq. 6 and Eq. 10 pool over.

ScanNet ships its own (the mesh segmentation ``*.segs.json``, read by ``unsup3d.data.formats``); every
other scene (S3DIS, scene folders) gets a Felzenszwalb-Huttenlocher segmentation (PointDC ref. [9]) of
its k-NN graph here, with edge weights from normal angle, colour and, optionally, distance.

FH (Felzenszwalb & Huttenlocher 2004) goes once over the edges in increasing weight and joins components
``C1``, ``C2`` when the weight is at most ``min(Int(C1) + c/|C1|, Int(C2) + c/|C2|)`` (``Int``: the largest
edge merged inside), then joins components under ``min_size`` points to a neighbour in a second pass.
That loop is sequential; ``method="rounds"`` (the default) gives the same segmentation in vectorised
numpy rounds (see ``_fh_rounds``), ``method="sequential"`` is the plain loop, kept as the reference.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from unsup3d.data.knn import (
    check_points,
    components,
    knn_table,
    pca_normals,
    relabel_first_seen,
    undirected_edges,
)

__all__ = [
    "estimate_normals",
    "felzenszwalb_superpoints",
    "superpoint_purity",
    "superpoint_stats",
    "voxel_superpoints",
]


def estimate_normals(
    points: np.ndarray, k: int = 16, *, viewpoint: np.ndarray | None = None, workers: int = -1
) -> np.ndarray:
    """Unit normals ``(N, 3)`` float32 by PCA of each point's ``k`` nearest neighbours (itself included).

    Oriented towards ``viewpoint`` when given, else with a non-negative z component.
    """
    coord = check_points(points, "estimate_normals")
    if len(coord) < 3:
        raise ValueError(f"estimate_normals: need at least 3 points, got {len(coord)}")
    nbr = knn_table(coord, max(3, k), workers=workers)
    vp = None if viewpoint is None else np.asarray(viewpoint, dtype=np.float64).reshape(3)
    return pca_normals(coord, nbr, vp).astype(np.float32)


def _edge_weights(
    coord: np.ndarray,
    color: np.ndarray | None,
    normal: np.ndarray | None,
    src: np.ndarray,
    dst: np.ndarray,
    weights: tuple[float, float, float],
) -> np.ndarray:
    """``w_n (1 - |n_i . n_j|) + w_c |c_i - c_j| / (255 sqrt 3) + w_d |p_i - p_j|`` per edge, float32."""
    w_normal, w_color, w_dist = weights
    out = np.zeros(len(src), dtype=np.float32)
    for start in range(0, len(src), 1 << 20):
        s, d = src[start : start + (1 << 20)], dst[start : start + (1 << 20)]
        w = np.zeros(len(s), dtype=np.float32)
        if normal is not None and w_normal:
            cos = np.abs((normal[s] * normal[d]).sum(axis=1))
            w += w_normal * (1.0 - np.minimum(cos, 1.0))
        if color is not None and w_color:
            w += (w_color / (255.0 * np.sqrt(3.0))) * np.linalg.norm(color[s] - color[d], axis=1)
        if w_dist:
            w += w_dist * np.linalg.norm(coord[s] - coord[d], axis=1).astype(np.float32)
        out[start : start + len(s)] = w
    return out


_NONE = np.iinfo(np.int64).max
# Edges looked at per band of the vectorised pass: a speed setting only, the result does not change.
_BAND_EDGES = 1 << 14


def _edge_order(w: np.ndarray) -> np.ndarray:
    """Edges by increasing float32 weight, ties by index: a stable argsort, via one int64 sort."""
    # A non-negative float32's bits order like the float; the index in the low bits breaks ties.
    # numpy's int64 sort is several times faster than a stable argsort of the floats.
    key = (np.asarray(w, dtype=np.float32).view(np.int32).astype(np.int64) << 32) | np.arange(len(w))
    key.sort()
    return key & 0xFFFFFFFF


class _Forest:
    """Union-find over the points, vectorised: roots hold each component's size and Int (FH's MST max)."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.float64)
        self.internal = np.zeros(n, dtype=np.float64)
        self._best = np.full(n, _NONE, dtype=np.int64)
        self._lightest = np.full(n, np.inf)
        self._count = np.zeros(n, dtype=np.int32)
        self._mark = np.zeros(n, dtype=bool)

    def find(self, x: np.ndarray) -> np.ndarray:
        """Roots of ``x``, compressing their paths."""
        root = self.parent[x]
        while True:
            up = self.parent[root]
            if np.array_equal(up, root):
                self.parent[x] = root
                return root
            root = up

    def first(self, ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
        """``(E, 2)`` flags: is edge ``i`` the first undecided edge of root ``ea[i]``, of ``eb[i]``."""
        ends = np.stack([ea, eb], axis=1).reshape(-1)
        slot = np.arange(len(ends), dtype=np.int64)
        np.minimum.at(self._best, ends, slot)
        flag = self._best[ends] == slot
        self._best[ends] = _NONE
        return flag.reshape(-1, 2)

    def lightest(self, ea: np.ndarray, eb: np.ndarray, w: np.ndarray) -> np.ndarray:
        """``(E, 2)`` flags: is edge ``i`` of the lightest weight among the edges of ``ea[i]``, ``eb[i]``."""
        ends = np.stack([ea, eb], axis=1).reshape(-1)
        both = np.repeat(w, 2)
        np.minimum.at(self._lightest, ends, both)
        flag = self._lightest[ends] == both
        self._lightest[ends] = np.inf
        return flag.reshape(-1, 2)

    def union(self, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        """Join roots ``a[i]`` and ``b[i]`` over edges of weight ``w[i]``, all the largest so far."""
        if not len(a):
            return
        ends = np.concatenate([a, b])
        np.add.at(self._count, ends, 1)
        shared = (self._count[ends] > 1).any()
        self._count[ends] = 0
        if not shared:
            # A matching (no equal weights at a root): join pairs, the larger side as the root so
            # that ``find`` stays short.
            swap = self.size[a] < self.size[b]
            a, b = np.where(swap, b, a), np.where(swap, a, b)
            self.parent[b] = a
            self.size[a] += self.size[b]
            self.internal[a] = w
            return
        roots, inverse = np.unique(ends, return_inverse=True)
        group = components(len(roots), inverse[: len(a)], inverse[len(a) :])
        count = int(group.max()) + 1
        # The largest root (then the highest id) of a group becomes its root.
        packed = (self.size[roots].astype(np.int64) << 32) | roots
        head = np.zeros(count, dtype=np.int64)
        np.maximum.at(head, group, packed)
        head &= 0xFFFFFFFF
        internal = np.zeros(count, dtype=np.float64)
        np.maximum.at(internal, group[inverse[: len(a)]], w)
        self.size[head] = np.bincount(group, weights=self.size[roots], minlength=count)
        # The joining edges are the heaviest so far: they are the new Int.
        self.internal[head] = internal
        self.parent[roots] = head[group]

    def touching(self, ea: np.ndarray, eb: np.ndarray, roots: np.ndarray) -> np.ndarray:
        """Flags of the edges with an end in ``roots``."""
        self._mark[roots] = True
        hit = self._mark[ea] | self._mark[eb]
        self._mark[roots] = False
        return hit


def _fh_rounds(
    n: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray, c: float, min_size: int
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher, exactly, in vectorised rounds instead of one edge at a time.

    The sequential pass decides an edge from the two components it joins, and only lighter edges
    touching those can change them. So each round decides at once every edge whose weight is the
    lightest undecided one at both ends: it joins them when it passes both thresholds
    ``Int + c/|C|`` (equal weights can be joined together: once a component grows over an edge of
    weight ``w`` its threshold exceeds ``w``). A component whose lightest undecided edge fails its own
    threshold can never change again, and all its edges are dropped. In the ``min_size`` pass an
    edge is taken when it comes first at a side under ``min_size`` and the other side is large (it
    cannot shrink), or first at both sides when both are small. Edges go in weight-sorted bands to
    keep each round's arrays short.
    """
    order = _edge_order(w)
    src, dst, w = src[order], dst[order], w[order].astype(np.float64)
    forest = _Forest(n)
    parent, size, internal = forest.parent, forest.size, forest.internal
    for post_pass in (False, True):
        for lo in range(0, len(w), _BAND_EDGES):
            pos = np.arange(lo, min(lo + _BAND_EDGES, len(w)))
            ends = forest.find(np.concatenate([src[pos], dst[pos]]))
            ea, eb = ends[: len(pos)], ends[len(pos) :]
            while True:
                live = ea != eb
                if post_pass:
                    live &= (size[ea] < min_size) | (size[eb] < min_size)
                ea, eb, pos = ea[live], eb[live], pos[live]
                if not len(pos):
                    break
                if post_pass:
                    first = forest.first(ea, eb)
                    small_a, small_b = size[ea] < min_size, size[eb] < min_size
                    take_a = first[:, 0] & small_a & (~small_b | first[:, 1])
                    take_b = first[:, 1] & small_b & ~small_a
                    child = np.concatenate([ea[take_a], eb[take_b]])
                    into = np.concatenate([eb[take_a], ea[take_b]])
                    grown = size[child].copy()
                    parent[child] = into
                    np.add.at(size, into, grown)
                else:
                    weight = w[pos]
                    first = forest.lightest(ea, eb, weight)
                    fails_a = first[:, 0] & (weight > internal[ea] + c / size[ea])
                    fails_b = first[:, 1] & (weight > internal[eb] + c / size[eb])
                    done = forest.touching(ea, eb, np.concatenate([ea[fails_a], eb[fails_b]]))
                    take = first[:, 0] & first[:, 1] & ~done
                    forest.union(ea[take], eb[take], weight[take])
                    ea, eb, pos = ea[~done], eb[~done], pos[~done]
                ea, eb = parent[ea], parent[eb]
    return forest.find(np.arange(n, dtype=np.int64))


def _fh_sequential(
    n: int, src: np.ndarray, dst: np.ndarray, w: np.ndarray, c: float, min_size: int
) -> np.ndarray:
    """Felzenszwalb-Huttenlocher (2004) as published: one sequential pass over the sorted edges."""
    order = _edge_order(w)
    s_list, d_list, w_list = src[order].tolist(), dst[order].tolist(), w[order].astype(np.float64).tolist()
    parent = list(range(n))
    size = [1] * n
    threshold = [c] * n

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> int:
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        return a

    for a, b, weight in zip(s_list, d_list, w_list):
        a, b = find(a), find(b)
        if a != b and weight <= threshold[a] and weight <= threshold[b]:
            # Edges come sorted, so this one is the new largest inside the merged component.
            root = union(a, b)
            threshold[root] = weight + c / size[root]
    for a, b in zip(s_list, d_list):
        a, b = find(a), find(b)
        if a != b and (size[a] < min_size or size[b] < min_size):
            union(a, b)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def felzenszwalb_superpoints(
    coord: np.ndarray,
    color: np.ndarray | None = None,
    normal: np.ndarray | None = None,
    *,
    k: int = 10,
    c: float = 0.1,
    min_size: int = 20,
    normal_weight: float = 1.0,
    color_weight: float = 1.0,
    distance_weight: float = 0.0,
    normal_k: int = 16,
    method: Literal["rounds", "sequential"] = "rounds",
    workers: int = -1,
) -> np.ndarray:
    """Super-voxel id (int64, 0..S-1) per point: FH graph segmentation (PointDC ref. [9]) of the k-NN graph.

    ``coord`` (N, 3) metres; ``color`` (N, 3) in 0-255 or None; ``normal`` (N, 3) unit normals, or None
    to estimate them from ``normal_k`` neighbours. Edge weight (ScanNet's segmentator uses the normal
    term alone): ``normal_weight * (1 - |n_i . n_j|) + color_weight * |c_i - c_j| / (255 sqrt 3)
    + distance_weight * |p_i - p_j|``. ``c`` is FH's scale (larger: bigger segments); segments under
    ``min_size`` points join their lightest neighbour. Ids are numbered by each segment's first point.
    """
    xyz = check_points(coord, "felzenszwalb_superpoints")
    n = len(xyz)
    if method not in ("rounds", "sequential"):
        raise ValueError(f"felzenszwalb_superpoints: method must be 'rounds' or 'sequential', got {method!r}")
    if c <= 0 or k < 1 or min(normal_weight, color_weight, distance_weight) < 0:
        raise ValueError("felzenszwalb_superpoints: need c > 0, k >= 1 and non-negative weights")
    for name, arr in (("color", color), ("normal", normal)):
        if arr is not None and np.shape(arr) != (n, 3):
            raise ValueError(f"felzenszwalb_superpoints: {name} must be ({n}, 3), got {np.shape(arr)}")
        if arr is not None and not np.isfinite(arr).all():
            raise ValueError(f"felzenszwalb_superpoints: {name} has non-finite values")
    if n < 2:
        return np.zeros(n, dtype=np.int64)
    need_normals = normal is None and normal_weight > 0 and n >= 3
    # One neighbour query serves both the normals and the graph.
    nbr = knn_table(xyz, max(k + 1, normal_k if need_normals else 0), workers=workers)
    if need_normals:
        normal = pca_normals(xyz, nbr[:, : max(3, normal_k)], None)
    src, dst = undirected_edges(nbr[:, : k + 1])
    nrm = None if normal is None else np.asarray(normal, dtype=np.float32)
    col = None if color is None else np.asarray(color, dtype=np.float32)
    w = _edge_weights(xyz, col, nrm, src, dst, (normal_weight, color_weight, distance_weight))
    segment = (
        _fh_rounds(n, src, dst, w, c, min_size)
        if method == "rounds"
        else _fh_sequential(n, src, dst, w, c, min_size)
    )
    return relabel_first_seen(segment)


def voxel_superpoints(coord: np.ndarray, size: float) -> np.ndarray:
    """Fallback super-voxels: the occupied cells of a regular grid of ``size`` metres, ids 0..S-1."""
    xyz = check_points(coord, "voxel_superpoints")
    if size <= 0:
        raise ValueError(f"voxel_superpoints: size must be positive, got {size}")
    if len(xyz) == 0:
        return np.empty(0, dtype=np.int64)
    cell = np.floor((xyz - xyz.min(axis=0)) / size).astype(np.int64)
    _, inverse = np.unique(cell, axis=0, return_inverse=True)
    return relabel_first_seen(inverse.reshape(-1))


def _check_pair(superpoint: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    sp, lab = np.asarray(superpoint), np.asarray(labels)
    if sp.shape != lab.shape or sp.ndim != 1:
        raise ValueError(
            f"{name}: superpoint and labels must be 1-d of one length, got {sp.shape}, {lab.shape}"
        )
    if not (np.issubdtype(sp.dtype, np.integer) and np.issubdtype(lab.dtype, np.integer)):
        raise ValueError(f"{name}: superpoint and labels must be integer, got {sp.dtype}, {lab.dtype}")
    return sp.astype(np.int64), lab.astype(np.int64)


def superpoint_purity(superpoint: np.ndarray, labels: np.ndarray, ignore_index: int = -1) -> float:
    """Share of labelled points whose super-voxel's majority class is their own (NaN when none counts).

    Points with ``labels == ignore_index`` or super-voxel -1 are left out, also from the majorities.
    """
    sp, lab = _check_pair(superpoint, labels, "superpoint_purity")
    valid = (sp >= 0) & (lab != ignore_index)
    if not valid.any():
        return float("nan")
    sp, lab = sp[valid], lab[valid]
    lab = lab - lab.min()
    pair, count = np.unique(sp * (int(lab.max()) + 1) + lab, return_counts=True)
    owner = pair // (int(lab.max()) + 1)
    # Pairs come sorted by super-voxel: the largest count of each run is its majority.
    starts = np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))
    return float(np.maximum.reduceat(count, starts).sum() / len(sp))


def superpoint_stats(superpoint: np.ndarray, labels: np.ndarray, ignore_index: int = -1) -> dict[str, float]:
    """``purity`` (see ``superpoint_purity``), ``count`` of super-voxels and their ``mean_size`` in points."""
    sp, _ = _check_pair(superpoint, labels, "superpoint_stats")
    assigned = sp[sp >= 0]
    count = len(np.unique(assigned))
    return {
        "purity": superpoint_purity(superpoint, labels, ignore_index),
        "count": count,
        "mean_size": float(len(assigned) / count) if count else 0.0,
    }
