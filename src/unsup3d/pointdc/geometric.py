"""Hand-made point descriptors for the teacher-free path: what a scan says about itself.

For scans with no images and no reachable 2D model (S3DIS as released, a user's own scans, offline
machines), PointDC's distillation targets and clustering features can come from the 3D data itself,
as GrowSP (Zhang et al., CVPR 2023) does with colour and PFH. :func:`point_descriptors` gives every
point a fixed-length vector, each column scaled to about ``[0, 1]`` by a fixed range (no dataset
statistics, so a scene's descriptor does not depend on the others), in named groups:

- ``color``: RGB / 255 (3);
- ``normal``: verticality ``|n_z|`` of the PCA normal (1): floors and table tops 1, walls 0;
- ``shape``: linearity, planarity and scattering of the ``k``-neighbourhood's covariance
  eigenvalues ``l1 >= l2 >= l3`` (Demantke et al. 2011): ``(l1-l2)/l1``, ``(l2-l3)/l1``, ``l3/l1`` (3);
- ``height``: height above the floor (the scene's 1st percentile of z), over 3 m, clipped (1);
- ``context``: in the vertical column of ``column`` metres around the point, the top of what stands
  there up to ``column_cap`` (2 m) above the floor and the point's height under it (both over 3 m;
  higher points do not count, so that a ceiling, which real scans often hold in patches, does not
  become every column's top), and the horizontal distance to the scan's outline over 2 m, clipped
  (3): walls stand on the outline, furniture inside it. The outline is the edge of the scan's
  footprint (``outline="footprint"``: the 10 cm cells holding points, enclosed holes filled), which
  follows a room that is not convex and ignores what a scanner saw through a door; ``"hull"``, the
  2D convex hull, was the first version's;
- ``segment`` (with super-voxels): each super-voxel's vertical extent, horizontal extent (both over
  2 m) and size (log10 of its points over 4) (3): a wall's segments are tall and wide, a cup's small.

Real scans are assumed to have z up (ScanNet, S3DIS, Matterport and most indoor scanners do), metres.
Group weights (``weights``) trade the groups off against each other for K-means.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from unsup3d.data.knn import check_points, knn_table

__all__ = [
    "DESCRIPTOR_GROUPS",
    "OUTLINES",
    "check_outline",
    "descriptor_columns",
    "floor_height",
    "footprint_area",
    "point_descriptors",
    "weight_columns",
]

#: descriptor groups and their column counts, in column order
DESCRIPTOR_GROUPS: dict[str, int] = {
    "color": 3,
    "normal": 1,
    "shape": 3,
    "height": 1,
    "context": 3,
    "segment": 3,
}
_ROOM_HEIGHT = 3.0  # metres: heights are divided by it
_OUTLINE_RANGE = 2.0  # metres: distances to the outline are divided by it
_SEGMENT_RANGE = 2.0  # metres: super-voxel extents are divided by it


def descriptor_columns(groups: tuple[str, ...] | None = None) -> dict[str, slice]:
    """Column range of each group in :func:`point_descriptors`' output (all groups, or ``groups``)."""
    out, start = {}, 0
    for name, n in DESCRIPTOR_GROUPS.items():
        if groups is None or name in groups:
            out[name] = slice(start, start + n)
            start += n
    return out


def floor_height(coord: np.ndarray) -> float:
    """The floor's height: the 1st percentile of z (robust to a few points under the floor)."""
    return float(np.percentile(coord[:, 2], 1.0))


