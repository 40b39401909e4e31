"""RGB-D frames of the synthetic rooms: cameras inside the room and a vectorised z-buffer rasteriser.

Frames are rendered from the scene's own triangle mesh, so that depth, colour, pose and mesh agree
as they do in ScanNet (up to the noise of a structured-light sensor, which is added to the depth).
Cameras follow OpenCV/ScanNet conventions: x right, y down, z forward; poses are camera-to-world.
"""

from __future__ import annotations

import numpy as np

from .rooms_layout import Room

# ScanNet's colour and depth cameras both see about 58 x 45 degrees: fx ~ 0.9 * width.
FOCAL_PER_WIDTH = 0.9
_CHUNK = 2_000_000  # candidate pixels rasterised at once (bounds memory at large image sizes)


def intrinsics(height: int, width: int) -> np.ndarray:
    """Pinhole matrix (3, 3) of a ScanNet-like camera with an image of ``height`` x ``width`` pixels."""
    f = FOCAL_PER_WIDTH * width
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world pose (4, 4) at ``eye`` looking at ``target``, z up in the world."""
    f = target - eye
    f = f / np.linalg.norm(f)
    r = np.cross(f, [0.0, 0.0, 1.0])
    r = r / np.linalg.norm(r)
    d = np.cross(f, r)
    c, s = np.cos(roll), np.sin(roll)
    r, d = c * r + s * d, -s * r + c * d
    pose = np.eye(4)
    pose[:3, :3] = np.stack([r, d, f], axis=1)
    pose[:3, 3] = eye
    return pose


def camera_poses(room: Room, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` camera-to-room poses (count, 4, 4), each looking at a piece of furniture.

    Targets cycle through the room's objects so that several views see most of them; each camera
    stands at eye height on the room side of its target, clear of furniture.
    """
    W, D, _ = room.size
    boxes, targets = [], []
    for p in room.objects:
        c = p.corners()
        lo, hi = c.min(0), c.max(0)
        if p.spec.raw not in ("wall", "floor", "ceiling"):
            boxes.append((lo - 0.2, hi + 0.2))
            if p.spec.annotated:
                targets.append((lo + hi) / 2)
    centre = np.array([W / 2, D / 2])
    if not targets:
        targets = [np.array([W / 2, D / 2, 0.8])]
    order = rng.permutation(len(targets))
    poses = []
    for i in range(count):
        target = targets[order[i % len(order)]] + rng.normal(0, 0.1, 3)
        for attempt in range(50):
            away = centre - target[:2]
            ang = np.arctan2(away[1], away[0]) + rng.uniform(-0.9, 0.9)
            dist = rng.uniform(1.2, 3.0)
            eye = np.array(
                [*(target[:2] + dist * np.array([np.cos(ang), np.sin(ang)])), rng.uniform(1.2, 1.7)]
            )
            eye[:2] = np.clip(eye[:2], 0.35, [W - 0.35, D - 0.35])
            blocked = any(np.all(eye >= lo) and np.all(eye <= hi) for lo, hi in boxes)
            if (not blocked and np.linalg.norm(eye[:2] - target[:2]) > 0.8) or attempt == 49:
                break
        poses.append(look_at(eye, target, rng.normal(0, 0.04)))
    return np.stack(poses)


