"""Random street layouts for the synthetic LiDAR sequences: what stands where and who moves how.

Each side of the street is a run of lots (buildings, gardens, fences, open ground) behind a sidewalk
lined with street lights, signs and trees; parked vehicles fill the parking lanes; cars drive in
both lanes, cyclists ride near the kerb and pedestrians walk the sidewalks. Every *thing* (vehicle,
person, bicycle) gets an instance id unique in its sequence. Things never overlap one another at any
frame time (checked on their street-aligned footprints with a margin wider than the 0.25 m DBSCAN
radius of STSSL, so that two objects do not fuse into one cluster), and the first tens of metres in
front of the sensor always hold a cyclist, pedestrians, a moving car, a sign, a tree and a fence so
that even a few frames cover the classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import lidar_objects as lo
from . import lidar_scene as ls
from .lidar_objects import FOOTPRINT, SceneBuilder
from .lidar_raycast import BOX

if TYPE_CHECKING:
    from .lidar import SyntheticLidarConfig


# ------------------------------------------------------------------------------------------ layout
def _lot(b: SceneBuilder, side: int, s0: float, length: float, kind: str) -> None:
    """One plot behind the sidewalk of ``side``, from ``s0`` over ``length`` metres."""
    r, st = b.rng, b.street
    sign = -1.0 if side == 0 else 1.0
    # Distance from the centreline to the back of the sidewalk; on an arc a straight facade's ends come
    # closer to the street by the sagitta, so everything moves out by that much.
    back = st.edge(side) + st.sidewalk[side] + abs(st.curvature) * length**2 / 8
    mid = s0 + length / 2
    yaw = 0.0 if side == 1 else np.pi  # the object's +y points away from the street
    if kind == "building":
        setback = r.uniform(0.2, 0.5) if r.random() < 0.5 else r.uniform(0.5, 4.0)
        depth, height = r.uniform(8.0, 16.0), float(np.exp(r.uniform(np.log(4.0), np.log(25.0))))
        lo.building(b, b.object(mid, sign * (back + setback + depth / 2), yaw=yaw), length, depth, height)
        if setback > 1.8 and r.random() < 0.6:
            hedge = b.object(mid, sign * (back + 0.6))
            h = r.uniform(0.8, 1.6)
            b.part(
                hedge,
                BOX,
                ls.VEGETATION,
                (0, 0, h / 2),
                (length / 2 - 0.5, 0.4, h / 2),
                intensity=0.35,
                sd=0.1,
                penetration=0.1,
            )
    elif kind in ("garden", "fence"):
        if kind == "fence" or r.random() < 0.5:
            fence = b.object(mid, sign * (back + 0.3), yaw=yaw)
            h = r.uniform(1.0, 2.0)
            b.part(
                fence,
                BOX,
                ls.FENCE,
                (0, 0, h / 2),
                (length / 2 - 0.2, 0.03, h / 2),
                intensity=0.3,
                sd=0.08,
                dropout=0.2,
            )
        for _ in range(r.integers(2, 5) if kind == "garden" else r.integers(0, 3)):
            s_tree = s0 + r.uniform(min(3.0, length / 2), max(length - 3.0, length / 2))
            lo.tree(b, b.object(s_tree, sign * (back + r.uniform(2.5, 7.0))), 3.0)
        for _ in range(r.integers(2, 7)):
            lo.bush(b, b.object(s0 + r.uniform(1.0, length - 1.0), sign * (back + r.uniform(1.3, 6.0))))
        if kind == "fence" and r.random() < 0.5:
            lo.building(
                b,
                b.object(mid, sign * (back + r.uniform(8.0, 14.0) + 6.0), yaw=yaw),
                length,
                12.0,
                r.uniform(5.0, 15.0),
            )
    else:  # open ground
        for _ in range(r.integers(1, 5)):
            lo.bush(b, b.object(s0 + r.uniform(1.0, length - 1.0), sign * (back + r.uniform(1.0, 8.0))))
        if r.random() < 0.5:
            lo.tree(b, b.object(mid, sign * (back + r.uniform(3.0, 8.0))), 3.0)


def _sidewalk_edge(
    b: SceneBuilder,
    side: int,
    s_lo: float,
    s_hi: float,
    config: SyntheticLidarConfig,
    trees: bool,
    first_sign: float | None,
) -> None:
    """Street lights, signs and trees along the kerb of ``side``."""
    r, st = b.rng, b.street
    sign = -1.0 if side == 0 else 1.0
    edge = st.edge(side)
    taken: list[float] = []

    def add(s: float, u: float) -> bool:
        # Footprints are the posts and trunks: lamp arms, sign plates and crowns are above vehicles.
        if any(abs(s - q) < 2.5 for q in taken):
            return False
        taken.append(s)
        b.occupy(s, sign * (edge + u), 0.0, 0.3, 0.3 if u > 0.5 else 0.1)
        return True

    s = s_lo + r.uniform(0, 30)
    while s < s_hi:
        if add(s, 0.3):
            lo.light(b, b.object(s, sign * (edge + 0.3)), sign)
        s += r.uniform(25.0, 40.0)
    signs = list(r.uniform(s_lo, s_hi, r.poisson(config.signs_per_100m * (s_hi - s_lo) / 100)))
    for s in ([first_sign] if first_sign is not None else []) + signs:
        if add(s, 0.3):
            lo.sign(b, b.object(s, sign * (edge + 0.3), yaw=r.choice([0.0, np.pi / 2])))
    if trees:
        s = s_lo + r.uniform(0, 8)
        while s < s_hi:
            if add(s, 0.6):  # crowns kept 4.2 m up, clear of trucks
                lo.tree(b, b.object(s, sign * (edge + 0.6)), 2.6, clearance=4.2)
            s += r.uniform(6.0, 10.0)


def _street(config: SyntheticLidarConfig, rng: np.random.Generator, length: float) -> ls.Street:
    curvature = 0.0
    if rng.random() >= config.straight_fraction:
        limit = min(config.max_curvature, (np.pi / 3) / length)  # keep the arc well short of a loop
        curvature = float(rng.uniform(-1.0, 1.0) * limit)
    parking = tuple(2.2 if rng.random() < 0.75 else 0.0 for _ in range(2))
    if parking == (0.0, 0.0):
        parking = (2.2, 0.0)
    return ls.Street(
        curvature=curvature,
        lane=float(rng.uniform(3.0, 3.6)),
        bike=tuple(1.5 if rng.random() < 0.3 else 0.0 for _ in range(2)),
        parking=parking,
        sidewalk=tuple(float(rng.uniform(2.5, 4.5)) for _ in range(2)),
        kerb=float(rng.uniform(0.10, 0.16)),
    )


def _things(b: SceneBuilder, config: SyntheticLidarConfig, ego: ls.Ego, s_lo: float, s_hi: float) -> None:
    r, st = b.rng, b.street
    t = b.times
    t_mid = t[len(t) // 2]
    b.fp.append(np.concatenate([ego.s(t), [ego.d0, 2.4, 0.95 + ego.sway]]))  # nothing may hit the sensor

    def count(density: float) -> int:
        return int(r.poisson(density * (s_hi - s_lo) / 100))

    def vehicle(s_mid: float, d: float, speed: float, kind: str) -> bool:
        hl, hw = FOOTPRINT[kind]
        yaw = 0.0 if speed > 0 or (speed == 0 and d < 0) else np.pi
        # Keep a gap wider than DBSCAN's 0.25 m sideways, and a headway between moving vehicles.
        s0 = b.place(s_mid, d, speed, hl, hw, (1.5, 0.3) if speed else (0.5, 0.3))
        if s0 is None:
            return False
        lo.vehicle(b, b.object(s0, d, speed=speed, yaw=yaw, thing=True), kind, speed != 0)
        return True

    def car_kind() -> str:
        return str(r.choice(["compact", "sedan", "sedan", "van"]))

    sidewalk_u = [(st.edge(s) + 1.4, st.edge(s) + st.sidewalk[s] - 0.6) for s in (0, 1)]

    def pedestrian(s_mid: float, side: int, walking: bool) -> bool:
        d = (-1.0 if side == 0 else 1.0) * r.uniform(*sidewalk_u[side])
        speed = r.uniform(0.8, 1.7) * r.choice([-1.0, 1.0]) if walking else 0.0
        s0 = b.place(s_mid, d, speed, 0.3, 0.3, (0.6, 0.6))
        if s0 is None:
            return False
        yaw = (0.0 if speed > 0 else np.pi) if walking else r.uniform(-np.pi, np.pi)
        sem = ls.MOVING_PERSON if walking else ls.PERSON
        lo.pedestrian(b, b.object(s0, d, speed=speed, yaw=yaw, thing=True, stride=1.4), sem, walking)
        return True

    def cyclist(s_mid: float, side: int) -> bool:
        u = st.lane + st.bike[side] / 2 if st.bike[side] else st.lane - 0.7
        d = -u if side == 0 else u
        speed = r.uniform(3.0, 7.0) * (1.0 if side == 0 else -1.0)
        s0 = b.place(s_mid, d, speed, 0.95, 0.4, (1.0, 0.3))
        if s0 is None:
            return False
        yaw = 0.0 if speed > 0 else np.pi
        bike = b.object(s0, d, speed=speed, yaw=yaw, thing=True, stride=5.0)
        rider = b.object(s0, d, speed=speed, yaw=yaw, thing=True, stride=5.0)
        b.objects["phase"][rider] = b.objects["phase"][bike]
        lo.cyclist(b, bike, rider)
        return True

    # Near the start: s_mid is where a mover is half-way through, hence the shift by its travel.
    for _ in range(10):
        if cyclist(r.uniform(12.0, 30.0) + 5.0 * t_mid, 0):
            break
    for walking in (True, False):
        for _ in range(10):
            if pedestrian(r.uniform(6.0, 25.0), int(r.integers(0, 2)), walking):
                break
    for _ in range(10):
        speed = -r.uniform(6.0, 14.0)
        if vehicle(r.uniform(25.0, 50.0) + speed * t_mid, st.lane / 2, speed, car_kind()):
            break
    for _ in range(10):  # a car ahead in the ego's lane, in view all along: a long track
        speed = ego.speed * r.uniform(0.95, 1.05)
        if vehicle(r.uniform(32.0, 45.0) + speed * t_mid, ego.d0, speed, car_kind()):  # beyond the cyclist
            break

    for side in (0, 1):  # parked vehicles bumper to bumper with gaps
        if not st.parking[side]:
            continue
        sign = -1.0 if side == 0 else 1.0
        s = s_lo + r.uniform(0, 5)
        while s < s_hi:
            kind = car_kind() if r.random() > 0.04 else "truck"
            # Parked 0.2-0.3 m off the kerb line, so that posts on the sidewalk stay a cluster apart.
            d = sign * (st.edge(side) - FOOTPRINT[kind][1] - r.uniform(0.2, 0.3))
            if r.random() < 0.05:
                d = sign * (st.edge(side) - 1.25)
                if b.free(s, d, 0.0, 1.0, 1.0, (0.6, 0.3)):
                    b.occupy(s, d, 0.0, 1.0, 1.0)
                    obj = b.object(s, d, yaw=np.pi / 2 * r.choice([-1.0, 1.0]) + 0.3, thing=True)
                    b.part(
                        obj,
                        BOX,
                        ls.MOTORCYCLE,
                        (0, 0, 0.55),
                        (1.0, 0.35, 0.55),
                        intensity=0.2,
                        sd=0.08,
                        dropout=0.1,
                    )
                s += 3.0
                continue
            if r.random() < config.parking_occupancy:
                vehicle(s, d, 0.0, kind)
            s += r.uniform(5.0, 6.5) + (r.uniform(0.5, 4.0) if r.random() < 0.5 else 0.0)

    lanes = ((-st.lane / 2, ego.speed), (st.lane / 2, -ego.speed))
    for _ in range(count(config.moving_cars_per_100m)):
        d, base = lanes[int(r.integers(0, 2))]
        speed = base * r.uniform(0.85, 1.15) if d < 0 else -r.uniform(6.0, 14.0)
        kind = car_kind() if r.random() > 0.05 else "truck"
        vehicle(r.uniform(s_lo, s_hi), d + r.uniform(-0.2, 0.2), speed, kind)
    for _ in range(count(config.pedestrians_per_100m)):
        pedestrian(r.uniform(s_lo, s_hi), int(r.integers(0, 2)), r.random() < 0.75)
    for _ in range(count(config.cyclists_per_100m)):
        cyclist(r.uniform(s_lo, s_hi), int(r.integers(0, 2)))


def build_scene(config: SyntheticLidarConfig, rng: np.random.Generator, times: np.ndarray) -> ls.Scene:
    """Sample one street, its ego trajectory and everything on it, for frames at ``times`` (seconds)."""
    lo, hi = config.speed_range
    speed = float(rng.uniform(lo, hi))
    surge = float(rng.uniform(0.0, 1.0) * min(speed - lo, hi - speed, 2.0))
    margin = 0.6 * config.max_range + 20.0
    travel = speed * float(times[-1]) + surge * 2.0
    street = _street(config, rng, travel + 2 * margin)
    ego = ls.Ego(
        speed=speed,
        surge=surge,
        omega=2 * np.pi / rng.uniform(8.0, 20.0),
        d0=-street.lane / 2 + float(rng.normal(0.0, 0.1)),
        sway=float(rng.uniform(0.0, 0.2)),
        omega_d=2 * np.pi / rng.uniform(4.0, 10.0),
        phase=float(rng.uniform(0, 2 * np.pi)),
        height=config.sensor_height,
    )
    s_lo, s_hi = -margin, travel + margin
    b = SceneBuilder(street, times, rng)

    kinds = np.array(["building", "garden", "fence", "open"])
    for side, forced in ((0, "building"), (1, "fence")):
        s = s_lo
        while s < s_hi:
            length = float(rng.uniform(8.0, 28.0))
            kind = forced if s <= 12.0 < s + length else str(rng.choice(kinds, p=[0.6, 0.2, 0.12, 0.08]))
            _lot(b, side, s, length, kind)
            s += length + (0.0 if rng.random() < 0.5 else float(rng.uniform(0.5, 3.0)))
    trees = [bool(rng.random() < 0.7) for _ in range(2)]
    trees[0] = trees[0] or not trees[1]
    for side in (0, 1):
        first_sign = float(rng.uniform(10.0, 25.0)) if side == 0 else None
        _sidewalk_edge(b, side, s_lo, s_hi, config, trees[side], first_sign)
    _things(b, config, ego, s_lo, s_hi)

    parts = {k: np.asarray(v) for k, v in b.parts.items()}
    objects = {k: np.asarray(v) for k, v in b.objects.items()}
    return ls.Scene(
        street=street,
        ego=ego,
        kind=parts["kind"].astype(np.int64),
        obj=parts["obj"].astype(np.int64),
        offset=parts["offset"].astype(np.float64),
        half=parts["half"].astype(np.float64),
        yaw=parts["yaw"].astype(np.float64),
        swing=parts["swing"].astype(np.float64),
        semantic=parts["semantic"].astype(np.int64),
        intensity=parts["intensity"].astype(np.float64),
        intensity_sd=parts["intensity_sd"].astype(np.float64),
        dropout=parts["dropout"].astype(np.float64),
        penetration=parts["penetration"].astype(np.float64),
        windows=parts["windows"].astype(bool),
        instance=objects["instance"].astype(np.int64),
        s0=objects["s0"].astype(np.float64),
        d=objects["d"].astype(np.float64),
        speed=objects["speed"].astype(np.float64),
        obj_yaw=objects["obj_yaw"].astype(np.float64),
        base_z=objects["base_z"].astype(np.float64),
        stride=objects["stride"].astype(np.float64),
        phase=objects["phase"].astype(np.float64),
    )
