"""One triangle mesh for a furnished room: coloured, cleaned of hidden surfaces, noisy, over-segmented.

This stands in for ScanNet's ``*_vh_clean_2.ply`` and its ``*.segs.json``: surfaces a scanner never
sees (inside a wall, under a cabinet, where a leg meets a top) are removed; colours carry texture
and baked lighting; vertices carry sensor-like noise; segments are small surface patches that never
span two objects, as the graph segmentation of the real release never crosses an annotated object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rooms_geometry import CARVE, mesh_part, world_aabb
from .rooms_geometry import inside as inside_part
from .rooms_layout import Room
from .rooms_materials import lighting, texture_colors

_EPS = 0.006  # contact tolerance: surfaces this close to (or inside) another solid are hidden


@dataclass
class SceneMesh:
    """Vertices (V, 3) in the room frame, colours (V, 3) uint8, triangles (F, 3), the object (index into
    ``room.objects``) and segment id of each vertex (V,), ScanNet-style ids (a member vertex's index)."""

    verts: np.ndarray
    colors: np.ndarray
    faces: np.ndarray
    obj: np.ndarray
    segment: np.ndarray


def _solids(room: Room) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, int, int, np.ndarray]]:
    """Every solid part in the room frame: kind, centre, size, rotation, object, part id, bounds."""
    out, pid = [], 0
    for oi, placed in enumerate(room.objects):
        for part in placed.spec.parts:
            pid += 1  # numbered as build_mesh numbers them
            if not part.solid:
                continue
            c = placed.rotation @ np.asarray(part.center) + placed.translation
            R = placed.rotation @ part.rotation
            out.append(
                (part.kind, c, np.asarray(part.size), R, oi, pid, world_aabb(part.kind, c, part.size, R))
            )
    return out


def _merge_small(patch: np.ndarray, obj: np.ndarray, verts: np.ndarray, min_size: int) -> np.ndarray:
    """Merge patches smaller than ``min_size`` vertices into the nearest patch of the same object."""
    ids, inv, counts = np.unique(patch, return_inverse=True, return_counts=True)
    cent = np.zeros((len(ids), 3))
    np.add.at(cent, inv, verts)
    cent /= counts[:, None]
    owner = np.zeros(len(ids), dtype=np.int64)
    owner[inv] = obj
    parent = np.arange(len(ids))
    size = counts.astype(np.int64).copy()

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return int(i)

    for i in np.argsort(counts, kind="stable"):
        r = root(i)
        if size[r] >= min_size:
            continue
        same = np.flatnonzero((owner == owner[i]) & (parent == np.arange(len(ids))))
        same = same[same != r]
        if len(same) == 0:
            continue
        j = int(same[np.argmin(np.linalg.norm(cent[same] - cent[r], axis=1))])
        parent[r] = j
        cent[j] = (cent[j] * size[j] + cent[r] * size[r]) / (size[j] + size[r])
        size[j] += size[r]
    roots = np.array([root(i) for i in range(len(ids))])
    return roots[inv]


def build_mesh(
    room: Room,
    rng: np.random.Generator,
    spacing: float,
    patch_size: float,
    vertex_noise: float,
    color_noise: float = 0.02,
) -> SceneMesh:
    """Mesh every visible part of ``room``, hide what a scanner cannot see, colour, perturb and segment it."""
    verts, normals, colors, faces, obj, part_id, patch = [], [], [], [], [], [], []
    offset, next_patch, pid = 0, 0, 0
    for oi, placed in enumerate(room.objects):
        for part in placed.spec.parts:
            pid += 1
            if part.kind == CARVE:
                continue
            m = mesh_part(part, spacing, patch_size, phase=float(rng.uniform(0, 2 * np.pi)))
            mat = placed.spec.materials[part.material]
            colors.append(texture_colors(mat, m.verts, m.normals))
            verts.append(m.verts @ placed.rotation.T + placed.translation)
            normals.append(m.normals @ placed.rotation.T)
            faces.append(m.faces + offset)
            obj.append(np.full(len(m.verts), oi))
            part_id.append(np.full(len(m.verts), pid))
            patch.append(m.patch + next_patch)
            offset += len(m.verts)
            next_patch += int(m.patch.max()) + 1
    V, N, C = np.concatenate(verts), np.concatenate(normals), np.concatenate(colors)
    F, O, P, S = np.concatenate(faces), np.concatenate(obj), np.concatenate(part_id), np.concatenate(patch)

    # Hide what lies inside another solid: each solid tests only the vertices in its bounding box.
    hidden = np.zeros(len(V), dtype=bool)
    for kind, c, size, R, owner, spid, box in _solids(room):
        near = np.flatnonzero(np.all((V >= box[0] - _EPS) & (V <= box[1] + _EPS), axis=1))
        # A part never hides itself; a carve slab (behind a wall) only hides other objects.
        near = near[(P[near] != spid) & ((O[near] != owner) if kind == CARVE else True)]
        if len(near):
            hidden[near[inside_part(kind, c, size, R, V[near], _EPS)]] = True
    # Keep every triangle with a visible corner, so surfaces still meet where they touch (a floor
    # reaches the wall) instead of stopping one grid step short of it.
    F = F[~np.all(hidden[F], axis=1)]
    keep = np.zeros(len(V), dtype=bool)
    keep[F.ravel()] = True
    remap = np.cumsum(keep) - 1
    V, N, C, O, S, F = V[keep], N[keep], C[keep], O[keep], S[keep], remap[F]

    C = C * lighting(V, N, room.lights, room.ambient)[:, None] + rng.normal(0, color_noise, C.shape)
    colors8 = np.clip(np.round(C * 255), 0, 255).astype(np.uint8)
    # Mostly smooth noise (a warped reconstruction), so the coincident vertices on the edges of a
    # box move together and open no cracks; a little independent jitter on top.
    k = rng.normal(0, 2 * np.pi * 4.0, (3, 6, 3))
    ph = rng.uniform(0, 2 * np.pi, (3, 6))
    smooth = np.stack([np.sin(V @ k[a].T + ph[a]).mean(axis=1) for a in range(3)], axis=1) * np.sqrt(12.0)
    V = V + vertex_noise * (0.9 * smooth + 0.3 * rng.normal(0, 1, V.shape))

    min_size = max(4, int(0.25 * (patch_size / spacing) ** 2))
    S = _merge_small(S, O, V, min_size)
    # Real meshes list vertices in no object order: shuffle, then name each segment by its first vertex.
    perm = rng.permutation(len(V))
    inv = np.empty_like(perm)
    inv[perm] = np.arange(len(perm))
    V, colors8, O, S, F = V[perm], colors8[perm], O[perm], S[perm], inv[F]
    first = np.full(S.max() + 1, len(V), dtype=np.int64)
    np.minimum.at(first, S, np.arange(len(V)))
    return SceneMesh(V, colors8, F, O, first[S])
