"""Solid primitives of the synthetic rooms and their surface meshes.

Every piece of furniture is a handful of :class:`Part` s (oriented boxes, elliptic cylinders, hanging
sheets) in its own frame. :func:`mesh_part` turns one into a triangulated grid of about
``spacing``-metre edges, each vertex tagged with the surface patch it belongs to (the seed of the
over-segmentation), and :func:`inside` says which points lie within a solid part, so that surfaces
hidden inside other parts (a leg's top under the table top, a wall behind a cabinet) can be removed
the way a real scan never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BOX, CYLINDER, SHEET, CARVE = "box", "cylinder", "sheet", "carve"


@dataclass
class Part:
    """One primitive in its object's frame (z up, the object's front towards -y).

    ``size`` is the full extent: box (dx, dy, dz); cylinder (2 rx, 2 ry, height) about local z;
    sheet (width, 2 amplitude, height), a vertical surface waving along x that faces -y. A ``carve``
    box is invisible and only removes the surfaces of *other* objects inside it (the solid behind a
    wall's visible face). ``material`` indexes the owning object's material list.
    """

    kind: str
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    material: int = 0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    wavelength: float = 0.3

    @property
    def solid(self) -> bool:
        return self.kind != SHEET


@dataclass
class SurfaceMesh:
    """Vertices (V, 3), outward normals (V, 3), triangles (F, 3) and a patch id per vertex (V,)."""

    verts: np.ndarray
    normals: np.ndarray
    faces: np.ndarray
    patch: np.ndarray


def rot_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _grid_faces(nu: int, nv: int, flip: bool) -> np.ndarray:
    """Two triangles per grid cell of a (nu, nv) vertex grid indexed ``i * nv + j``."""
    i, j = np.meshgrid(np.arange(nu - 1), np.arange(nv - 1), indexing="ij")
    a = (i * nv + j).ravel()
    b, c, d = a + nv, a + nv + 1, a + 1
    tris = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return tris[:, ::-1].copy() if flip else tris


def _blocks(n: int, length: float, patch: float) -> np.ndarray:
    """Block index of each of ``n`` grid lines along a side of ``length`` cut into ~``patch`` pieces."""
    k = max(1, int(round(length / patch)))
    return np.minimum(np.arange(n) * k // n, k - 1)


def _count(length: float, spacing: float) -> int:
    return max(2, int(np.ceil(length / spacing)) + 1)


def _box_mesh(size: np.ndarray, spacing: float, patch: float) -> SurfaceMesh:
    verts, normals, faces, patches = [], [], [], []
    offset, next_patch = 0, 0
    for k in range(3):
        u, v = (k + 1) % 3, (k + 2) % 3
        nu, nv = _count(size[u], spacing), _count(size[v], spacing)
        gu = np.linspace(-size[u] / 2, size[u] / 2, nu)
        gv = np.linspace(-size[v] / 2, size[v] / 2, nv)
        pu, pv = np.meshgrid(gu, gv, indexing="ij")
        bu, bv = _blocks(nu, size[u], patch), _blocks(nv, size[v], patch)
        block = (bu[:, None] * (bv.max() + 1) + bv[None, :]).ravel()
        for sign in (-1.0, 1.0):
            p = np.zeros((nu * nv, 3))
            p[:, u], p[:, v], p[:, k] = pu.ravel(), pv.ravel(), sign * size[k] / 2
            n = np.zeros((nu * nv, 3))
            n[:, k] = sign
            verts.append(p)
            normals.append(n)
            # (u, v, k) is right-handed, so counter-clockwise in (u, v) faces +k.
            faces.append(_grid_faces(nu, nv, flip=sign < 0) + offset)
            patches.append(block + next_patch)
            offset += nu * nv
            next_patch += int(block.max()) + 1
    return SurfaceMesh(
        np.concatenate(verts), np.concatenate(normals), np.concatenate(faces), np.concatenate(patches)
    )


def _cylinder_mesh(size: np.ndarray, spacing: float, patch: float) -> SurfaceMesh:
    rx, ry, h = size[0] / 2, size[1] / 2, size[2]
    perimeter = np.pi * (3 * (rx + ry) - np.sqrt((3 * rx + ry) * (rx + 3 * ry)))  # Ramanujan
    nt = max(8, int(np.ceil(perimeter / spacing)))
    nz = _count(h, spacing)
    theta = np.arange(nt) * 2 * np.pi / nt
    t, z = np.meshgrid(theta, np.linspace(-h / 2, h / 2, nz), indexing="ij")
    side = np.stack([rx * np.cos(t), ry * np.sin(t), z], -1).reshape(-1, 3)
    side_n = np.stack([np.cos(t) / rx, np.sin(t) / ry, np.zeros_like(t)], -1).reshape(-1, 3)
    side_n /= np.linalg.norm(side_n, axis=1, keepdims=True)
    # Close the seam by wrapping column nt back onto column 0.
    i, j = np.meshgrid(np.arange(nt), np.arange(nz - 1), indexing="ij")
    a, b = (i * nz + j).ravel(), (((i + 1) % nt) * nz + j).ravel()
    side_f = np.concatenate([np.stack([a, b, b + 1], 1), np.stack([a, b + 1, a + 1], 1)])
    bt, bz = _blocks(nt, perimeter, patch), _blocks(nz, h, patch)
    side_p = (bt[:, None] * (bz.max() + 1) + bz[None, :]).ravel()
    verts, normals, faces, patches = [side], [side_n], [side_f], [side_p]
    offset, next_patch = len(side), int(side_p.max()) + 1
    rings = max(1, int(np.ceil(max(rx, ry) / spacing)))
    for sign in (-1.0, 1.0):
        r = np.arange(1, rings + 1)[:, None] / rings
        ring = np.stack(
            [rx * r * np.cos(theta), ry * r * np.sin(theta), np.full((rings, nt), sign * h / 2)], -1
        ).reshape(-1, 3)
        cap = np.concatenate([[[0.0, 0.0, sign * h / 2]], ring])
        q = 1 + np.arange(nt)  # first ring
        fan = np.stack([np.zeros(nt, int), q, 1 + (np.arange(nt) + 1) % nt], 1)
        ri, ti = np.meshgrid(np.arange(rings - 1), np.arange(nt), indexing="ij")
        a = (1 + ri * nt + ti).ravel()
        b = (1 + ri * nt + (ti + 1) % nt).ravel()
        quads = np.concatenate([np.stack([a, a + nt, b + nt], 1), np.stack([a, b + nt, b], 1)])
        f = np.concatenate([fan, quads])
        # Counter-clockwise about +z faces up; the bottom cap is reversed to face down.
        f = f if sign > 0 else f[:, ::-1]
        verts.append(cap)
        normals.append(np.tile([0.0, 0.0, sign], (len(cap), 1)))
        faces.append(f + offset)
        patches.append(np.full(len(cap), next_patch))
        offset += len(cap)
        next_patch += 1
    return SurfaceMesh(
        np.concatenate(verts), np.concatenate(normals), np.concatenate(faces), np.concatenate(patches)
    )


def _sheet_mesh(part: Part, spacing: float, patch: float, phase: float) -> SurfaceMesh:
    w, amp, h = part.size[0], part.size[1] / 2, part.size[2]
    nu, nv = _count(w, spacing / 1.5), _count(h, spacing)  # denser across the folds
    x, z = np.meshgrid(np.linspace(-w / 2, w / 2, nu), np.linspace(-h / 2, h / 2, nv), indexing="ij")
    k = 2 * np.pi / part.wavelength
    y = amp * np.sin(k * x + phase)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    n = np.stack([amp * k * np.cos(k * x + phase), -np.ones_like(x), np.zeros_like(x)], -1).reshape(-1, 3)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    bu, bv = _blocks(nu, w, patch), _blocks(nv, h, patch)
    block = (bu[:, None] * (bv.max() + 1) + bv[None, :]).ravel()
    # Grid axes (x, z) with x cross z = -y: counter-clockwise already faces the front (-y).
    return SurfaceMesh(verts, n, _grid_faces(nu, nv, flip=False), block)


def mesh_part(part: Part, spacing: float, patch: float, phase: float = 0.0) -> SurfaceMesh:
    """Triangulated surface of ``part`` in its object's frame.

    ``spacing`` is the target edge length in metres, ``patch`` the side of the square patches the
    surface is cut into (segments, never spanning two faces of a box); ``phase`` shifts a sheet's folds.
    """
    size = np.asarray(part.size, dtype=np.float64)
    if part.kind == BOX:
        mesh = _box_mesh(size, spacing, patch)
    elif part.kind == CYLINDER:
        mesh = _cylinder_mesh(size, spacing, patch)
    elif part.kind == SHEET:
        mesh = _sheet_mesh(part, spacing, patch, phase)
    else:
        raise ValueError(f"part kind {part.kind!r} has no surface")
    R = np.asarray(part.rotation, dtype=np.float64)
    return SurfaceMesh(mesh.verts @ R.T + np.asarray(part.center), mesh.normals @ R.T, mesh.faces, mesh.patch)


def inside(
    kind: str, center: np.ndarray, size: np.ndarray, rotation: np.ndarray, points: np.ndarray, eps: float
) -> np.ndarray:
    """Which ``points`` lie inside a solid box / cylinder grown by ``eps`` (all in one frame)."""
    local = (points - center) @ rotation
    half = np.asarray(size) / 2 + eps
    if kind in (BOX, CARVE):
        return np.all(np.abs(local) <= half, axis=1)
    if kind == CYLINDER:
        radial = (local[:, 0] / half[0]) ** 2 + (local[:, 1] / half[1]) ** 2
        return (radial <= 1.0) & (np.abs(local[:, 2]) <= half[2])
    return np.zeros(len(points), dtype=bool)


def world_aabb(kind: str, center: np.ndarray, size: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Axis-aligned bounds (2, 3) of a posed primitive (a sheet's bounds include its folds)."""
    half = np.abs(rotation) @ (np.asarray(size) / 2)
    return np.stack([center - half, center + half])
