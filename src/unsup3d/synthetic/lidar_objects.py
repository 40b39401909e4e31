"""Building blocks of the synthetic street: a scene builder and the templates of what stands on it.

``SceneBuilder`` collects primitives ("parts", fixed in their object's frame) and objects (moving
along the street), and the street-aligned footprints of things over the frame times, which
``lidar_layout`` checks so that no two things overlap. The templates draw one object each from
boxes, capped vertical cylinders and ellipsoids, at real-world sizes (cars 3.6-5.2 m, people
1.5-1.9 m, street lights 6-9 m) with a material (intensity mean and spread, dropout, penetration).
"""

from __future__ import annotations

import numpy as np

from . import lidar_scene as ls
from .lidar_raycast import BOX, CYLINDER, ELLIPSOID

PART_FIELDS = (
    "kind",
    "obj",
    "offset",
    "half",
    "yaw",
    "swing",
    "semantic",
    "intensity",
    "intensity_sd",
    "dropout",
    "penetration",
    "windows",
)
OBJ_FIELDS = ("instance", "s0", "d", "speed", "obj_yaw", "base_z", "stride", "phase")
# Half length and half width of each vehicle kind's footprint (the largest the template draws).
FOOTPRINT = {"truck": (4.9, 1.25), "van": (2.6, 1.0), "sedan": (2.45, 0.93), "compact": (2.05, 0.88)}


