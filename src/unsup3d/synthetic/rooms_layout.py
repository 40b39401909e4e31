"""Room layouts: a rectangular room, its walls and floor, and furniture placed the way people place it.

Five room kinds (bedroom, living room, office, kitchen, bathroom) each draw their own furniture;
big pieces go back to a wall, dining sets and coffee tables stand free, doors and windows sit in the
walls, pictures hang between them. Nothing overlaps: floor footprints and wall spans are booked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import rooms_fixtures as fx
from . import rooms_objects as ob
from .rooms_geometry import rot_z
from .rooms_materials import choose

ROOM_KINDS = ("bedroom", "living room", "office", "kitchen", "bathroom")
# ScanNet's sceneType names for the <scene>.txt metadata.
SCENE_TYPES = {
    "bedroom": "Bedroom / Hotel",
    "living room": "Living room / Lounge",
    "office": "Office",
    "kitchen": "Kitchen",
    "bathroom": "Bathroom",
}


@dataclass
class Placed:
    """An object posed in the room: ``p_room = rotation @ p_object + translation``."""

    spec: ob.ObjectSpec
    rotation: np.ndarray
    translation: np.ndarray

    def corners(self) -> np.ndarray:
        """The 8 corners (8, 3) of the object's box in the room frame."""
        w, d, h = self.spec.size
        y0 = self.spec.back - d
        c = np.array([[x, y, z] for x in (-w / 2, w / 2) for y in (y0, y0 + d) for z in (0.0, h)])
        return c @ self.rotation.T + self.translation


@dataclass
class Room:
    kind: str
    size: tuple[float, float, float]
    objects: list[Placed]
    lights: np.ndarray
    ambient: float


Member = tuple[ob.ObjectSpec, tuple[float, float, float], float]  # spec, offset in the group, yaw


def _footprint(spec: ob.ObjectSpec, offset: tuple[float, float, float], yaw: float) -> np.ndarray:
    w, d, _ = spec.size
    y0 = spec.back - d
    c = np.array([[-w / 2, y0], [w / 2, y0], [w / 2, y0 + d], [-w / 2, y0 + d]]) @ rot_z(yaw)[:2, :2].T
    c = c + np.asarray(offset[:2])
    return np.concatenate([c.min(0), c.max(0)])