def _eigen_features(coord: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linearity, planarity, scattering ``(N, 3)`` and the verticality ``|n_z|`` ``(N,)`` of each
    neighbourhood's covariance (eigenvalues descending; the normal is the last eigenvector)."""
    shape = np.empty((len(coord), 3), dtype=np.float32)
    vert = np.empty(len(coord), dtype=np.float32)
    pts32 = coord.astype(np.float32)
    for start in range(0, len(coord), 1 << 15):
        stop = min(start + (1 << 15), len(coord))
        pts = pts32[nbr[start:stop]]
        pts -= pts.mean(axis=1, keepdims=True)
        cov = (pts.transpose(0, 2, 1) @ pts).astype(np.float64) / nbr.shape[1]
        lam, vec = np.linalg.eigh(cov)  # ascending
        lam = np.clip(lam[:, ::-1], 0.0, None)
        l1 = np.where(lam[:, 0] > 0, lam[:, 0], 1.0)
        shape[start:stop, 0] = (lam[:, 0] - lam[:, 1]) / l1
        shape[start:stop, 1] = (lam[:, 1] - lam[:, 2]) / l1
        shape[start:stop, 2] = lam[:, 2] / l1
        vert[start:stop] = np.abs(vec[:, 2, 0])
    return shape, vert


def _column_context(
    coord: np.ndarray, height: np.ndarray, column: float, cap: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The top of each point's vertical column (cells of ``column`` metres, the 3x3 cells around it)
    and the point's depth under that top (0 above it), both in metres above the floor. With ``cap``,
    points higher than ``cap`` above the floor do not count (a ceiling would be every column's top)."""
    cell = np.floor(coord[:, :2] / column).astype(np.int64)
    cell -= cell.min(0)
    w, h = int(cell[:, 0].max()) + 3, int(cell[:, 1].max()) + 3
    top = np.zeros((w, h), dtype=np.float32)
    low = slice(None) if cap is None else height <= cap
    np.maximum.at(top, (cell[low, 0] + 1, cell[low, 1] + 1), height[low])
    # the 3x3 maximum, so a point at a cell's edge sees what stands just beside it
    padded = np.stack([np.roll(np.roll(top, dx, 0), dy, 1) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])
    top3 = padded.max(0)[cell[:, 0] + 1, cell[:, 1] + 1]
    return top3, np.clip(top3 - height, 0.0, None)


def _outline_distance(xy: np.ndarray) -> np.ndarray:
    """Horizontal distance of each point to the boundary of the scene's 2D convex hull (0 outside)."""
    try:
        hull = ConvexHull(xy)
    except (QhullError, ValueError):  # a degenerate (flat, tiny) scene has no outline
        return np.zeros(len(xy), dtype=np.float32)
    # each facet: n . x + d <= 0 inside, n a unit vector; the distance to the outline is the smallest -
    eq = hull.equations
    inside = -(xy @ eq[:, :2].T + eq[:, 2])
    return np.clip(inside.min(axis=1), 0.0, None).astype(np.float32)


def _footprint_grid(xy: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """The scan's footprint: a boolean grid of ``cell``-metre cells, True where a cell holds a point,
    with one-cell gaps closed and enclosed empty cells (occlusion holes in a floor) filled, bordered
    by empty cells; and each point's cell index ``(N, 2)`` in it."""
    ij = np.floor((xy - xy.min(0)) / cell).astype(np.int64) + 2  # a border of empty cells
    grid = np.zeros(tuple(ij.max(0) + 3), dtype=bool)
    grid[ij[:, 0], ij[:, 1]] = True
    # close one-cell gaps (sparse scans) so that they do not join a hole to the outside, then fill holes
    grid = ndimage.binary_fill_holes(ndimage.binary_closing(grid, np.ones((3, 3), dtype=bool)))
    return grid, ij


def footprint_area(coord: np.ndarray, cell: float = 0.1) -> float:
    """Area in square metres of the scan's footprint (``coord``'s x and y; the filled ``cell``-metre
    cells of :func:`_footprint_distance`'s outline): a room's floor plan with what stands on it, holes
    filled, not the convex hull. 0 for no points; ``ValueError`` for non-finite ones, as
    :func:`point_descriptors` (a NaN would index the grid anywhere)."""
    xy = check_points(coord, "footprint_area")[:, :2]
    if len(xy) == 0:
        return 0.0
    grid, _ = _footprint_grid(xy, cell)
    return float(grid.sum()) * cell * cell


def _footprint_distance(xy: np.ndarray, cell: float = 0.1) -> np.ndarray:
    """Horizontal distance of each point to the edge of the scan's footprint: the ``cell``-metre grid
    cells that hold a point, with enclosed empty cells (occlusion holes in a floor) filled. Unlike the
    convex hull, it follows a room that is not convex (an L, an alcove) and is not pushed out by
    what a scanner saw through a door. Each point gets its cell centre's distance to the nearest
    empty cell, less half a cell (0 on the edge)."""
    grid, ij = _footprint_grid(xy, cell)
    dist = ndimage.distance_transform_edt(grid) * cell
    return np.clip(dist[ij[:, 0], ij[:, 1]] - cell / 2, 0.0, None).astype(np.float32)


#: the ways of measuring the distance to the outline (``point_descriptors(outline=...)``)
OUTLINES = {"footprint": _footprint_distance, "hull": _outline_distance}


def check_outline(outline: str) -> None:
    """``ValueError`` unless ``outline`` names one of :data:`OUTLINES`."""
    if outline not in OUTLINES:
        raise ValueError(f"outline must be one of {sorted(OUTLINES)}, got {outline!r}")


def _segment_features(coord: np.ndarray, superpoint: np.ndarray) -> np.ndarray:
    """Per point: its super-voxel's vertical extent, horizontal extent (metres) and log10 size."""
    out = np.zeros((len(coord), 3), dtype=np.float32)
    valid = superpoint >= 0
    if not valid.any():
        return out
    sp = superpoint[valid]
    pts = coord[valid].astype(np.float64)
    n = int(sp.max()) + 1
    count = np.bincount(sp, minlength=n).astype(np.float64)
    zmin = np.full(n, np.inf)
    zmax = np.full(n, -np.inf)
    np.minimum.at(zmin, sp, pts[:, 2])
    np.maximum.at(zmax, sp, pts[:, 2])
    # horizontal extent: twice the standard deviation along the main horizontal axis
    c = np.maximum(count, 1.0)
    mx, my = np.bincount(sp, pts[:, 0], n) / c, np.bincount(sp, pts[:, 1], n) / c
    dx, dy = pts[:, 0] - mx[sp], pts[:, 1] - my[sp]
    sxx, syy, sxy = (np.bincount(sp, v, n) / c for v in (dx * dx, dy * dy, dx * dy))
    main = (sxx + syy) / 2 + np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    out[valid, 0] = (zmax - zmin)[sp]
    out[valid, 1] = 2.0 * np.sqrt(main)[sp]
    out[valid, 2] = np.log10(count)[sp]
    return out


def point_descriptors(
    coord: np.ndarray,
    color: np.ndarray | None = None,
    superpoint: np.ndarray | None = None,
    *,
    k: int = 16,
    column: float = 0.3,
    column_cap: float | None = 2.0,
    outline: str = "footprint",
    workers: int = 1,
) -> np.ndarray:
    """Hand-made descriptor of every point, float32 ``(N, 14)``; columns as :data:`DESCRIPTOR_GROUPS`
    (see the module docstring). ``color`` uint8 ``(N, 3)`` (None: mid-grey); ``superpoint`` int64
    ``(N,)`` (-1 none; None: the ``segment`` group is zero); ``k`` neighbours for the local shape;
    ``column`` the cell side (metres) of the vertical-column context, ``column_cap`` the height above
    the floor above which points do not count as a column's top (None: all count), ``outline`` how
    the distance to the outline is measured: ``"footprint"`` or ``"hull"`` (module docstring)."""
    check_outline(outline)
    xyz = check_points(coord, "point_descriptors").astype(np.float64)
    n = len(xyz)
    out = np.zeros((n, sum(DESCRIPTOR_GROUPS.values())), dtype=np.float32)
    cols = descriptor_columns()
    if n == 0:
        return out
    out[:, cols["color"]] = 0.5 if color is None else np.asarray(color, dtype=np.float32) / 255.0
    if n >= 3:
        nbr = knn_table(xyz, min(max(3, k), n), workers=workers)
        shape, vert = _eigen_features(xyz, nbr)
        out[:, cols["normal"]] = vert[:, None]
        out[:, cols["shape"]] = shape
    height = np.clip(xyz[:, 2] - floor_height(xyz), 0.0, None).astype(np.float32)
    out[:, cols["height"]] = np.minimum(height / _ROOM_HEIGHT, 1.0)[:, None]
    top, under = _column_context(xyz, height, column, column_cap)
    ctx = cols["context"]
    out[:, ctx.start] = np.minimum(top / _ROOM_HEIGHT, 1.0)
    out[:, ctx.start + 1] = np.minimum(under / _ROOM_HEIGHT, 1.0)
    out[:, ctx.start + 2] = np.minimum(OUTLINES[outline](xyz[:, :2]) / _OUTLINE_RANGE, 1.0)
    if superpoint is not None:
        seg = _segment_features(xyz, np.asarray(superpoint, dtype=np.int64))
        seg[:, :2] = np.minimum(seg[:, :2] / _SEGMENT_RANGE, 1.0)
        seg[:, 2] = np.minimum(seg[:, 2] / 4.0, 1.0)
        out[:, cols["segment"]] = seg
    return out


def weight_columns(descriptors: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """The descriptors with each group's columns multiplied by its weight (groups not named: 0)."""
    out = np.zeros_like(descriptors)
    for name, sl in descriptor_columns().items():
        w = float(weights.get(name, 0.0))
        if w:
            out[:, sl] = descriptors[:, sl] * w
    return out
