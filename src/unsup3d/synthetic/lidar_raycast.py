"""Sensor model of the synthetic LiDAR: a spinning multi-beam scanner cast against analytic primitives.

Every primitive is a vertical-axis shape turned about z only (a box, a capped cylinder or an
ellipsoid), which is all a street scene needs and keeps each intersection closed-form. Rays form a
grid of beams (rows, top to bottom) by azimuth steps (columns); each primitive is tested only against
the window of rows and columns its bounding box can cover, so the cost follows the primitive's size
on the sphere of directions rather than the scan size, with no Python loop over rays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
_EPS = 1e-6


def beam_elevations(beams: int = 64, fov_up: float = 2.0, fov_down: float = -24.8) -> np.ndarray:
    """Elevation of each beam in radians, top to bottom, laid out like a Velodyne HDL-64E.

    The HDL-64E has two blocks of 32 lasers: the upper one spans +2 to -8.33 degrees at about 1/3
    degree spacing, the lower one -8.83 to -24.8 at about 1/2 degree; other counts and fields of view
    keep those proportions.
    """
    if beams < 2 or fov_up <= fov_down:
        raise ValueError(f"need beams >= 2 and fov_up > fov_down, got {beams}, {fov_up}, {fov_down}")
    span = fov_up - fov_down
    upper = beams // 2
    split = fov_up - span * (10.33 / 26.8)
    gap = span * (0.5 / 26.8)
    top = np.linspace(fov_up, split, upper)
    bottom = np.linspace(split - gap, fov_down, beams - upper)
    return np.radians(np.concatenate([top, bottom]))


@dataclass(frozen=True)
class RayGrid:
    """Directions of one sweep: ``elevation`` (B,) radians, descending; column j at world azimuth
    ``azimuth0 + 2 pi j / columns`` (counter-clockwise, the order a Velodyne writes its points)."""

    elevation: np.ndarray
    azimuth0: float
    columns: int

    @property
    def step(self) -> float:
        return 2.0 * np.pi / self.columns

    def azimuths(self) -> np.ndarray:
        return self.azimuth0 + self.step * np.arange(self.columns)

    def directions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Unit direction components ``(dx, dy, dz)``, each ``(B, A)``."""
        az = self.azimuths()[None, :]
        ce = np.cos(self.elevation)[:, None]
        dz = np.broadcast_to(np.sin(self.elevation)[:, None], (len(self.elevation), self.columns))
        return ce * np.cos(az), ce * np.sin(az), np.ascontiguousarray(dz)


@dataclass(frozen=True)
class Primitives:
    """Shapes in the world frame: ``kind`` (P,) of BOX / CYLINDER / ELLIPSOID, ``centre`` (P, 3),
    ``half`` (P, 3) half extents (box), ``(r, r, half height)`` (cylinder) or radii (ellipsoid), and
    ``yaw`` (P,) rotation about z."""

    kind: np.ndarray
    centre: np.ndarray
    half: np.ndarray
    yaw: np.ndarray

    def __len__(self) -> int:
        return len(self.kind)


def _hit_box(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, h: np.ndarray) -> np.ndarray:
    # Slab method in the box frame; the sensor is never inside a box, so only the entry distance counts.
    tmin = np.zeros(dx.shape)
    tmax = np.full(dx.shape, np.inf)
    for oc, dc, hc in ((o[0], dx, h[0]), (o[1], dy, h[1]), (o[2], dz, h[2])):
        inv = 1.0 / np.where(np.abs(dc) < 1e-12, 1e-12, dc)
        t1 = (-hc - oc) * inv
        t2 = (hc - oc) * inv
        np.maximum(tmin, np.minimum(t1, t2), out=tmin)
        np.minimum(tmax, np.maximum(t1, t2), out=tmax)
    return np.where((tmax >= tmin) & (tmin > _EPS), tmin, np.inf)


def _hit_cylinder(o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, h: np.ndarray) -> np.ndarray:
    r, hz = h[0], h[2]
    a = dx * dx + dy * dy
    b = 2.0 * (o[0] * dx + o[1] * dy)
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = (-b - np.sqrt(disc)) / (2.0 * a)
    z = o[2] + ts * dz
    t = np.where((disc >= 0) & (a > 1e-12) & (ts > _EPS) & (np.abs(z) <= hz), ts, np.inf)
    if abs(o[2]) > hz:  # the sensor is above (or below) the cylinder: its cap can be the first hit
        cap = hz if o[2] > 0 else -hz
        with np.errstate(divide="ignore", invalid="ignore"):
            tc = (cap - o[2]) / dz
        xc = o[0] + tc * dx
        yc = o[1] + tc * dy
        t = np.where((tc > _EPS) & (xc * xc + yc * yc <= r * r), np.minimum(t, tc), t)
    return t