class _Planner:
    def __init__(self, rng: np.random.Generator, size: tuple[float, float, float]) -> None:
        self.rng, (self.W, self.D, self.H) = rng, size
        self.floor: list[np.ndarray] = []  # booked footprints (x0, y0, x1, y1)
        self.spans: list[list[tuple[float, float, float, float]]] = [[], [], [], []]  # (s0, s1, z0, z1)
        self.placed: list[Placed] = []
        self.last = (0, 0.0)  # wall and position of the latest on_wall placement

    def wall(self, k: int) -> tuple[np.ndarray, np.ndarray, float, float]:
        """Origin, tangent, length and the yaw that turns an object's front (-y) to face into the room."""
        o = [(0.0, 0.0), (self.W, 0.0), (self.W, self.D), (0.0, self.D)][k]
        t = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][k]
        return np.array(o), np.array(t), (self.W, self.D)[k % 2], [np.pi, -np.pi / 2, 0.0, np.pi / 2][k]

    def _fits(self, boxes: list[np.ndarray], margin: float) -> bool:
        for b in boxes:
            if b[0] < -0.01 or b[1] < -0.01 or b[2] > self.W + 0.01 or b[3] > self.D + 0.01:
                return False
            for f in self.floor:
                if (
                    b[0] < f[2] + margin
                    and f[0] < b[2] + margin
                    and b[1] < f[3] + margin
                    and f[1] < b[3] + margin
                ):
                    return False
        return True

    def _commit(self, members: list[Member], R: np.ndarray, t: np.ndarray) -> list[Placed]:
        out = []
        for spec, off, yaw in members:
            p = Placed(spec, R @ rot_z(yaw), t + R @ np.asarray(off, dtype=np.float64))
            out.append(p)
            for kid, koff, kyaw in spec.children:
                out.append(
                    Placed(kid, p.rotation @ rot_z(kyaw), p.translation + p.rotation @ np.asarray(koff))
                )
        self.placed += out
        return out

    def _boxes(self, members: list[Member], R: np.ndarray, t: np.ndarray, z: float) -> list[np.ndarray]:
        boxes = []
        for spec, off, yaw in members:
            if z + off[2] > 0.05:  # hung on a wall: no floor footprint
                continue
            fp = _footprint(spec, off, yaw)
            c = (
                np.array([[fp[0], fp[1]], [fp[2], fp[1]], [fp[2], fp[3]], [fp[0], fp[3]]]) @ R[:2, :2].T
                + t[:2]
            )
            boxes.append(np.concatenate([c.min(0), c.max(0)]))
        return boxes

    def on_wall(
        self,
        members: list[Member],
        z: float = 0.0,
        tries: int = 30,
        walls: list[int] | None = None,
        s: float | None = None,
        clearance: float = 0.0,
        back: float | None = None,
        margin: float = 0.05,
        corner: bool = False,
    ) -> list[Placed]:
        """Put a group's back (+y) to a wall at height ``z``; returns the placed objects, [] when no room.

        ``s`` fixes where along the wall the group's origin goes, ``corner`` pushes it into a corner,
        ``clearance`` books that much free floor in front of it (doors).
        """
        fps = [_footprint(sp, off, yaw) for sp, off, yaw in members]
        x0, x1 = min(f[0] for f in fps), max(f[2] for f in fps)
        yb = max(f[3] for f in fps) if back is None else back
        for _ in range(tries):
            k = int(self.rng.choice(walls)) if walls else int(self.rng.integers(4))
            o, tan, length, yaw = self.wall(k)
            if length < x1 - x0 + 0.1:
                continue
            # Facing the room, an object's +x runs against the wall's direction: s = pos - x.
            lo, hi = x1 + 0.02, length + x0 - 0.02
            pos = s if s is not None else (self.rng.choice([lo, hi]) if corner else self.rng.uniform(lo, hi))
            spans = [
                (pos - f[2], pos - f[0], z + off[2], z + off[2] + sp.size[2])
                for (sp, off, _), f in zip(members, fps)
                if f[3] >= yb - 0.05
            ]
            if any(
                a[0] < q[1] and q[0] < a[1] and a[2] < q[3] and q[2] < a[3]
                for a in spans
                for q in self.spans[k]
            ):
                continue
            normal = np.array([-tan[1], tan[0]])
            R = rot_z(yaw)
            t2 = o + tan * pos + normal * (yb + self.rng.uniform(0.0, 0.004))
            t = np.array([t2[0], t2[1], z])
            boxes = self._boxes(members, R, t, z)
            if clearance > 0:
                c0, c1 = o + tan * (pos - x1), o + tan * (pos - x0) + normal * clearance
                boxes.append(np.concatenate([np.minimum(c0, c1), np.maximum(c0, c1)]))
            if not self._fits(boxes, margin):
                continue
            self.floor += boxes
            self.spans[k] += spans
            self.last = (k, float(pos))
            return self._commit(members, R, t)
        return []

    def free(self, members: list[Member], tries: int = 30, margin: float = 0.3) -> list[Placed]:
        """Stand a group freely on the floor, turned by a multiple of 90 degrees (plus a little)."""
        for _ in range(tries):
            yaw = self.rng.integers(4) * np.pi / 2 + self.rng.normal(0, 0.08)
            t = np.array([self.rng.uniform(0.6, self.W - 0.6), self.rng.uniform(0.6, self.D - 0.6), 0.0])
            boxes = self._boxes(members, rot_z(yaw), t, 0.0)
            if self._fits(boxes, margin):
                self.floor += boxes
                return self._commit(members, rot_z(yaw), t)
        return []


def _one(spec: ob.ObjectSpec) -> list[Member]:
    return [(spec, (0.0, 0.0, 0.0), 0.0)]


def _dining_set(rng: np.random.Generator, kind: str = "dining", chairs: int | None = None) -> list[Member]:
    tab = ob.table(rng, kind)
    w, d, _ = tab.size
    members: list[Member] = [(tab, (0.0, 0.0, 0.0), 0.0)]
    style = choose(rng, {"dining": 0.8, "office": 0.2})
    # Each chair's front (-y) turns to the table: yaw pi on the table's -y side, 0 on its +y side.
    seats = [
        ((0.0, -d / 2), np.pi),
        ((0.0, d / 2), 0.0),
        ((-w / 2, 0.0), np.pi / 2),
        ((w / 2, 0.0), -np.pi / 2),
    ]
    if w > 1.3:
        seats += [((-w / 4, -d / 2), np.pi), ((w / 4, d / 2), 0.0)]
    n = chairs if chairs is not None else int(rng.integers(2, len(seats) + 1))
    for i in rng.permutation(len(seats))[:n]:
        (x, y), yaw = seats[i]
        c = ob.chair(rng, style)
        # Pull the chair out until its front edge is at the table's edge.
        front = rot_z(yaw) @ np.array([0.0, -c.size[1] / 2 - 0.02, 0.0])
        members.append((c, (x - front[0], y - front[1], 0.0), yaw + rng.normal(0, 0.15)))
    return members


