"""The street of a synthetic LiDAR sequence: its cross-section, its ground, and the moving parts on it.

Geometry lives in *street coordinates* ``(s, d)``: ``s`` the arc length along the centreline,
``d`` the signed lateral offset (left positive). The centreline is straight or a circular arc of
constant curvature, so both directions of the map are closed-form and a lateral zone (lane, kerb,
sidewalk) is an exact band of ``d``. Objects are rigid sets of primitives moving along ``s`` at a
constant speed and fixed ``d``; their world pose at time ``t`` follows from the centreline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lidar_raycast import Primitives

# SemanticKITTI raw ids used by the generator (semantic-kitti.yaml ``labels``).
OUTLIER, CAR, BICYCLE, MOTORCYCLE, TRUCK = 1, 10, 11, 15, 18
PERSON, ROAD, PARKING, SIDEWALK, BUILDING, FENCE = 30, 40, 44, 48, 50, 51
LANE_MARKING, VEGETATION, TRUNK, TERRAIN, POLE, TRAFFIC_SIGN = 60, 70, 71, 72, 80, 81
OTHER_OBJECT, MOVING_CAR, MOVING_BICYCLIST, MOVING_PERSON, MOVING_TRUCK = 99, 252, 253, 254, 258

# Ground surfaces: (intensity mean, intensity sd, extra dropout, penetration in metres).
GROUND_MATERIAL: dict[int, tuple[float, float, float, float]] = {
    ROAD: (0.25, 0.04, 0.0, 0.0),
    LANE_MARKING: (0.70, 0.08, 0.0, 0.0),
    PARKING: (0.30, 0.04, 0.0, 0.0),
    SIDEWALK: (0.31, 0.05, 0.0, 0.0),
    TERRAIN: (0.33, 0.08, 0.02, 0.03),
}
_MARK_HALF = 0.075  # half width of a painted line


@dataclass(frozen=True)
class Street:
    """Cross-section and centreline. Per-side pairs are ``(right, left)``; widths in metres.

    Outward from the centreline on each side: a driving lane, an optional bike lane, an optional
    parking lane, the kerb (``kerb`` high), the sidewalk, then terrain up to the building line.
    """

    curvature: float
    lane: float
    bike: tuple[float, float]
    parking: tuple[float, float]
    sidewalk: tuple[float, float]
    kerb: float
    dash: tuple[float, float] = (3.0, 6.0)

    def edge(self, side: int) -> float:
        """Distance from the centreline to the kerb on ``side`` (0 right, 1 left)."""
        return self.lane + self.bike[side] + self.parking[side]

    def frame(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World ``(x, y, heading)`` of street coordinates; the street starts at the origin along +x."""
        s, d = np.broadcast_arrays(np.asarray(s, dtype=np.float64), np.asarray(d, dtype=np.float64))
        k = self.curvature
        if k == 0.0:
            return s.copy(), d.copy(), np.zeros_like(s)
        th = k * s
        return np.sin(th) / k - d * np.sin(th), (1.0 - np.cos(th)) / k + d * np.cos(th), th

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Street coordinates ``(s, d)`` of world points (the inverse of ``frame``)."""
        k = self.curvature
        if k == 0.0:
            return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        sg = np.sign(k)
        ry = y - 1.0 / k  # relative to the centre of the arc, which lies at (0, 1/k)
        d = 1.0 / k - sg * np.hypot(x, ry)
        return np.arctan2(sg * x, -sg * ry) / k, d

    def ground_height(self, d: np.ndarray) -> np.ndarray:
        """Height of the ground at lateral offset ``d``: 0 on the road, ``kerb`` beyond the kerbs."""
        d = np.asarray(d, dtype=np.float64)
        return np.where((d < -self.edge(0)) | (d > self.edge(1)), self.kerb, 0.0)

    def _road_class(self, s: np.ndarray, d: np.ndarray) -> np.ndarray:
        u = np.abs(d)
        side = (d > 0).astype(np.int64)
        bike = np.asarray(self.bike)[side]
        lane_edge = self.lane
        on, off = self.dash
        cls = np.where(u < lane_edge + bike, ROAD, PARKING)
        dashed = (u < _MARK_HALF) & (np.mod(s, on + off) < on)
        # A solid line separates the driving lane from a bike or parking lane where there is one.
        outer = np.asarray(self.bike)[side] + np.asarray(self.parking)[side]
        solid = (np.abs(u - lane_edge) < _MARK_HALF) & (outer > 0)
        return np.where(dashed | solid, LANE_MARKING, cls)

    def _kerb_newton(
        self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, edge: np.ndarray, t: np.ndarray
    ) -> np.ndarray:
        # On an arc, d(t) = 1/k - sign(k) |p(t) - centre| bends along the ray; Newton's method from the
        # linear estimate converges to round-off in a few steps.
        k = self.curvature
        sg = np.sign(k)
        for _ in range(4):
            rx, ry = origin[0] + t * dx, origin[1] + t * dy - 1.0 / k
            rho = np.hypot(rx, ry)
            d = 1.0 / k - sg * rho
            slope = -sg * (rx * dx + ry * dy) / rho
            t = t - (d - edge) / np.where(np.abs(slope) > 1e-12, slope, 1e-12)
        return t

    def ground_hits(
        self, origin: np.ndarray, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distance to the ground along each ray (inf where none) and the raw class of the surface hit.

        The ground is the road plane z = 0 inside the kerbs and the plane z = ``kerb`` outside them;
        a ray that drops past the kerb line between the two planes hits the kerb face (a plane on a
        straight street, a vertical cylinder on an arc).
        """
        ox, oy, oz = origin
        down = dz < -1e-9
        # Upward rays get t = 0 here (finite hit points) and inf at the end.
        inv = np.where(down, 1.0 / np.where(down, dz, -1.0), 0.0)
        t_top = (self.kerb - oz) * inv
        t_road = -oz * inv
        _, d_t = self.local(ox + t_top * dx, oy + t_top * dy)
        s_r, d_r = self.local(ox + t_road * dx, oy + t_road * dy)
        right, left = self.edge(0), self.edge(1)
        raised_t = (d_t < -right) | (d_t > left)
        raised_r = (d_r < -right) | (d_r > left)
        edge = np.where(d_r > 0, left, -right)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip((edge - d_t) / (d_r - d_t), 0.0, 1.0)
        t_kerb = t_top + frac * (t_road - t_top)  # exact where d is linear along the ray: a straight street
        kerb = ~raised_t & raised_r & down
        if self.curvature != 0.0 and kerb.any():
            t_kerb[kerb] = self._kerb_newton(origin, dx[kerb], dy[kerb], edge[kerb], t_kerb[kerb])

        side = (d_t > 0).astype(np.int64)
        beyond = np.abs(d_t) - np.where(side == 1, left, right)
        raised_cls = np.where(beyond < np.asarray(self.sidewalk)[side], SIDEWALK, TERRAIN)
        t = np.where(raised_t, t_top, np.where(raised_r, t_kerb, t_road))
        cls = np.where(raised_t, raised_cls, np.where(raised_r, SIDEWALK, self._road_class(s_r, d_r)))
        return np.where(down, t, np.inf), cls.astype(np.int64)


