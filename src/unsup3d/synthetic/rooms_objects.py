"""Parametric furniture of the synthetic rooms: several variants per class, random sizes and materials.

Each builder returns an :class:`ObjectSpec` in the object's own frame: footprint centred on the
origin, standing on z = 0, front towards -y, back (the side that goes against a wall) towards +y.
Sizes follow real furniture and overlap between classes (a desk and a dining table share their
height, a cabinet and a nightstand their shape), so that no single measurement names the class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .rooms_geometry import BOX, CYLINDER, Part, rot_x, rot_z
from .rooms_materials import PLAIN, Material, choose, sample_material


@dataclass
class ObjectSpec:
    """One object: raw category (a ``raw_category`` of the label table), parts and their materials.

    ``size`` is (width, depth, height) of its box, x in [-w/2, w/2], y in [-d/2, d/2], z in [0, h];
    ``back`` is the local y of the side that touches a wall. ``annotated`` False leaves the object out
    of the aggregation, as ScanNet leaves some surfaces unlabelled.
    """

    raw: str
    parts: list[Part]
    materials: list[Material]
    size: tuple[float, float, float]
    back: float | None = None
    annotated: bool = True
    children: list[tuple[ObjectSpec, tuple[float, float, float], float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.back is None:
            self.back = self.size[1] / 2


def box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, m: int = 0) -> Part:
    """A box part given by its extents."""
    return Part(BOX, ((x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2), (x1 - x0, y1 - y0, z1 - z0), m)


def cyl(x: float, y: float, z0: float, z1: float, rx: float, ry: float | None = None, m: int = 0) -> Part:
    """A vertical (elliptic) cylinder part."""
    return Part(CYLINDER, (x, y, (z0 + z1) / 2), (2 * rx, 2 * (ry or rx), z1 - z0), m)


def pick_materials(rng: np.random.Generator, *palettes: dict[str, float] | str) -> list[Material]:
    return [sample_material(rng, p if isinstance(p, str) else choose(rng, p)) for p in palettes]


def _handle(x: float, y: float, z: float, vertical: bool, m: int) -> Part:
    hw, hh = (0.012, 0.06) if vertical else (0.06, 0.012)
    return box(x - hw, x + hw, y - 0.025, y, z - hh, z + hh, m)


def table(rng: np.random.Generator, kind: str | None = None) -> ObjectSpec:
    """Dining, round, coffee or end table: a top on legs, a pedestal, or a trestle."""
    kind = kind or choose(rng, {"dining": 0.45, "round": 0.2, "coffee": 0.25, "end": 0.1})
    mats = pick_materials(
        rng, {"wood": 0.6, "paint": 0.15, "stone": 0.15, "glass": 0.1}, {"wood": 0.5, "metal": 0.5}
    )
    t = rng.uniform(0.03, 0.06)
    if kind == "round":
        w = rng.uniform(0.7, 1.2)
        d = w * rng.uniform(0.75, 1.0)
        h = rng.uniform(0.72, 0.78)
        parts = [
            cyl(0, 0, h - t, h, w / 2, d / 2),
            cyl(0, 0, 0.03, h - t, rng.uniform(0.04, 0.08), m=1),
            cyl(0, 0, 0, 0.03, rng.uniform(0.2, 0.3), m=1),
        ]
        return ObjectSpec(str(rng.choice(["table", "dining table"])), parts, mats, (w, d, h))
    w, d, h = {
        "dining": (rng.uniform(0.9, 2.0), rng.uniform(0.7, 1.0), rng.uniform(0.72, 0.78)),
        "coffee": (rng.uniform(0.8, 1.3), rng.uniform(0.45, 0.75), rng.uniform(0.38, 0.5)),
        "end": (rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.5, 0.65)),
    }[kind]
    leg, inset = rng.uniform(0.04, 0.08), rng.uniform(0.02, 0.1)
    parts = [box(-w / 2, w / 2, -d / 2, d / 2, h - t, h)]
    if rng.random() < 0.2 and kind == "dining":  # trestle: two slab legs and a stretcher
        for sx in (-1, 1):
            x = sx * (w / 2 - inset - leg)
            parts.append(box(x - leg / 2, x + leg / 2, -d / 2 + 0.08, d / 2 - 0.08, 0, h - t, 1))
        parts.append(box(-w / 2 + inset, w / 2 - inset, -0.03, 0.03, 0.25, 0.33, 1))
    else:
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = sx * (w / 2 - inset - leg / 2), sy * (d / 2 - inset - leg / 2)
                parts.append(box(x - leg / 2, x + leg / 2, y - leg / 2, y + leg / 2, 0, h - t, 1))
        if rng.random() < 0.5:  # apron under the top
            a = w / 2 - inset - leg / 2
            b = d / 2 - inset - leg / 2
            parts += [
                box(-a, a, -b - 0.01, -b + 0.01, h - t - 0.09, h - t, 1),
                box(-a, a, b - 0.01, b + 0.01, h - t - 0.09, h - t, 1),
            ]
        if kind == "coffee" and rng.random() < 0.5:
            parts.append(box(-w / 2 + inset, w / 2 - inset, -d / 2 + inset, d / 2 - inset, 0.1, 0.13, 0))
    raw = {
        "dining": str(rng.choice(["table", "dining table"])),
        "coffee": "coffee table",
        "end": "end table",
    }[kind]
    return ObjectSpec(raw, parts, mats, (w, d, h))


def desk(rng: np.random.Generator) -> ObjectSpec:
    """Desk against a wall: panel sides and a modesty board, a drawer pedestal, or legs and a drawer."""
    w, d, h, t = (
        rng.uniform(1.0, 1.8),
        rng.uniform(0.5, 0.8),
        rng.uniform(0.70, 0.78),
        rng.uniform(0.025, 0.04),
    )
    mats = pick_materials(
        rng, {"wood": 0.55, "paint": 0.3, "plastic": 0.15}, {"metal": 0.5, "wood": 0.5}, "metal"
    )
    parts = [box(-w / 2, w / 2, -d / 2, d / 2, h - t, h)]
    kind = choose(rng, {"panel": 0.35, "pedestal": 0.4, "legs": 0.25})
    if kind == "panel":
        p = rng.uniform(0.02, 0.035)
        parts += [
            box(-w / 2, -w / 2 + p, -d / 2, d / 2, 0, h - t),
            box(w / 2 - p, w / 2, -d / 2, d / 2, 0, h - t),
            box(-w / 2 + p, w / 2 - p, d / 2 - 0.05, d / 2 - 0.03, rng.uniform(0.2, 0.4), h - t),
        ]
    else:
        leg = rng.uniform(0.03, 0.05)
        xs = [-w / 2 + 0.03, w / 2 - 0.03 - leg]
        if kind == "pedestal":
            pw = rng.uniform(0.38, 0.48)
            side = rng.choice([-1, 1])
            x0 = w / 2 - 0.02 - pw if side > 0 else -w / 2 + 0.02
            parts.append(box(x0, x0 + pw, -d / 2 + 0.02, d / 2 - 0.02, 0, h - t))
            n = int(rng.integers(2, 5))
            for i in range(n):  # drawer fronts and handles
                z0 = 0.03 + i * (h - t - 0.05) / n
                z1 = z0 + (h - t - 0.05) / n - 0.01
                parts += [
                    box(x0 + 0.01, x0 + pw - 0.01, -d / 2 + 0.008, -d / 2 + 0.021, z0, z1),
                    _handle(x0 + pw / 2, -d / 2 + 0.008, (z0 + z1) / 2, False, 2),
                ]
            xs = [xs[0]] if side > 0 else [xs[1]]
        else:
            parts.append(box(-0.3, 0.3, -d / 2 + 0.05, d / 2 - 0.1, h - t - 0.1, h - t, 0))
        for x in xs:
            for y in (-d / 2 + 0.03, d / 2 - 0.03 - leg):
                parts.append(box(x, x + leg, y, y + leg, 0, h - t, 1))
    return ObjectSpec("desk", parts, mats, (w, d, h))


def chair(rng: np.random.Generator, kind: str | None = None) -> ObjectSpec:
    """Dining chair (legs, slatted or solid back), office chair (star base, tilted back) or armchair."""
    kind = kind or choose(rng, {"dining": 0.45, "office": 0.35, "armchair": 0.2})
    frame = {"wood": 0.4, "metal": 0.3, "plastic": 0.3}
    if kind == "armchair":
        mats = pick_materials(rng, "fabric", {"wood": 0.6, "metal": 0.4})
        w, d = rng.uniform(0.7, 0.95), rng.uniform(0.7, 0.9)
        sh, top, ah = rng.uniform(0.38, 0.45), rng.uniform(0.75, 0.95), rng.uniform(0.55, 0.65)
        aw, bd, leg = rng.uniform(0.1, 0.18), rng.uniform(0.15, 0.22), rng.uniform(0.0, 0.12)
        parts = [
            box(-w / 2 + aw, w / 2 - aw, -d / 2, d / 2 - bd, leg, sh),
            box(-w / 2, w / 2, d / 2 - bd, d / 2, leg, top),
            box(-w / 2, -w / 2 + aw, -d / 2, d / 2 - bd, leg, ah),
            box(w / 2 - aw, w / 2, -d / 2, d / 2 - bd, leg, ah),
        ]
        if leg > 0.04:
            for sx in (-1, 1):
                for sy in (-1, 1):
                    x, y = sx * (w / 2 - 0.05), sy * (d / 2 - 0.05)
                    parts.append(box(x - 0.02, x + 0.02, y - 0.02, y + 0.02, 0, leg, 1))
        return ObjectSpec("armchair", parts, mats, (w, d, top))
    mats = pick_materials(rng, frame, {"fabric": 0.5, "wood": 0.2, "plastic": 0.3})
    w, d = rng.uniform(0.4, 0.52), rng.uniform(0.4, 0.5)
    sh, st = rng.uniform(0.43, 0.5), rng.uniform(0.03, 0.07)
    if kind == "office":
        top = rng.uniform(0.9, 1.15)
        parts = [
            cyl(0, 0, 0.06, sh - st, rng.uniform(0.02, 0.035), m=0),
            cyl(0, 0, 0.04, 0.1, 0.05, m=0),
            box(-w / 2, w / 2, -d / 2, d / 2, sh - st, sh, 1),
        ]
        for k in range(5):  # star base
            spoke = box(0.0, rng.uniform(0.27, 0.32), -0.02, 0.02, 0.04, 0.08, 0)
            spoke.rotation = rot_z(k * 2 * np.pi / 5 + 0.3)
            spoke.center = tuple(spoke.rotation @ np.asarray(spoke.center))
            parts.append(spoke)
        back = box(-w / 2 + 0.02, w / 2 - 0.02, -0.025, 0.025, 0, top - sh - 0.1, 1)
        back.rotation = rot_x(-rng.uniform(0.05, 0.25))
        back.center = tuple(np.array([0.0, d / 2 - 0.02, sh + 0.08]) + back.rotation @ np.array(back.center))
        parts.append(back)
        if rng.random() < 0.5:
            for sx in (-1, 1):
                x = sx * (w / 2 + 0.03)
                parts += [
                    box(x - 0.02, x + 0.02, -0.05, 0.05, sh, sh + 0.18, 0),
                    box(x - 0.035, x + 0.035, -d / 2 + 0.05, d / 4, sh + 0.18, sh + 0.21, 0),
                ]
        return ObjectSpec("office chair", parts, mats, (2 * 0.32, 2 * 0.32, top))
    top = rng.uniform(0.8, 1.0)
    leg = rng.uniform(0.03, 0.045)
    parts = [box(-w / 2, w / 2, -d / 2, d / 2, sh - st, sh, 1)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            x, y = sx * (w / 2 - leg / 2 - 0.01), sy * (d / 2 - leg / 2 - 0.01)
            z1 = top if sy > 0 else sh - st
            parts.append(box(x - leg / 2, x + leg / 2, y - leg / 2, y + leg / 2, 0, z1, 0))
    yb = d / 2 - leg / 2 - 0.01
    if rng.random() < 0.5:  # solid back panel
        parts.append(box(-w / 2 + leg, w / 2 - leg, yb - 0.012, yb + 0.012, sh + 0.08, top - 0.02, 1))
    else:  # horizontal slats
        for z in np.linspace(sh + 0.12, top - 0.06, int(rng.integers(2, 4))):
            parts.append(box(-w / 2 + leg, w / 2 - leg, yb - 0.01, yb + 0.01, z - 0.03, z + 0.03, 0))
    return ObjectSpec("chair", parts, mats, (w, d, top))


def sofa(rng: np.random.Generator) -> ObjectSpec:
    """Two- or three-seat sofa: base, seat cushions, back, arms, optional legs."""
    mats = pick_materials(rng, "fabric", {"wood": 0.6, "metal": 0.4}, "fabric")
    mats[2] = mats[0] if rng.random() < 0.7 else mats[2]
    seats = int(rng.integers(2, 4))
    w = seats * rng.uniform(0.55, 0.75) + 0.3
    d, sh = rng.uniform(0.8, 1.0), rng.uniform(0.38, 0.45)
    top, ah, aw = rng.uniform(0.75, 0.95), rng.uniform(0.55, 0.68), rng.uniform(0.1, 0.25)
    bd, leg = rng.uniform(0.15, 0.25), (rng.uniform(0.06, 0.12) if rng.random() < 0.5 else 0.0)
    ct = rng.uniform(0.1, 0.16)
    parts = [
        box(-w / 2 + aw, w / 2 - aw, -d / 2, d / 2 - bd, leg, sh - ct),
        box(-w / 2, w / 2, d / 2 - bd, d / 2, leg, top),
        box(-w / 2, -w / 2 + aw, -d / 2, d / 2 - bd, leg, ah),
        box(w / 2 - aw, w / 2, -d / 2, d / 2 - bd, leg, ah),
    ]
    xs = np.linspace(-w / 2 + aw, w / 2 - aw, seats + 1)
    for x0, x1 in zip(xs[:-1], xs[1:]):
        parts.append(box(x0 + 0.005, x1 - 0.005, -d / 2 + 0.01, d / 2 - bd, sh - ct, sh, 2))
        if rng.random() < 0.5:  # back cushion leaning on the back
            parts.append(box(x0 + 0.01, x1 - 0.01, d / 2 - bd - 0.12, d / 2 - bd, sh, top - 0.05, 2))
    if leg > 0:
        for sx in (-1, 1):
            for sy in (-1, 1):
                x, y = sx * (w / 2 - 0.06), sy * (d / 2 - 0.06)
                parts.append(box(x - 0.025, x + 0.025, y - 0.025, y + 0.025, 0, leg, 1))
    return ObjectSpec("couch", parts, mats, (w, d, top))


def pillow(rng: np.random.Generator, w: float | None = None) -> ObjectSpec:
    """A pillow (a class outside ScanNet-20: its points are ignored there)."""
    w = w or rng.uniform(0.45, 0.7)
    d, h = rng.uniform(0.3, 0.45), rng.uniform(0.1, 0.16)
    return ObjectSpec(
        "pillow",
        [box(-w / 2, w / 2, -d / 2, d / 2, 0, h)],
        pick_materials(rng, {"fabric": 0.6, "paint": 0.4}),
        (w, d, h),
    )


def bed(rng: np.random.Generator) -> ObjectSpec:
    """Single or double bed: frame, mattress, blanket, headboard (+y), maybe a footboard; pillows as kids."""
    mats = pick_materials(rng, {"wood": 0.5, "paint": 0.2, "fabric": 0.3}, "ceramic", "fabric")
    w = rng.uniform(0.9, 1.2) if rng.random() < 0.4 else rng.uniform(1.35, 1.9)
    length, fh, mt = rng.uniform(1.95, 2.2), rng.uniform(0.2, 0.4), rng.uniform(0.18, 0.28)
    hb, ht = rng.uniform(0.85, 1.3), rng.uniform(0.05, 0.1)
    top = fh + mt
    y0, y1 = -length / 2, length / 2 - ht
    parts = [
        box(-w / 2, w / 2, y0, y1, 0, fh),
        box(-w / 2 + 0.02, w / 2 - 0.02, y0 + 0.02, y1 - 0.01, fh, top, 1),
        box(-w / 2, w / 2, y1, length / 2, 0, hb),
    ]
    cover = y0 + (y1 - y0) * rng.uniform(0.6, 0.8)
    parts.append(
        box(-w / 2 - 0.01, w / 2 + 0.01, y0 - 0.02, cover, top - rng.uniform(0.1, 0.2), top + 0.03, 2)
    )
    if rng.random() < 0.35:
        parts.append(box(-w / 2, w / 2, y0 - ht, y0, 0, top + rng.uniform(0.05, 0.3)))
    n = 1 if w < 1.3 else 2
    kids = [(pillow(rng, w / n - 0.1), ((i - (n - 1) / 2) * w / n, y1 - 0.3, top), 0.0) for i in range(n)]
    return ObjectSpec("bed", parts, mats, (w, length, max(hb, top)), children=kids)


def cabinet(
    rng: np.random.Generator,
    raw: str = "cabinet",
    size: tuple[float, float, float] | None = None,
    plinth: bool | None = None,
) -> ObjectSpec:
    """Cabinet: body, optional plinth, doors or drawer fronts with handles."""
    mats = pick_materials(rng, {"wood": 0.45, "paint": 0.45, "metal": 0.1}, "metal")
    if size is None:
        kind = choose(rng, {"tall": 0.3, "low": 0.5, "file": 0.2})
        w = rng.uniform(0.4, 0.5) if kind == "file" else rng.uniform(0.5, 1.2)
        d = rng.uniform(0.35, 0.6)
        h = {"tall": rng.uniform(1.4, 2.0), "low": rng.uniform(0.5, 1.0), "file": rng.uniform(0.7, 1.4)}[kind]
        raw = "file cabinet" if kind == "file" else raw
    else:
        (w, d, h), kind = size, "low"
    pl = (rng.random() < 0.5) if plinth is None else plinth
    z0 = 0.08 if pl else 0.0
    parts = [box(-w / 2, w / 2, -d / 2 + 0.015, d / 2, z0, h)]
    if pl:
        parts.append(box(-w / 2 + 0.02, w / 2 - 0.02, -d / 2 + 0.06, d / 2, 0, z0))
    if kind == "file" or rng.random() < 0.25:
        n = int(rng.integers(2, 5))
        for i in range(n):
            a, b = z0 + i * (h - z0) / n + 0.005, z0 + (i + 1) * (h - z0) / n - 0.005
            parts += [
                box(-w / 2 + 0.01, w / 2 - 0.01, -d / 2, -d / 2 + 0.016, a, b),
                _handle(0.0, -d / 2, b - 0.06, False, 1),
            ]
    else:
        doors = 1 if w < 0.6 else 2
        for i in range(doors):
            a = -w / 2 + i * w / doors + 0.005
            b = a + w / doors - 0.01
            parts.append(box(a, b, -d / 2, -d / 2 + 0.016, z0 + 0.005, h - 0.005))
            hx = b - 0.05 if (i == 0 and doors == 2) or doors == 1 else a + 0.05
            parts.append(_handle(hx, -d / 2, min(h - 0.12, z0 + (h - z0) * 0.6), True, 1))
    return ObjectSpec(raw, parts, mats, (w, d, h))


def bookshelf(rng: np.random.Generator) -> ObjectSpec:
    """Open bookshelf: sides, top, plinth, back and shelves, partly filled with blocks of books."""
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.25, 0.4), rng.uniform(0.9, 2.2)
    t = rng.uniform(0.018, 0.03)
    mats = pick_materials(rng, {"wood": 0.6, "paint": 0.4})
    parts = [
        box(-w / 2, -w / 2 + t, -d / 2, d / 2, 0, h),
        box(w / 2 - t, w / 2, -d / 2, d / 2, 0, h),
        box(-w / 2 + t, w / 2 - t, -d / 2, d / 2, h - t, h),
        box(-w / 2 + t, w / 2 - t, -d / 2, d / 2, 0, 0.08),
        box(-w / 2 + t, w / 2 - t, d / 2 - 0.012, d / 2, 0.08, h - t),
    ]
    n = max(1, int(round((h - 0.1) / rng.uniform(0.3, 0.4))))
    levels = np.linspace(0.08, h - t, n + 1)
    for z in levels[1:-1]:
        parts.append(box(-w / 2 + t, w / 2 - t, -d / 2, d / 2 - 0.012, z - t, z))
    for z0, z1 in zip(levels[:-1], levels[1:]):
        x = -w / 2 + t
        while x < w / 2 - t - 0.08:
            bw = min(rng.uniform(0.08, 0.35), w / 2 - t - x)
            if rng.random() < 0.75:
                mats.append(
                    sample_material(rng, choose(rng, {"fabric": 0.5, "plastic": 0.3, "paint": 0.2}), PLAIN)
                )
                bh = (z1 - z0 - t) * rng.uniform(0.55, 0.9)
                parts.append(
                    box(
                        x,
                        x + bw,
                        d / 2 - 0.012 - (d - 0.012) * rng.uniform(0.6, 0.9),
                        d / 2 - 0.012,
                        z0,
                        z0 + bh,
                        len(mats) - 1,
                    )
                )
            x += bw
    return ObjectSpec("bookshelf", parts, mats, (w, d, h))


def refrigerator(rng: np.random.Generator) -> ObjectSpec:
    """Fridge: body, freezer and fridge doors, long handles."""
    w, d, h = rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.75), rng.uniform(1.5, 1.9)
    mats = pick_materials(rng, {"ceramic": 0.4, "metal": 0.45, "paint": 0.15}, {"metal": 0.6, "plastic": 0.4})
    split = h * (rng.uniform(0.6, 0.7) if rng.random() < 0.5 else rng.uniform(0.3, 0.4))
    parts = [
        box(-w / 2, w / 2, -d / 2 + 0.04, d / 2, 0.02, h),
        box(-w / 2 + 0.02, w / 2 - 0.02, -d / 2 + 0.05, d / 2, 0, 0.02),
    ]
    for a, b in ((0.03, split - 0.005), (split + 0.005, h - 0.005)):
        parts += [
            box(-w / 2, w / 2, -d / 2, -d / 2 + 0.04, a, b),
            box(w / 2 - 0.07, w / 2 - 0.05, -d / 2 - 0.03, -d / 2, a + 0.08, b - 0.08, 1),
        ]
    return ObjectSpec("refrigerator", parts, mats, (w, d, h))


def other_furniture(rng: np.random.Generator) -> ObjectSpec:
    """A trash can or an ottoman (ScanNet-20's ``otherfurniture``)."""
    if rng.random() < 0.55:
        mats = pick_materials(rng, {"metal": 0.5, "plastic": 0.5})
        h, r = rng.uniform(0.3, 0.7), rng.uniform(0.12, 0.22)
        if rng.random() < 0.5:
            return ObjectSpec(
                "trash can",
                [cyl(0, 0, 0, h, r), cyl(0, 0, h, h + 0.02, r + 0.01)],
                mats,
                (2 * r + 0.02, 2 * r + 0.02, h + 0.02),
            )
        return ObjectSpec("trash can", [box(-r, r, -r * 0.8, r * 0.8, 0, h)], mats, (2 * r, 1.6 * r, h))
    mats = pick_materials(rng, "fabric")
    w, h = rng.uniform(0.4, 0.8), rng.uniform(0.35, 0.45)
    if rng.random() < 0.5:
        return ObjectSpec("ottoman", [cyl(0, 0, 0, h, w / 2)], mats, (w, w, h))
    d = w * rng.uniform(0.6, 1.0)
    return ObjectSpec("ottoman", [box(-w / 2, w / 2, -d / 2, d / 2, 0, h)], mats, (w, d, h))
