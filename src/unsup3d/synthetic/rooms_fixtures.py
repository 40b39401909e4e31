"""Fixtures of the synthetic rooms: openings and wall-mounted things, kitchen and bathroom fittings, clutter.

Wall-mounted builders (door, window, picture, curtain, wall cabinet) put the wall plane at local
y = 0 (``back=0``): parts at y < 0 stand out into the room, parts at y > 0 sink into the wall, where
the wall's solid hides them. Floor fittings follow :mod:`rooms_objects`' convention.
"""

from __future__ import annotations

import numpy as np

from .rooms_geometry import CARVE, CYLINDER, SHEET, Part, rot_x, rot_z
from .rooms_materials import ART, PLAIN, PLANKS, STRIPES, TILES, choose, sample_material
from .rooms_objects import ObjectSpec, box, cabinet, cyl, pick_materials

# Rotation taking a cylinder's local z axis onto x (rods, handles lying along a wall).
_ALONG_X = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])


def door(rng: np.random.Generator) -> ObjectSpec:
    """Door leaf set into a wall with its frame, optional raised panels and a lever handle."""
    w, h = rng.uniform(0.75, 0.95), rng.uniform(1.95, 2.1)
    p = rng.uniform(0.015, 0.03)
    mats = pick_materials(rng, {"wood": 0.5, "paint": 0.5}, "metal")
    fw = rng.uniform(0.04, 0.08)
    parts = [
        box(-w / 2, w / 2, -p, 0.04, 0, h),
        box(-w / 2 - fw, -w / 2, -p - 0.012, 0.02, 0, h + fw),
        box(w / 2, w / 2 + fw, -p - 0.012, 0.02, 0, h + fw),
        box(-w / 2, w / 2, -p - 0.012, 0.02, h, h + fw),
    ]
    if rng.random() < 0.5:
        for z0, z1 in ((0.15, h * 0.45), (h * 0.52, h - 0.15)):
            parts.append(box(-w / 2 + 0.1, w / 2 - 0.1, -p - 0.01, -p, z0, z1))
    hx = w / 2 - 0.08
    lever = Part(CYLINDER, (hx - 0.05, -p - 0.06, 1.0), (0.025, 0.025, 0.12), 1, _ALONG_X)
    parts += [
        box(hx - 0.02, hx + 0.02, -p - 0.01, -p, 0.94, 1.06, 1),
        box(hx - 0.012, hx + 0.012, -p - 0.06, -p - 0.01, 0.99, 1.01, 1),
        lever,
    ]
    return ObjectSpec("door", parts, mats, (w + 2 * fw, 0.1, h + fw), back=0.0)


def window(rng: np.random.Generator) -> ObjectSpec:
    """Window: glass pane flush with the wall, a frame standing out of it, mullions, an optional sill."""
    w, h = rng.uniform(0.6, 1.8), rng.uniform(0.8, 1.5)
    fw, p = rng.uniform(0.04, 0.08), rng.uniform(0.02, 0.05)
    mats = pick_materials(rng, {"paint": 0.6, "metal": 0.25, "wood": 0.15}, "glass")
    parts = [
        box(-w / 2 + fw, w / 2 - fw, -0.012, 0.005, fw, h - fw, 1),
        box(-w / 2, -w / 2 + fw, -p, 0.02, 0, h),
        box(w / 2 - fw, w / 2, -p, 0.02, 0, h),
        box(-w / 2 + fw, w / 2 - fw, -p, 0.02, 0, fw),
        box(-w / 2 + fw, w / 2 - fw, -p, 0.02, h - fw, h),
    ]
    if w > 0.9 or rng.random() < 0.4:
        parts.append(box(-fw / 2, fw / 2, -p, -0.012, fw, h - fw))
    if rng.random() < 0.3:
        z = h * rng.uniform(0.6, 0.75)
        parts.append(box(-w / 2 + fw, w / 2 - fw, -p, -0.012, z - fw / 2, z + fw / 2))
    depth = p
    if rng.random() < 0.6:
        depth = rng.uniform(0.1, 0.2)
        parts.append(box(-w / 2 - 0.05, w / 2 + 0.05, -depth, 0.02, -0.03, 0.0))
    return ObjectSpec("window", parts, mats, (w + 0.1, depth, h), back=0.0)