def _desk_set(rng: np.random.Generator) -> list[Member]:
    dk = ob.desk(rng)
    members: list[Member] = [(dk, (0.0, 0.0, 0.0), 0.0)]
    if rng.random() < 0.8:
        c = ob.chair(rng, choose(rng, {"office": 0.7, "dining": 0.3}))
        members.append((c, (rng.uniform(-0.2, 0.2), -dk.size[1] / 2 - 0.1, 0.0), np.pi + rng.normal(0, 0.3)))
    if rng.random() < 0.6:
        members.append(
            (fx.clutter(rng, "monitor"), (rng.uniform(-0.2, 0.2), dk.size[1] / 2 - 0.2, dk.size[2]), 0.0)
        )
    return members


def _bed_set(rng: np.random.Generator) -> list[Member]:
    b = ob.bed(rng)
    members: list[Member] = [(b, (0.0, 0.0, 0.0), 0.0)]
    for sx in (-1, 1):
        if rng.random() < 0.55:
            ns = fx.clutter(rng, "nightstand")
            members.append(
                (ns, (sx * (b.size[0] / 2 + ns.size[0] / 2 + 0.05), b.size[1] / 2 - ns.size[1] / 2, 0.0), 0.0)
            )
    return members


def _living_set(rng: np.random.Generator) -> list[Member]:
    s = ob.sofa(rng)
    members: list[Member] = [(s, (0.0, 0.0, 0.0), 0.0)]
    if rng.random() < 0.7:
        t = ob.table(rng, "coffee")
        members.append((t, (0.0, -s.size[1] / 2 - rng.uniform(0.35, 0.5) - t.size[1] / 2, 0.0), 0.0))
    return members


def _openings(p: _Planner, rng: np.random.Generator, windows: int, curtain_p: float) -> None:
    for _ in range(1 + int(rng.random() < 0.2)):
        d = fx.door(rng)
        p.on_wall(_one(d), clearance=0.9, back=0.0, margin=0.0)
    for _ in range(windows):
        w = fx.window(rng)
        z = min(rng.uniform(0.7, 1.0), p.H - 0.25 - w.size[2])
        members = _one(w)
        if rng.random() < curtain_p:
            top = min(p.H - 0.06, z + w.size[2] + rng.uniform(0.1, 0.3))
            bottom = rng.uniform(0.01, 0.05) if rng.random() < 0.5 else max(0.3, z - 0.1)
            c = fx.curtain(rng, w.size[0], bottom, top)
            members.append((c, (0.0, 0.0, -z), 0.0))
        p.on_wall(members, z=z, back=0.0, margin=0.0)


