"""Colours of the synthetic rooms: shared palettes, procedural textures and baked lighting.

Palettes are shared between classes on purpose (white paint on walls, doors, cabinets and window
frames; wood on tables, desks, shelves, doors and floors; fabric on sofas, beds, chairs and
curtains), so that colour hints at a class without deciding it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PALETTES: dict[str, list[tuple[int, int, int]]] = {
    "wood": [(196, 160, 110), (160, 115, 70), (120, 80, 50), (90, 60, 40), (210, 180, 140), (140, 90, 60)],
    "paint": [
        (235, 235, 230),
        (222, 216, 200),
        (200, 205, 210),
        (182, 200, 214),
        (215, 200, 180),
        (190, 210, 190),
        (225, 205, 205),
        (170, 170, 165),
    ],
    "fabric": [
        (90, 90, 95),
        (60, 80, 120),
        (150, 60, 55),
        (70, 110, 80),
        (190, 180, 160),
        (130, 130, 140),
        (100, 70, 110),
        (200, 150, 80),
        (230, 225, 215),
        (110, 80, 60),
    ],
    "metal": [(170, 170, 175), (40, 40, 45), (200, 200, 205), (120, 120, 125)],
    "ceramic": [(245, 245, 240), (235, 232, 225), (225, 230, 235), (215, 215, 210)],
    "stone": [(200, 195, 185), (120, 120, 120), (60, 60, 65), (225, 220, 210), (170, 150, 130)],
    "glass": [(90, 110, 130), (60, 75, 90), (140, 160, 175)],
    "carpet": [(130, 120, 110), (100, 100, 110), (150, 130, 100), (80, 90, 100), (170, 160, 150)],
    "plastic": [(230, 230, 230), (40, 40, 40), (60, 120, 180), (180, 60, 60), (90, 150, 90)],
}

# Texture kinds: how the base colour varies over a surface.
PLAIN, GRAIN, WEAVE, TILES, SPECKLE, ART, PLANKS, STRIPES = range(8)
_DEFAULT_TEXTURE = {
    "wood": GRAIN,
    "paint": PLAIN,
    "fabric": WEAVE,
    "metal": PLAIN,
    "ceramic": PLAIN,
    "stone": SPECKLE,
    "glass": PLAIN,
    "carpet": WEAVE,
    "plastic": PLAIN,
}


@dataclass
class Material:
    """A base colour (0-1 RGB), a texture kind, its scale in metres and a second colour for patterns."""

    color: np.ndarray
    texture: int
    scale: float
    accent: np.ndarray
    seed: int


def sample_material(rng: np.random.Generator, palette: str, texture: int | None = None) -> Material:
    """Draw a material from ``palette`` with a jittered base colour (the same wood is never twice alike)."""
    colors = PALETTES[palette]
    base = np.asarray(colors[rng.integers(len(colors))], dtype=np.float64) / 255.0
    base = np.clip(base * rng.uniform(0.85, 1.12) + rng.normal(0, 0.03, 3), 0.02, 1.0)
    accent_set = PALETTES["fabric" if palette != "fabric" else "paint"]
    accent = np.asarray(accent_set[rng.integers(len(accent_set))], dtype=np.float64) / 255.0
    kind = _DEFAULT_TEXTURE[palette] if texture is None else texture
    return Material(base, kind, float(rng.uniform(0.05, 0.3)), accent, int(rng.integers(2**31)))


def choose(rng: np.random.Generator, options: dict[str, float]) -> str:
    """Pick a key of ``options`` with probability proportional to its value."""
    keys = list(options)
    p = np.asarray([options[k] for k in keys], dtype=np.float64)
    return keys[rng.choice(len(keys), p=p / p.sum())]


def _waves(points: np.ndarray, seed: int, freq: float, count: int = 4) -> np.ndarray:
    """Smooth pseudo-noise in [-1, 1]: a sum of ``count`` random plane waves of about ``freq`` cycles/m."""
    g = np.random.default_rng(seed)
    dirs = g.normal(size=(count, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    k = 2 * np.pi * freq * g.uniform(0.6, 1.6, count)
    phase = g.uniform(0, 2 * np.pi, count)
    return np.sin(points @ (dirs * k[:, None]).T + phase).mean(axis=1) * np.sqrt(2.0)


def texture_colors(m: Material, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Per-vertex colour (V, 3) in 0-1 of material ``m`` at ``points`` in its object's frame."""
    n = len(points)
    low = _waves(points, m.seed, 1.5)  # stains, uneven paint, lighting falloff not modelled elsewhere
    shade = 1.0 + 0.05 * low
    color = np.tile(m.color, (n, 1))
    if m.texture == GRAIN:
        axis = np.argmax(np.ptp(points, axis=0)) if n else 0
        across = points[:, (axis + 1) % 3] + points[:, (axis + 2) % 3]
        shade = shade + 0.10 * np.sin(2 * np.pi * across / (0.02 + 0.05 * m.scale) + 2.0 * low)
    elif m.texture == WEAVE:
        shade = shade + 0.07 * _waves(points, m.seed + 1, 12.0, 6)
    elif m.texture in (TILES, PLANKS):
        size = 0.3 + m.scale * 1.5 if m.texture == TILES else 0.15 + m.scale * 0.3
        t = np.abs(normals).argmax(axis=1)
        # Grout / plank joints on the two in-plane axes; planks only have joints across.
        a = np.where(t == 0, points[:, 1], points[:, 0])
        b = np.where(t == 2, points[:, 1], points[:, 2])
        joint = np.abs(((a / size) % 1.0) - 0.5) > 0.45
        if m.texture == TILES:
            joint |= np.abs(((b / size) % 1.0) - 0.5) > 0.45
        shade = shade - 0.25 * joint
        if m.texture == PLANKS:
            shade = shade + 0.08 * np.sin(2 * np.pi * b / 0.07 + 3 * low)
    elif m.texture == SPECKLE:
        shade = shade + 0.12 * _waves(points, m.seed + 2, 20.0, 8)
    elif m.texture == STRIPES:
        stripe = np.sin(2 * np.pi * (points[:, 0] + points[:, 1]) / (0.05 + m.scale)) > 0.3
        color = np.where(stripe[:, None], m.accent, color)
    elif m.texture == ART:
        fields = np.stack([_waves(points, m.seed + c, 3.0 + 4 * m.scale, 5) for c in range(3)], 1)
        color = np.clip(0.5 + 0.45 * fields, 0, 1)
    return np.clip(color * shade[:, None], 0.0, 1.0)


def lighting(points: np.ndarray, normals: np.ndarray, lights: np.ndarray, ambient: float) -> np.ndarray:
    """Baked Lambertian shading (V,) from point ``lights`` (L, 3), as a scan's fused colours carry it."""
    total = np.zeros(len(points))
    for light in lights:
        d = light - points
        dist = np.linalg.norm(d, axis=1) + 1e-6
        total += np.clip(np.sum(normals * d, axis=1) / dist, 0, None) / (1.0 + 0.08 * dist**2)
    return ambient + (1.0 - ambient) * np.clip(total / max(len(lights), 1) * 1.6, 0, 1.2)