def picture(rng: np.random.Generator) -> ObjectSpec:
    """Framed picture hanging on a wall: a frame and a procedurally painted canvas."""
    w, h = rng.uniform(0.3, 1.2), rng.uniform(0.25, 0.9)
    fw, p = rng.uniform(0.02, 0.06), rng.uniform(0.02, 0.04)
    mats = [
        sample_material(rng, choose(rng, {"wood": 0.5, "metal": 0.3, "paint": 0.2})),
        sample_material(rng, "paint", ART),
    ]
    parts = [
        box(-w / 2 + fw, w / 2 - fw, -p + 0.008, 0.0, fw, h - fw, 1),
        box(-w / 2, -w / 2 + fw, -p, 0.0, 0, h),
        box(w / 2 - fw, w / 2, -p, 0.0, 0, h),
        box(-w / 2 + fw, w / 2 - fw, -p, 0.0, 0, fw),
        box(-w / 2 + fw, w / 2 - fw, -p, 0.0, h - fw, h),
    ]
    return ObjectSpec("picture", parts, mats, (w, p, h), back=0.0)


def _drape(rng: np.random.Generator, x0: float, x1: float, y: float, z0: float, z1: float, m: int) -> Part:
    amp, wl = rng.uniform(0.025, 0.06), rng.uniform(0.12, 0.25)
    return Part(SHEET, ((x0 + x1) / 2, y, (z0 + z1) / 2), (x1 - x0, 2 * amp, z1 - z0), m, wavelength=wl)


def curtain(rng: np.random.Generator, width: float, z0: float, z1: float) -> ObjectSpec:
    """Curtain hung off the wall on a rod: one or two folded panels, open at the sides or drawn."""
    palette = choose(rng, {"fabric": 0.7, "paint": 0.3})
    mats = [
        sample_material(rng, palette, STRIPES if rng.random() < 0.25 else None),
        sample_material(rng, "metal"),
    ]
    off = rng.uniform(0.08, 0.15)
    w = width + rng.uniform(0.2, 0.5)
    parts = [Part(CYLINDER, (0.0, -off, z1 + 0.02), (0.03, 0.03, w + 0.1), 1, _ALONG_X)]
    if rng.random() < 0.5:  # drawn: panels meeting in the middle
        parts += [_drape(rng, -w / 2, -0.01, -off, z0, z1, 0), _drape(rng, 0.01, w / 2, -off, z0, z1, 0)]
    else:  # open: bunched panels at both sides
        pw = rng.uniform(0.2, 0.4)
        parts += [
            _drape(rng, -w / 2, -w / 2 + pw, -off, z0, z1, 0),
            _drape(rng, w / 2 - pw, w / 2, -off, z0, z1, 0),
        ]
    return ObjectSpec("curtain", parts, mats, (w + 0.1, off + 0.08, z1 + 0.04), back=0.0)


def shower_curtain(rng: np.random.Generator, length: float, z0: float) -> ObjectSpec:
    """Shower curtain along a bath's open side, hanging from a rod at about 2 m."""
    palette = choose(rng, {"plastic": 0.5, "paint": 0.3, "fabric": 0.2})
    mats = [
        sample_material(rng, palette, STRIPES if rng.random() < 0.3 else PLAIN),
        sample_material(rng, "metal"),
    ]
    z1 = rng.uniform(1.85, 2.0)
    w = length * rng.uniform(0.5, 1.0)
    x0 = -length / 2 if rng.random() < 0.5 else length / 2 - w
    parts = [
        Part(CYLINDER, (0.0, 0.0, z1 + 0.02), (0.025, 0.025, length), 1, _ALONG_X),
        _drape(rng, x0, x0 + w, 0.0, z0, z1, 0),
    ]
    return ObjectSpec("shower curtain", parts, mats, (length, 0.12, z1 + 0.04))