def rasterize(
    verts: np.ndarray,
    faces: np.ndarray,
    pose: np.ndarray,
    K: np.ndarray,
    height: int,
    width: int,
    near: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-buffer the triangles ``faces`` of world-space ``verts`` seen from camera-to-world ``pose``.

    Returns per pixel the camera-space depth (H, W) (inf where nothing is hit), the index of the
    visible face (H, W) (-1 where none) and its perspective-correct barycentric weights (H, W, 3).
    Pixel centres sit at integer coordinates, as ScanNet's principal points ((w - 1) / 2) assume.
    Triangles crossing the ``near`` plane are dropped (cameras keep clear of surfaces).
    """
    cam = (verts - pose[:3, 3]) @ pose[:3, :3]
    z = cam[:, 2]
    uv = cam[:, :2] / np.maximum(z, 1e-9)[:, None] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    face_ids = np.flatnonzero(np.all(z[faces] > near, axis=1))
    p = uv[faces[face_ids]]  # (F, 3, 2)
    lo = np.maximum(np.ceil(p.min(axis=1)).astype(np.int64), 0)
    hi = np.minimum(np.floor(p.max(axis=1)).astype(np.int64), [width - 1, height - 1])
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    keep = np.all(hi >= lo, axis=1) & (np.abs(area) > 1e-12)
    face_ids, p, lo, hi, area = face_ids[keep], p[keep], lo[keep], hi[keep], area[keep]
    # Edge functions: barycentric w_i(u, v) = A_i u + B_i v + C_i (normalised by the signed area).
    coef = np.empty((len(face_ids), 3, 3))
    for i in range(3):
        q, r = p[:, (i + 1) % 3], p[:, (i + 2) % 3]
        coef[:, i, 0] = (q[:, 1] - r[:, 1]) / area
        coef[:, i, 1] = (r[:, 0] - q[:, 0]) / area
        coef[:, i, 2] = (q[:, 0] * r[:, 1] - r[:, 0] * q[:, 1]) / area
    inv_z = 1.0 / z[faces[face_ids]]  # (F, 3)
    best = np.full(height * width, np.inf)
    best_face = np.full(height * width, -1, dtype=np.int64)
    best_w = np.zeros((height * width, 3))
    bw = hi[:, 0] - lo[:, 0] + 1
    counts = bw * (hi[:, 1] - lo[:, 1] + 1)
    ends = np.cumsum(counts)
    start = 0
    while start < len(face_ids):
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + _CHUNK, side="right")), start + 1)
        n = counts[start:stop]
        idx = np.repeat(np.arange(start, stop), n)
        local = np.arange(len(idx)) - np.repeat(np.cumsum(n) - n, n)
        u = lo[idx, 0] + local % bw[idx]
        v = lo[idx, 1] + local // bw[idx]
        w = coef[idx, :, 0] * u[:, None] + coef[idx, :, 1] * v[:, None] + coef[idx, :, 2]
        inside = np.all(w >= -1e-7, axis=1)  # a hair of overlap leaves no cracks on shared edges
        idx, u, v, w = idx[inside], u[inside], v[inside], w[inside]
        wz = w * inv_z[idx]
        depth = 1.0 / wz.sum(axis=1)
        pix = v * width + u
        order = np.lexsort((depth, pix))
        head = np.concatenate([[True], pix[order][1:] != pix[order][:-1]])
        sel = order[head]
        better = depth[sel] < best[pix[sel]]
        sel = sel[better]
        best[pix[sel]] = depth[sel]
        best_face[pix[sel]] = face_ids[idx[sel]]
        best_w[pix[sel]] = wz[sel] * depth[sel][:, None]
        start = stop
    return best.reshape(height, width), best_face.reshape(height, width), best_w.reshape(height, width, 3)


def depth_noise(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Structured-light sensor noise on a depth map in metres (0 = no reading).

    Axial noise grows with the square of the distance (sigma = 1.2 mm + 1.9 mm (z - 0.4)^2, Nguyen et
    al. 2012, for a Kinect); half the pixels along depth discontinuities and 1 % elsewhere read
    nothing, as do pixels beyond 6 m or where no surface was hit.
    """
    valid = np.isfinite(depth) & (depth < 6.0)
    z = np.where(valid, depth, 0.0)
    jump = 0.04 + 0.03 * z
    dx, dy = np.abs(np.diff(z, axis=1)), np.abs(np.diff(z, axis=0))
    edge = np.zeros_like(valid)
    edge[:, 1:] |= dx > jump[:, 1:]
    edge[:, :-1] |= dx > jump[:, :-1]
    edge[1:] |= dy > jump[1:]
    edge[:-1] |= dy > jump[:-1]
    drop = rng.random(z.shape)
    valid &= (drop > 0.01) & ~(edge & (drop < 0.5))
    sigma = 0.0012 + 0.0019 * (z - 0.4) ** 2
    z = z + rng.normal(0.0, 1.0, z.shape) * sigma
    return np.where(valid, z, 0.0)


def render_frame(
    verts: np.ndarray,
    faces: np.ndarray,
    colors: np.ndarray,
    pose: np.ndarray,
    color_size: tuple[int, int],
    depth_size: tuple[int, int],
    background: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One RGB-D frame: colour (H, W, 3) uint8 and depth (h, w) uint16 millimetres, each at its own size.

    Colour interpolates the mesh's vertex colours (the scan's fused colours), with a per-frame
    exposure, pixel noise, and ``background`` where nothing is hit (the missing ceiling); depth has
    sensor noise and zeros where there is no reading.
    """
    h, w = color_size
    _, face, bary = rasterize(verts, faces, pose, intrinsics(h, w), h, w)
    hit = face >= 0
    rgb = np.empty((h, w, 3))
    rgb[~hit] = background
    corner = colors[faces[face[hit]]].astype(np.float64)  # (P, 3 corners, 3 channels)
    rgb[hit] = np.einsum("pc,pck->pk", bary[hit], corner)
    rgb = rgb * rng.uniform(0.85, 1.15) + rng.normal(0.0, 3.0, rgb.shape)
    dh, dw = depth_size
    depth, _, _ = rasterize(verts, faces, pose, intrinsics(dh, dw), dh, dw)
    mm = np.round(depth_noise(depth, rng) * 1000.0)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), np.clip(mm, 0, 65535).astype(np.uint16)