def _hit_ellipsoid(
    o: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, h: np.ndarray
) -> np.ndarray:
    # Scaling space by 1/radii maps the ellipsoid to the unit sphere and keeps the ray parameter t.
    ox, oy, oz = o / h
    ux, uy, uz = dx / h[0], dy / h[1], dz / h[2]
    a = ux * ux + uy * uy + uz * uz
    b = 2.0 * (ox * ux + oy * uy + oz * uz)
    c = ox * ox + oy * oy + oz * oz - 1.0
    disc = b * b - 4.0 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2.0 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


_HIT = {BOX: _hit_box, CYLINDER: _hit_cylinder, ELLIPSOID: _hit_ellipsoid}


def _windows(origin: np.ndarray, grid: RayGrid, prims: Primitives, max_range: float) -> list[tuple]:
    """For each primitive in range: ``(index, row0, row1, [(col0, col1), ...])`` of the rays it may hit."""
    c, s = np.cos(prims.yaw), np.sin(prims.yaw)
    hx, hy, hz = prims.half.T
    rx = origin[0] - prims.centre[:, 0]
    ry = origin[1] - prims.centre[:, 1]
    qx, qy = c * rx + s * ry, -s * rx + c * ry  # sensor in each primitive's frame
    dmin = np.hypot(np.maximum(np.abs(qx) - hx, 0.0), np.maximum(np.abs(qy) - hy, 0.0))
    dmax = np.hypot(np.abs(qx) + hx, np.abs(qy) + hy)
    zlo = prims.centre[:, 2] - hz - origin[2]
    zhi = prims.centre[:, 2] + hz - origin[2]
    el_hi = np.arctan2(zhi, np.where(zhi > 0, dmin, dmax))
    el_lo = np.arctan2(zlo, np.where(zlo < 0, dmin, dmax))
    neg = -grid.elevation  # ascending
    row0 = np.searchsorted(neg, -el_hi - 1e-9, side="left")
    row1 = np.searchsorted(neg, -el_lo + 1e-9, side="right")

    # Azimuth span of the footprint's corners: exact for a convex footprint seen from outside.
    sx = np.array([1.0, 1.0, -1.0, -1.0])[None, :] * hx[:, None]
    sy = np.array([1.0, -1.0, 1.0, -1.0])[None, :] * hy[:, None]
    cx = prims.centre[:, 0:1] + c[:, None] * sx - s[:, None] * sy - origin[0]
    cy = prims.centre[:, 1:2] + s[:, None] * sx + c[:, None] * sy - origin[1]
    ac = np.arctan2(prims.centre[:, 1] - origin[1], prims.centre[:, 0] - origin[0])
    delta = np.mod(np.arctan2(cy, cx) - ac[:, None] + np.pi, 2 * np.pi) - np.pi
    lo = ac + delta.min(axis=1)
    width = delta.max(axis=1) - delta.min(axis=1)
    u0 = np.mod(lo - grid.azimuth0, 2 * np.pi) / grid.step
    col0 = np.floor(u0).astype(np.int64)
    ncol = np.floor(u0 + width / grid.step).astype(np.int64) - col0 + 2
    full = (dmin <= 0.0) | (ncol >= grid.columns)

    keep = np.flatnonzero((dmin < max_range) & (row1 > row0))
    out = []
    A = grid.columns
    for i in keep:
        if full[i]:
            spans = [(0, A)]
        else:
            a0 = int(col0[i]) % A
            a1 = a0 + int(ncol[i])
            spans = [(a0, a1)] if a1 <= A else [(a0, A), (0, a1 - A)]
        out.append((int(i), int(row0[i]), int(row1[i]), spans))
    return out


def cast_rays(
    origin: np.ndarray,
    grid: RayGrid,
    prims: Primitives,
    t_init: np.ndarray,
    max_range: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of every ray of ``grid`` from ``origin`` (world frame).

    ``t_init`` (B, A) is the distance already found (the ground, or inf); returns the distance
    ``t`` (B, A) and the index of the primitive hit (-1 where ``t_init`` stands).
    """
    dx, dy, dz = grid.directions()
    t = np.array(t_init, dtype=np.float64, copy=True)
    index = np.full(t.shape, -1, dtype=np.int64)
    for i, r0, r1, spans in _windows(origin, grid, prims, max_range):
        c, s = np.cos(prims.yaw[i]), np.sin(prims.yaw[i])
        rel = origin - prims.centre[i]
        o = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
        hit = _HIT[int(prims.kind[i])]
        for a0, a1 in spans:
            wx, wy, wz = dx[r0:r1, a0:a1], dy[r0:r1, a0:a1], dz[r0:r1, a0:a1]
            ti = hit(o, c * wx + s * wy, -s * wx + c * wy, wz, prims.half[i])
            cur = t[r0:r1, a0:a1]  # a view: updated in place
            better = ti < cur
            if better.any():
                cur[better] = ti[better]
                index[r0:r1, a0:a1][better] = i
    return t, index