def toilet(rng: np.random.Generator) -> ObjectSpec:
    """Toilet: pedestal, bowl, seat and a cistern at the back (+y)."""
    mats = pick_materials(rng, "ceramic", {"ceramic": 0.6, "wood": 0.2, "plastic": 0.2})
    bh = rng.uniform(0.36, 0.42)
    tw, td, th = rng.uniform(0.35, 0.45), rng.uniform(0.15, 0.2), rng.uniform(0.72, 0.85)
    d = rng.uniform(0.62, 0.75)
    yb = -d / 2 + rng.uniform(0.21, 0.25)
    parts = [
        cyl(0, yb + 0.08, 0, bh - 0.08, rng.uniform(0.11, 0.14), rng.uniform(0.17, 0.21)),
        cyl(0, yb, bh - 0.12, bh, rng.uniform(0.17, 0.2), rng.uniform(0.21, 0.24)),
        cyl(0, yb, bh, bh + 0.03, rng.uniform(0.17, 0.2), rng.uniform(0.21, 0.24), m=1),
        box(-tw / 2, tw / 2, d / 2 - td, d / 2, bh - 0.05, th),
        box(-tw / 2 - 0.01, tw / 2 + 0.01, d / 2 - td - 0.01, d / 2, th, th + 0.03),
        box(-0.1, 0.1, yb + 0.1, d / 2 - td, bh - 0.1, bh - 0.02),
    ]
    return ObjectSpec("toilet", parts, mats, (tw + 0.02, d, th + 0.03))


def _basin(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, t: float, m: int) -> list[Part]:
    """An open-topped basin: four walls of thickness ``t`` and a bottom."""
    return [
        box(x0, x1, y0, y0 + t, z0, z1, m),
        box(x0, x1, y1 - t, y1, z0, z1, m),
        box(x0, x0 + t, y0 + t, y1 - t, z0, z1, m),
        box(x1 - t, x1, y0 + t, y1 - t, z0, z1, m),
        box(x0 + t, x1 - t, y0 + t, y1 - t, z0, z0 + t, m),
    ]


def bathtub(rng: np.random.Generator) -> ObjectSpec:
    """Bath: a rectangular tub with thick walls and a flat bottom."""
    mats = pick_materials(rng, {"ceramic": 0.85, "plastic": 0.15})
    w, d, h = rng.uniform(1.5, 1.8), rng.uniform(0.7, 0.8), rng.uniform(0.5, 0.6)
    t = rng.uniform(0.06, 0.1)
    return ObjectSpec(
        "bathtub",
        _basin(-w / 2, w / 2, -d / 2, d / 2, 0, h, t, 0)
        + [box(-w / 2 + t, w / 2 - t, -d / 2 + t, d / 2 - t, 0, 0.12)],
        mats,
        (w, d, h),
    )


def _faucet(y: float, z: float, m: int) -> list[Part]:
    return [cyl(0, y, z, z + 0.22, 0.015, m=m), box(-0.012, 0.012, y - 0.15, y, z + 0.19, z + 0.22, m)]


def sink(rng: np.random.Generator) -> ObjectSpec:
    """Bathroom sink: a basin on a pedestal or hung on the wall, with a faucet."""
    mats = pick_materials(rng, "ceramic", "metal")
    w, d, h = rng.uniform(0.45, 0.6), rng.uniform(0.38, 0.48), rng.uniform(0.8, 0.9)
    parts = _basin(-w / 2, w / 2, -d / 2, d / 2, h - rng.uniform(0.15, 0.2), h, 0.03, 0) + _faucet(
        d / 2 - 0.05, h, 1
    )
    if rng.random() < 0.6:
        parts.append(cyl(0, 0.05, 0, h - 0.17, rng.uniform(0.07, 0.1)))
    return ObjectSpec("sink", parts, mats, (w, d, h + 0.22))