def _furnish(p: _Planner, rng: np.random.Generator, kind: str) -> None:
    r = rng.random
    if kind == "bedroom":
        _openings(p, rng, int(rng.integers(1, 3)), 0.7)
        bed_set = _bed_set(rng)
        if not p.on_wall(bed_set, tries=60):
            p.on_wall(bed_set[:1], tries=100)  # no room for the nightstands
        for _ in range(int(rng.integers(1, 3))):
            p.on_wall(_one(ob.cabinet(rng)))
        if r() < 0.4:
            p.on_wall(_desk_set(rng))
        if r() < 0.3:
            p.on_wall(_one(ob.bookshelf(rng)))
    elif kind == "living room":
        _openings(p, rng, int(rng.integers(1, 4)), 0.6)
        living = _living_set(rng)
        if not (p.on_wall if r() < 0.6 else p.free)(living, tries=60):
            p.on_wall(living[:1], tries=100)  # the sofa without its coffee table
        for _ in range(int(rng.integers(1, 3))):
            p.on_wall(_one(ob.bookshelf(rng)))
        if r() < 0.6:
            p.on_wall(_one(ob.cabinet(rng)))
        if r() < 0.5:
            p.free(_one(ob.chair(rng, "armchair")), margin=0.2)
        if r() < 0.4:
            p.free(_dining_set(rng))
    elif kind == "office":
        _openings(p, rng, int(rng.integers(1, 3)), 0.3)
        for _ in range(int(rng.integers(1, 4))):
            p.on_wall(_desk_set(rng))
        for _ in range(int(rng.integers(1, 3))):
            p.on_wall(_one(ob.bookshelf(rng)))
        for _ in range(int(rng.integers(1, 3))):
            p.on_wall(_one(ob.cabinet(rng)))
        if r() < 0.4:
            p.free(_dining_set(rng))
        if r() < 0.2:
            p.on_wall(_one(ob.sofa(rng)))
    elif kind == "kitchen":
        _openings(p, rng, int(rng.integers(1, 3)), 0.3)
        length = min(rng.uniform(1.5, 3.5), max(p.W, p.D) - 1.2)
        run = [(s, (x, y, 0.0), 0.0) for s, (x, y) in fx.counter_run(rng, length, kitchen=True)]
        fridge = ob.refrigerator(rng)
        depth = run[-1][0].size[1]
        fridge_at = (length / 2 + fridge.size[0] / 2 + 0.03, depth / 2 - fridge.size[1] / 2, 0.0)
        with_fridge = [*run, (fridge, fridge_at, 0.0)] if r() < 0.85 else run
        # Without room for the fridge beside the run, it goes to another wall.
        placed = p.on_wall(with_fridge, corner=r() < 0.5, tries=60)
        if not placed:
            placed = p.on_wall(run, tries=100)
            if len(with_fridge) > len(run):
                p.on_wall(_one(fridge), tries=60)
        if placed and r() < 0.6:
            k, pos = p.last
            n = max(1, int(round(length / rng.uniform(0.5, 0.8))))
            z = rng.uniform(1.4, 1.6)
            for i in range(n):
                cab = fx.wall_cabinet(rng, length / n - 0.004)
                x = -length / 2 + (i + 0.5) * length / n
                p.on_wall(_one(cab), z=z, walls=[k], s=pos - x, tries=1, margin=0.0)
        if r() < 0.7:
            p.free(_dining_set(rng, chairs=int(rng.integers(2, 5))))
    else:  # bathroom
        _openings(p, rng, int(rng.random() < 0.5), 0.1)
        tub = fx.bathtub(rng)
        members: list[Member] = [(tub, (0.0, 0.0, 0.0), 0.0)]
        if r() < 0.9:
            members.append(
                (
                    fx.shower_curtain(rng, tub.size[0], rng.uniform(0.55, 0.8)),
                    (0.0, -tub.size[1] / 2 + 0.06, 0.0),
                    0.0,
                )
            )
        p.on_wall(members, tries=60, corner=True)
        p.on_wall(_one(fx.toilet(rng)), tries=60)
        if r() < 0.6:
            p.on_wall(
                [(s, (x, y, 0.0), 0.0) for s, (x, y) in fx.counter_run(rng, rng.uniform(0.7, 1.3), False)]
            )
        else:
            p.on_wall(_one(fx.sink(rng)), z=0.0)
        if r() < 0.4:
            p.on_wall(_one(ob.cabinet(rng)))
    # Shared by every room: small furniture, pictures, clutter.
    for _ in range(int(rng.integers(0, 3))):
        (p.on_wall if r() < 0.6 else p.free)(_one(ob.other_furniture(rng)))
    for _ in range(int(rng.integers(0 if kind in ("kitchen", "bathroom") else 1, 4))):
        pic = fx.picture(rng)
        z = rng.uniform(1.3, 1.7) - pic.size[2] / 2
        p.on_wall(_one(pic), z=max(z, 0.9), back=0.0, margin=0.0)
    for _ in range(int(rng.integers(1, 5))):
        c = fx.clutter(rng, choose(rng, {"box": 0.4, "lamp": 0.2, "object": 0.2, "unlabelled": 0.2}))
        (p.on_wall if r() < 0.6 else p.free)(_one(c), margin=0.05)


def make_room(
    rng: np.random.Generator,
    kind: str,
    side: tuple[float, float],
    height: tuple[float, float],
    ceiling: bool = False,
) -> Room:
    """Draw a room of ``kind`` with sides in ``side`` metres (bathrooms at the small end) and furnish it."""
    lo, hi = side
    if kind == "bathroom":
        hi = min(hi, lo + 1.5)
    elif kind in ("kitchen", "bedroom"):
        hi = min(hi, lo + 3.5)
    W, D, H = rng.uniform(lo, hi), rng.uniform(lo, hi), rng.uniform(*height)
    p = _Planner(rng, (W, D, H))
    _furnish(p, rng, kind)
    n = int(rng.integers(1, 3))
    lights = np.stack(
        [rng.uniform([0.2 * W, 0.2 * D, H - 0.2], [0.8 * W, 0.8 * D, H - 0.1]) for _ in range(n)]
    )
    return Room(
        kind,
        (W, D, H),
        [Placed(spec, R, t) for spec, R, t in fx.room_shell(rng, kind, (W, D, H), ceiling)] + p.placed,
        lights,
        float(rng.uniform(0.35, 0.55)),
    )