class SceneBuilder:
    """Collects parts and objects, and the footprints of things over the frame times."""

    def __init__(self, street: ls.Street, times: np.ndarray, rng: np.random.Generator) -> None:
        self.street, self.times, self.rng = street, times, rng
        self.parts: dict[str, list] = {k: [] for k in PART_FIELDS}
        self.objects: dict[str, list] = {k: [] for k in OBJ_FIELDS}
        self.next_instance = 1
        self.fp: list[np.ndarray] = []  # rows (s(t)..., d, half length, half width)

    def object(
        self,
        s0: float,
        d: float,
        *,
        speed: float = 0.0,
        yaw: float = 0.0,
        thing: bool = False,
        stride: float = 0.0,
    ) -> int:
        """Add an object at ``(s0 + speed t, d)``; a ``thing`` gets the next instance id. Returns its id."""
        instance = 0
        if thing:
            instance, self.next_instance = self.next_instance, self.next_instance + 1
        values = (
            instance,
            s0,
            d,
            speed,
            yaw,
            float(self.street.ground_height(d)),
            stride,
            self.rng.uniform(0, 2 * np.pi),
        )
        for key, value in zip(OBJ_FIELDS, values):
            self.objects[key].append(value)
        return len(self.objects["s0"]) - 1

    def part(
        self,
        obj: int,
        kind: int,
        semantic: int,
        offset: tuple,
        half: tuple,
        *,
        intensity: float,
        sd: float,
        yaw: float = 0.0,
        swing: float = 0.0,
        dropout: float = 0.0,
        penetration: float = 0.0,
        windows: bool = False,
    ) -> None:
        """Add a primitive to object ``obj``, placed and sized in the object's frame."""
        values = (kind, obj, offset, half, yaw, swing, semantic, intensity, sd, dropout, penetration, windows)
        for key, value in zip(PART_FIELDS, values):
            self.parts[key].append(value)

    def _track(self, s0: float, speed: float) -> np.ndarray:
        return s0 + speed * self.times

    def free(
        self, s0: float, d: float, speed: float, hl: float, hw: float, margin: tuple[float, float]
    ) -> bool:
        """Whether a footprint at ``(s0 + speed t, d)`` keeps ``margin`` (along s, along d) from every
        other footprint at every frame time."""
        if not self.fp:
            return True
        fp = np.asarray(self.fp)
        gap_s = np.abs(fp[:, :-3] - self._track(s0, speed)[None, :]) - fp[:, -2:-1] - hl
        gap_d = np.abs(fp[:, -3] - d) - fp[:, -1] - hw
        clash = (gap_s < margin[0]) & (gap_d[:, None] < margin[1])
        return not clash.any()

    def occupy(self, s0: float, d: float, speed: float, hl: float, hw: float) -> None:
        self.fp.append(np.concatenate([self._track(s0, speed), [d, hl, hw]]))

    def place(
        self, s_mid: float, d: float, speed: float, hl: float, hw: float, margin: tuple[float, float]
    ) -> float | None:
        """``s0`` putting a footprint at ``s_mid`` half-way through the sequence, if that spot is free."""
        s0 = s_mid - speed * self.times[len(self.times) // 2]
        if not self.free(s0, d, speed, hl, hw, margin):
            return None
        self.occupy(s0, d, speed, hl, hw)
        return s0


def vehicle(b: SceneBuilder, obj: int, kind: str, moving: bool) -> None:
    """A car (compact, sedan or van: body, glass cabin, two axles) or a truck (cab, cargo box, chassis)."""
    r = b.rng
    if kind == "truck":
        sem = ls.MOVING_TRUCK if moving else ls.TRUCK
        paint = r.uniform(0.1, 0.5)
        cargo, width = r.uniform(5.0, 7.5), r.uniform(2.3, 2.5)
        top = r.uniform(3.4, 3.9)
        length = cargo + 2.3
        b.part(
            obj,
            BOX,
            sem,
            (length / 2 - 1.1, 0, 1.85),
            (1.1, width / 2 - 0.05, 1.45),
            intensity=paint,
            sd=0.05,
        )
        b.part(
            obj,
            BOX,
            sem,
            (-1.2, 0, (0.9 + top) / 2),
            (cargo / 2, width / 2, (top - 0.9) / 2),
            intensity=paint * 1.2,
            sd=0.05,
        )
        b.part(
            obj, BOX, sem, (-1.2, 0, 0.5), (cargo / 2 - 0.3, width / 2 - 0.1, 0.45), intensity=0.05, sd=0.03
        )
        return
    sem = ls.MOVING_CAR if moving else ls.CAR
    # (length, width, top of the body, top of the cabin) ranges, and the cabin's share of the length
    ranges, cab_len = {
        "compact": (((3.6, 4.1), (1.62, 1.75), (0.9, 1.0), (1.4, 1.5)), 0.5),
        "sedan": (((4.4, 4.9), (1.75, 1.85), (0.95, 1.05), (1.4, 1.5)), 0.46),
        "van": (((4.5, 5.2), (1.85, 2.0), (1.05, 1.15), (1.75, 2.0)), 0.72),
    }[kind]
    length, width, body, cabin = (r.uniform(lo, hi) for lo, hi in ranges)
    paint = r.uniform(0.02, 0.3)
    b.part(
        obj,
        BOX,
        sem,
        (0, 0, (0.3 + body) / 2),
        (length / 2, width / 2, (body - 0.3) / 2),
        intensity=paint,
        sd=0.04,
    )
    b.part(
        obj,
        BOX,
        sem,
        (-0.06 * length, 0, (body + cabin) / 2),
        (cab_len * length / 2, 0.46 * width, (cabin - body) / 2),
        intensity=0.05,
        sd=0.03,
        dropout=0.35,
    )
    for x in (length / 2 - 0.8, -length / 2 + 0.8):  # axle with its two wheels
        b.part(
            obj, BOX, sem, (x, 0, 0.31), (0.3, width / 2 - 0.06, 0.31), intensity=0.04, sd=0.02, dropout=0.1
        )


def pedestrian(b: SceneBuilder, obj: int, sem: int, walking: bool) -> None:
    """Two legs (swinging when ``walking``), torso and head, 0.85-1.1 times a 1.75 m adult."""
    r = b.rng
    k = r.uniform(0.85, 1.1)
    cloth = r.uniform(0.12, 0.4)
    stride = 0.22 * k if walking else 0.0
    for side in (-1.0, 1.0):
        b.part(
            obj,
            CYLINDER,
            sem,
            (0, 0.1 * k * side, 0.42 * k),
            (0.08, 0.08, 0.42 * k),
            intensity=cloth * 0.8,
            sd=0.05,
            swing=stride * side,
        )
    b.part(obj, ELLIPSOID, sem, (0, 0, 1.15 * k), (0.15 * k, 0.22 * k, 0.33 * k), intensity=cloth, sd=0.05)
    b.part(obj, ELLIPSOID, sem, (0.02, 0, 1.6 * k), (0.1 * k, 0.09 * k, 0.12 * k), intensity=0.3, sd=0.05)


def cyclist(b: SceneBuilder, bike: int, rider: int) -> None:
    """A bicycle (object ``bike``, class bicycle) and its rider (object ``rider``, moving bicyclist)."""
    r = b.rng
    # Wheels and frame as one slab (spokes let rays through), cranks and pedals, handlebar.
    b.part(bike, BOX, ls.BICYCLE, (0, 0, 0.5), (0.85, 0.06, 0.5), intensity=0.22, sd=0.08, dropout=0.3)
    b.part(bike, BOX, ls.BICYCLE, (0.05, 0, 0.3), (0.12, 0.17, 0.06), intensity=0.25, sd=0.08)
    b.part(bike, BOX, ls.BICYCLE, (0.6, 0, 1.02), (0.04, 0.3, 0.03), intensity=0.3, sd=0.08)
    cloth = r.uniform(0.12, 0.4)
    b.part(
        rider,
        BOX,
        ls.MOVING_BICYCLIST,
        (0.05, 0, 0.85),
        (0.14, 0.17, 0.25),
        intensity=cloth * 0.8,
        sd=0.05,
        swing=0.06,
    )
    b.part(rider, ELLIPSOID, ls.MOVING_BICYCLIST, (-0.05, 0, 1.35), (0.2, 0.2, 0.3), intensity=cloth, sd=0.05)
    b.part(rider, ELLIPSOID, ls.MOVING_BICYCLIST, (0.12, 0, 1.78), (0.11, 0.1, 0.12), intensity=0.3, sd=0.05)


def tree(b: SceneBuilder, obj: int, max_reach: float, clearance: float = 2.6) -> None:
    """Trunk and 1-3 crown blobs; ``clearance`` is the height under the crown (street trees are
    pruned above the traffic), ``max_reach`` caps the crown's radius."""
    r = b.rng
    height, radius = r.uniform(1.8, 3.5), r.uniform(0.12, 0.3)
    b.part(obj, CYLINDER, ls.TRUNK, (0, 0, height / 2), (radius, radius, height / 2), intensity=0.31, sd=0.06)
    for _ in range(r.integers(1, 4)):
        rx = min(r.uniform(1.2, 2.6), max_reach)
        rz = r.uniform(1.0, 2.2)
        off = r.normal(0.0, 0.4, 2).clip(-0.6, 0.6)
        z = max(height + 0.5 * rz, clearance + rz) + r.uniform(0, 0.8)
        ry = min(rx * r.uniform(0.8, 1.2), max_reach)
        b.part(
            obj,
            ELLIPSOID,
            ls.VEGETATION,
            (off[0], off[1], z),
            (rx, ry, rz),
            intensity=0.34,
            sd=0.1,
            dropout=0.08,
            penetration=0.12,
        )


def bush(b: SceneBuilder, obj: int, scale: float = 1.0) -> None:
    """One leafy blob sitting on the ground."""
    r = b.rng
    rx, ry, rz = r.uniform(0.5, 1.3) * scale, r.uniform(0.5, 1.3) * scale, r.uniform(0.4, 0.9) * scale
    b.part(
        obj,
        ELLIPSOID,
        ls.VEGETATION,
        (0, 0, 0.8 * rz),
        (rx, ry, rz),
        intensity=0.36,
        sd=0.1,
        dropout=0.05,
        penetration=0.06,
    )


def light(b: SceneBuilder, obj: int, outward: float) -> None:
    """A street light: post, an arm over the road (``outward`` is the side's sign of d) and a lamp."""
    r = b.rng
    height, arm = r.uniform(6.0, 9.0), r.uniform(1.2, 2.2)
    b.part(obj, CYLINDER, ls.POLE, (0, 0, height / 2), (0.1, 0.1, height / 2), intensity=0.3, sd=0.1)
    b.part(
        obj, BOX, ls.POLE, (0, -outward * arm / 2, height - 0.1), (0.05, arm / 2, 0.05), intensity=0.3, sd=0.1
    )
    b.part(obj, BOX, ls.POLE, (0, -outward * arm, height - 0.25), (0.3, 0.15, 0.08), intensity=0.45, sd=0.1)


def sign(b: SceneBuilder, obj: int) -> None:
    """A traffic sign: a thin post (pole) and a square or round plate (traffic-sign) on top."""
    r = b.rng
    height, size = r.uniform(2.0, 2.8), r.uniform(0.3, 0.45)
    b.part(obj, CYLINDER, ls.POLE, (0, 0, height / 2), (0.04, 0.04, height / 2), intensity=0.3, sd=0.1)
    kind = ELLIPSOID if r.random() < 0.4 else BOX
    b.part(obj, kind, ls.TRAFFIC_SIGN, (0, 0, height + size), (0.03, size, size), intensity=0.78, sd=0.1)


def building(b: SceneBuilder, obj: int, length: float, depth: float, height: float) -> None:
    """A block with windowed facades, sometimes with a tower or annex on part of the plot."""
    b.part(
        obj,
        BOX,
        ls.BUILDING,
        (0, 0, height / 2),
        (length / 2, depth / 2, height / 2),
        intensity=b.rng.uniform(0.35, 0.5),
        sd=0.06,
        windows=True,
    )
    if b.rng.random() < 0.35:  # a tower or an annex on part of the plot
        frac = b.rng.uniform(0.3, 0.7)
        h2 = height * b.rng.uniform(0.5, 1.6)
        x2 = (0.5 - frac / 2) * length * b.rng.choice([-1.0, 1.0])
        b.part(
            obj,
            BOX,
            ls.BUILDING,
            (x2, 0.15 * depth, h2 / 2),
            (frac * length / 2, 0.35 * depth, h2 / 2),
            intensity=b.rng.uniform(0.35, 0.5),
            sd=0.06,
            windows=True,
        )