def counter_run(
    rng: np.random.Generator, length: float, kitchen: bool
) -> list[tuple[ObjectSpec, tuple[float, float]]]:
    """A counter top on a row of base cabinets, usually with a sink dropped into it.

    Returns (object, (x, y) offset) pairs in the run's frame: the top spans x in [-length/2, length/2],
    y in [-d/2, d/2], its back (+y) against the wall. The top has a real hole where the basin drops
    in, and the cabinet under the basin is lower behind a full-height false front.
    """
    d = rng.uniform(0.55, 0.65) if kitchen else rng.uniform(0.45, 0.55)
    h = rng.uniform(0.86, 0.94) if kitchen else rng.uniform(0.8, 0.88)
    t, over = rng.uniform(0.03, 0.05), rng.uniform(0.02, 0.04)
    n = max(1, int(round(length / rng.uniform(0.45, 0.8)))) if kitchen else 1
    edges = np.linspace(-length / 2, length / 2, n + 1)
    si = int(rng.integers(n)) if (not kitchen or rng.random() < 0.85) else -1
    cab_d = d - over
    out: list[tuple[ObjectSpec, tuple[float, float]]] = []
    plinth = rng.random() < 0.6
    depth = rng.uniform(0.15, 0.2)
    for i in range(n):
        cw = edges[i + 1] - edges[i] - 0.004
        spec = cabinet(rng, "kitchen cabinet" if kitchen else "cabinet", (cw, cab_d, h - t), plinth)
        if i == si:  # drop the body's top under the basin, keep the front at full height
            body = spec.parts[0]
            ztop = h - depth - 0.03
            cz0 = body.center[2] - body.size[2] / 2
            spec.parts[0] = box(-cw / 2, cw / 2, -cab_d / 2 + 0.015, cab_d / 2, cz0, ztop)
            spec.parts.append(box(-cw / 2, cw / 2, -cab_d / 2 + 0.015, -cab_d / 2 + 0.04, ztop, h - t))
        out.append((spec, ((edges[i] + edges[i + 1]) / 2, d / 2 - cab_d / 2)))
    mats = pick_materials(rng, {"stone": 0.6, "wood": 0.25, "ceramic": 0.15})
    y0, y1 = -d / 2, d / 2
    if si < 0:
        top = [box(-length / 2, length / 2, y0, y1, h - t, h)]
    else:
        cx = (edges[si] + edges[si + 1]) / 2
        bw = min(
            edges[si + 1] - edges[si] - 0.1, rng.uniform(0.4, 0.8) if kitchen else rng.uniform(0.35, 0.5)
        )
        bd = rng.uniform(0.32, 0.42) if kitchen else rng.uniform(0.3, 0.36)
        by0 = y0 + (d - bd) / 2 - 0.03
        top = [
            box(-length / 2, cx - bw / 2, y0, y1, h - t, h),
            box(cx + bw / 2, length / 2, y0, y1, h - t, h),
            box(cx - bw / 2, cx + bw / 2, y0, by0, h - t, h),
            box(cx - bw / 2, cx + bw / 2, by0 + bd, y1, h - t, h),
        ]
        smats = pick_materials(rng, "metal" if kitchen else "ceramic", "metal")
        parts = _basin(-bw / 2, bw / 2, by0, by0 + bd, h - depth, h + 0.004, 0.012, 0) + _faucet(
            by0 + bd + 0.06, h, 1
        )
        out.append((ObjectSpec("sink", parts, smats, (bw, d, h + 0.22)), (cx, 0.0)))
    if rng.random() < 0.4:  # backsplash
        top.append(box(-length / 2, length / 2, y1 - 0.015, y1, h, h + rng.uniform(0.08, 0.15)))
    out.append(
        (
            ObjectSpec("kitchen counter" if kitchen else "counter", top, mats, (length, d, h + 0.15)),
            (0.0, 0.0),
        )
    )
    return out


def wall_cabinet(rng: np.random.Generator, w: float) -> ObjectSpec:
    """Upper kitchen cabinet, hung on the wall above the counter (placed by its bottom height)."""
    return cabinet(rng, "kitchen cabinet", (w, rng.uniform(0.3, 0.36), rng.uniform(0.6, 0.8)), plinth=False)