@dataclass(frozen=True)
class Ego:
    """The sensor's carrier: ``s(t) = speed t + surge (1 - cos(omega t)) / omega`` (gentle speed
    changes) and ``d(t) = d0 + sway sin(omega_d t + phase)`` (lane keeping)."""

    speed: float
    surge: float
    omega: float
    d0: float
    sway: float
    omega_d: float
    phase: float
    height: float

    def s(self, t: np.ndarray) -> np.ndarray:
        return self.speed * t + self.surge * (1.0 - np.cos(self.omega * t)) / self.omega

    def d(self, t: np.ndarray) -> np.ndarray:
        return self.d0 + self.sway * np.sin(self.omega_d * t + self.phase)

    def pose(self, street: Street, t: float) -> np.ndarray:
        """4x4 world pose of the sensor at time ``t``: level, heading along the path it drives."""
        s, d = self.s(np.float64(t)), self.d(np.float64(t))
        x, y, h = street.frame(s, d)
        ds = self.speed + self.surge * np.sin(self.omega * t)
        dd = self.sway * self.omega_d * np.cos(self.omega_d * t + self.phase)
        yaw = float(h) + float(np.arctan2(dd, ds))
        pose = np.eye(4)
        c, sn = np.cos(yaw), np.sin(yaw)
        pose[:2, :2] = [[c, -sn], [sn, c]]
        pose[:3, 3] = [float(x), float(y), self.height]
        return pose


@dataclass(frozen=True)
class Scene:
    """Everything the sensor can see. Parts (P,) are primitives fixed in their object's frame
    (x forward, y left, z up from the ground under the object); objects (O,) move along the street.

    Per part: ``kind``, ``obj``, ``offset`` (P, 3), ``half`` (P, 3), ``yaw``, ``swing`` (amplitude of
    a gait or pedalling oscillation along x), ``semantic``, ``intensity``, ``intensity_sd``,
    ``dropout``, ``penetration``, ``windows`` (bool: a facade with glass). Per object: ``instance``
    (0 for stuff), ``s0``, ``d``, ``speed`` (signed, along s), ``yaw``, ``base_z``, ``stride``
    (metres per gait cycle, 0 for none) and ``phase``.
    """

    street: Street
    ego: Ego
    kind: np.ndarray
    obj: np.ndarray
    offset: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    swing: np.ndarray
    semantic: np.ndarray
    intensity: np.ndarray
    intensity_sd: np.ndarray
    dropout: np.ndarray
    penetration: np.ndarray
    windows: np.ndarray
    instance: np.ndarray
    s0: np.ndarray
    d: np.ndarray
    speed: np.ndarray
    obj_yaw: np.ndarray
    base_z: np.ndarray
    stride: np.ndarray
    phase: np.ndarray

    def object_poses(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """World ``(x, y, z, yaw)`` of every object's reference point at time ``t``."""
        s = self.s0 + self.speed * t
        x, y, h = self.street.frame(s, self.d)
        return x, y, self.base_z, h + self.obj_yaw

    def primitives_at(self, t: float) -> Primitives:
        """The parts placed in the world at time ``t``."""
        x, y, z, yaw = self.object_poses(t)
        with np.errstate(divide="ignore", invalid="ignore"):
            cycles = np.where(self.stride > 0, np.abs(self.speed) * t / self.stride, 0.0)
        gait = np.sin(2.0 * np.pi * cycles + self.phase)
        o = self.obj
        lx = self.offset[:, 0] + self.swing * gait[o]
        ly = self.offset[:, 1]
        c, s = np.cos(yaw[o]), np.sin(yaw[o])
        centre = np.stack([x[o] + c * lx - s * ly, y[o] + s * lx + c * ly, z[o] + self.offset[:, 2]], axis=1)
        return Primitives(self.kind, centre, self.half, yaw[o] + self.yaw)