def clutter(rng: np.random.Generator, kind: str | None = None) -> ObjectSpec:
    """Things outside ScanNet-20 (box, lamp, monitor, nightstand, object) or left unannotated."""
    kind = kind or choose(
        rng, {"box": 0.35, "lamp": 0.2, "nightstand": 0.15, "object": 0.15, "unlabelled": 0.15}
    )
    if kind == "lamp":
        mats = pick_materials(rng, "metal", {"paint": 0.6, "fabric": 0.4})
        floor = rng.random() < 0.5
        h = rng.uniform(1.4, 1.7) if floor else rng.uniform(0.4, 0.6)
        r = rng.uniform(0.15, 0.25) if floor else rng.uniform(0.1, 0.16)
        parts = [cyl(0, 0, 0, 0.03, r * 0.8), cyl(0, 0, 0.03, h - 0.2, 0.012), cyl(0, 0, h - 0.25, h, r, m=1)]
        return ObjectSpec("lamp", parts, mats, (2 * r, 2 * r, h))
    if kind == "monitor":
        mats = pick_materials(rng, {"metal": 0.3, "plastic": 0.7})
        mats[0].color[:] = mats[0].color * 0.3
        w, h = rng.uniform(0.45, 0.7), rng.uniform(0.28, 0.42)
        parts = [
            box(-w / 2, w / 2, -0.02, 0.02, 0.12, 0.12 + h),
            box(-0.025, 0.025, 0.02, 0.05, 0.02, 0.2),
            box(-0.12, 0.12, -0.08, 0.1, 0, 0.02),
        ]
        return ObjectSpec("monitor", parts, mats, (w, 0.18, 0.12 + h))
    if kind == "nightstand":
        return cabinet(
            rng, "nightstand", (rng.uniform(0.4, 0.55), rng.uniform(0.35, 0.45), rng.uniform(0.45, 0.6))
        )
    mats = pick_materials(rng, {"wood": 0.4, "plastic": 0.4, "paint": 0.2})
    w, d, h = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.6)
    parts = (
        [box(-w / 2, w / 2, -d / 2, d / 2, 0, h)] if rng.random() < 0.7 else [cyl(0, 0, 0, h, w / 2, d / 2)]
    )
    raw = {"box": "box", "object": "object"}.get(kind, "object")
    return ObjectSpec(raw, parts, mats, (w, d, h), annotated=kind != "unlabelled")


def room_shell(
    rng: np.random.Generator, kind: str, size: tuple[float, float, float], ceiling: bool
) -> list[tuple[ObjectSpec, np.ndarray, np.ndarray]]:
    """Walls, floor (and ceiling) of a W x D x H room with a corner at the origin, as (spec, R, t).

    Each is a visible inner face plus a hidden solid slab behind it that hides whatever sinks into
    the wall (the back of a door, a cabinet's back board).
    """
    W, D, H = size
    wet = kind in ("bathroom", "kitchen")
    tiled = kind == "bathroom" and rng.random() < 0.6
    wall_mat = sample_material(rng, "ceramic", TILES) if tiled else sample_material(rng, "paint")
    palette = choose(
        rng, {"ceramic": 0.5, "stone": 0.5} if wet else {"wood": 0.5, "carpet": 0.3, "stone": 0.2}
    )
    floor_mat = sample_material(rng, palette, {"wood": PLANKS, "carpet": None}.get(palette, TILES))
    out = []
    walls = [(W / 2, 0, W, np.pi), (W, D / 2, D, -np.pi / 2), (W / 2, D, W, 0.0), (0, D / 2, D, np.pi / 2)]
    for cx, cy, length, yaw in walls:
        mat = wall_mat if rng.random() < 0.8 else sample_material(rng, "paint")
        parts = [
            Part(SHEET, (0.0, 0.0, H / 2), (length, 0.0, H), 0),
            Part(CARVE, (0.0, 0.15, H / 2), (length + 0.6, 0.3, H + 0.6), 0),
        ]
        out.append(
            (
                ObjectSpec("wall", parts, [mat], (length, 0.0, H), back=0.0),
                rot_z(yaw),
                np.array([cx, cy, 0.0]),
            )
        )
    flat = rot_x(-np.pi / 2)  # a sheet's front (-y) turned up, its height along +y
    parts = [
        Part(SHEET, (0.0, 0.0, 0.0), (W, 0.0, D), 0, flat),
        Part(CARVE, (0.0, 0.0, -0.15), (W + 0.6, D + 0.6, 0.3)),
    ]
    out.append(
        (ObjectSpec("floor", parts, [floor_mat], (W, D, 0.0)), np.eye(3), np.array([W / 2, D / 2, 0.0]))
    )
    if ceiling:
        down = rot_x(np.pi / 2)
        parts = [
            Part(SHEET, (0.0, 0.0, 0.0), (W, 0.0, D), 0, down),
            Part(CARVE, (0.0, 0.0, 0.15), (W + 0.6, D + 0.6, 0.3)),
        ]
        ceil = ObjectSpec("ceiling", parts, [sample_material(rng, "paint")], (W, D, 0.0))
        out.append((ceil, np.eye(3), np.array([W / 2, D / 2, H])))
    return out
