"""Virtual cameras for PointDC's multi-view rendering of a point cloud (Sec. 3.3: ``K_v``, ``T_v``).

Conventions are those of ``projection.py``: ``cam_to_world`` ``(4, 4)`` with the camera looking down
its +z axis, x right and y down (OpenCV); pixel centres at integer coordinates. Scenes are z-up
(ScanNet, S3DIS). Every placement is seeded, so a scene always gets the same views.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Cameras:
    """``V`` pinhole cameras sharing one image size: ``intrinsics`` ``(V, 3, 3)``, ``cam_to_world``
    ``(V, 4, 4)``, ``image_size`` ``(H, W)``."""

    intrinsics: Tensor
    cam_to_world: Tensor
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        v = self.intrinsics.shape[0]
        if self.intrinsics.shape != (v, 3, 3) or self.cam_to_world.shape != (v, 4, 4):
            raise ValueError(
                f"Cameras: intrinsics must be (V, 3, 3) and cam_to_world (V, 4, 4), got "
                f"{tuple(self.intrinsics.shape)} and {tuple(self.cam_to_world.shape)}"
            )

    def __len__(self) -> int:
        return self.intrinsics.shape[0]

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(self.intrinsics.to(device), self.cam_to_world.to(device), self.image_size)


def _as_tensor(x: Tensor | Sequence[float], like: Tensor | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None else torch.get_default_dtype()
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=dtype, device=device)


def look_at(
    eye: Tensor | Sequence[float],
    target: Tensor | Sequence[float],
    up: Tensor | Sequence[float] = (0.0, 0.0, 1.0),
) -> Tensor:
    """Camera-to-world matrix of a camera at ``eye`` looking at ``target`` (OpenCV axes).

    ``eye`` and ``target`` are ``(3,)`` or ``(V, 3)``; returns ``(4, 4)`` or ``(V, 4, 4)``. The image's
    up (-y) is as close to ``up`` as the view direction allows; looking straight along ``up`` picks
    another reference axis instead of failing.
    """
    eye_t = _as_tensor(eye)
    eye_t = eye_t if eye_t.is_floating_point() else eye_t.float()
    target_t = _as_tensor(target, eye_t).to(eye_t)
    single = eye_t.ndim == 1
    eye_b, target_b = torch.broadcast_tensors(eye_t.reshape(-1, 3), target_t.reshape(-1, 3))
    up_t = _as_tensor(up, eye_t).to(eye_t).expand_as(eye_b)
    forward = target_b - eye_b
    norm = forward.norm(dim=-1, keepdim=True)
    if bool((norm < 1e-12).any()):
        raise ValueError("look_at: eye and target coincide, the view direction is undefined")
    forward = forward / norm
    right = torch.linalg.cross(forward, up_t)
    # Looking along `up`: fall back to the axis least aligned with the view direction.
    degenerate = right.norm(dim=-1) < 1e-6 * up_t.norm(dim=-1).clamp_min(1e-12)
    if bool(degenerate.any()):
        alt = torch.eye(3, dtype=eye_t.dtype, device=eye_t.device)[forward.abs().argmin(-1)]
        right = torch.where(degenerate[:, None], torch.linalg.cross(forward, alt), right)
    right = right / right.norm(dim=-1, keepdim=True)
    down = torch.linalg.cross(forward, right)
    pose = torch.eye(4, dtype=eye_t.dtype, device=eye_t.device).repeat(eye_b.shape[0], 1, 1)
    pose[:, :3, 0], pose[:, :3, 1], pose[:, :3, 2], pose[:, :3, 3] = right, down, forward, eye_b
    return pose[0] if single and target_t.ndim == 1 else pose


def pinhole_intrinsics(width: int, height: int, fov_deg: float, dtype: torch.dtype = torch.float32) -> Tensor:
    """``(3, 3)`` intrinsics with a horizontal field of view ``fov_deg``, square pixels, centred."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = (width / 2) / math.tan(math.radians(fov_deg) / 2)
    # Pixel centres at integers: the image spans [-0.5, W - 0.5], its centre is (W - 1) / 2.
    return torch.tensor([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], dtype=dtype)


def _bounds(points: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(points, Tensor):
        raise TypeError(f"points must be a torch.Tensor (torch.from_numpy for arrays), got {type(points)}")
    if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (N, 3) tensor, got {tuple(points.shape)}")
    return points.amin(0), points.amax(0)


def cameras_around(
    points: Tensor,
    num_views: int,
    *,
    image_size: tuple[int, int] = (240, 320),
    fov_deg: float = 60.0,
    elevation_deg: tuple[float, float] = (25.0, 65.0),
    margin: float = 1.05,
    seed: int = 0,
) -> Cameras:
    """Cameras on a sphere outside the scene, all looking at the centre of its bounding box.

    Azimuths are evenly spread (with a seeded offset) and elevations above the horizon uniform in
    ``elevation_deg``; the distance makes the bounding sphere fit the narrower field of view.
    """
    lo, hi = _bounds(points)
    pts_dtype = points.dtype if points.is_floating_point() else torch.float32
    centre = ((lo + hi) / 2).double().cpu()
    radius = float((hi - lo).double().norm()) / 2 or 1.0
    h, w = image_size
    k = pinhole_intrinsics(w, h, fov_deg, torch.float64)
    half_fov = math.atan(min(w, h) / 2 / float(k[0, 0]))
    distance = margin * radius / math.sin(half_fov)
    g = torch.Generator().manual_seed(seed)
    az = (
        (torch.rand((), generator=g, dtype=torch.float64) + torch.arange(num_views) / num_views) * 2 * math.pi
    )
    el_lo, el_hi = (math.radians(e) for e in elevation_deg)
    el = el_lo + (el_hi - el_lo) * torch.rand(num_views, generator=g, dtype=torch.float64)
    direction = torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], -1)
    pose = look_at(centre + distance * direction, centre.expand(num_views, 3))
    return Cameras(
        k.to(pts_dtype).expand(num_views, 3, 3).contiguous().to(points.device),
        pose.to(pts_dtype).to(points.device),
        image_size,
    )


def cameras_inside(
    points: Tensor,
    num_views: int,
    *,
    image_size: tuple[int, int] = (240, 320),
    fov_deg: float = 90.0,
    eye_height: float = 1.5,
    min_clearance: float = 0.3,
    min_view_distance: float = 1.0,
    cell: float = 0.25,
    max_reference_points: int = 50_000,
    seed: int = 0,
) -> Cameras:
    """Cameras standing inside a room at ``eye_height`` above the floor, looking at its content.

    Eyes are drawn over the floor plan (cells of size ``cell`` that hold points, so not outside an
    irregular room), at least ``min_clearance`` from every point when possible (not inside furniture),
    and at most 0.6 of the way up to the top of the cloud (small or synthetic scenes). Each looks at
    a random point of the cloud at least ``min_view_distance`` away horizontally, so views show
    walls, floor and objects.
    """
    lo, hi = _bounds(points)
    pts_dtype = points.dtype if points.is_floating_point() else torch.float32
    g = torch.Generator().manual_seed(seed)
    n = points.shape[0]
    ref_idx = torch.randperm(n, generator=g)[:max_reference_points]
    ref = points.detach().cpu().double()[ref_idx]
    floor, top = torch.quantile(ref[:, 2], torch.tensor([0.02, 0.995], dtype=torch.float64)).tolist()
    eye_z = floor + min(eye_height, 0.6 * (top - floor))
    # Floor plan: occupied xy cells.
    origin = ref[:, :2].amin(0)
    cells = ((ref[:, :2] - origin) / cell).floor().long()
    ncols = int(cells[:, 1].max()) + 1
    occupied = torch.unique(cells[:, 0] * ncols + cells[:, 1])
    num_candidates = max(64, 16 * num_views)
    span = (hi - lo).double().cpu()[:2]
    cand = lo.double().cpu()[:2] + torch.rand(num_candidates, 2, generator=g, dtype=torch.float64) * span
    cc = ((cand - origin) / cell).floor().long()
    on_plan = torch.isin(cc[:, 0] * ncols + cc[:, 1], occupied) & (cc[:, 1] < ncols) & (cc >= 0).all(1)
    eyes = torch.cat([cand, torch.full((num_candidates, 1), eye_z, dtype=torch.float64)], 1)
    clearance = torch.cdist(eyes, ref).amin(1)
    # Rank: on the plan and clear first, then by clearance; keeps the draw order among good ones.
    score = (
        on_plan.double() * 2
        + (clearance >= min_clearance).double()
        + clearance.clamp_max(min_clearance) / (10 * min_clearance)
    )
    order = torch.argsort(-score, stable=True)[:num_views]
    if order.numel() < num_views:
        order = order.repeat(math.ceil(num_views / order.numel()))[:num_views]
    eyes = eyes[order]
    # Targets: the first of a few random points far enough away horizontally.
    tries = torch.randint(0, ref.shape[0], (num_views, 64), generator=g)
    horiz = (ref[tries][..., :2] - eyes[:, None, :2]).norm(dim=-1)
    ok = horiz >= min_view_distance
    first = torch.where(ok.any(1), ok.double().argmax(1), horiz.argmax(1))
    targets = ref[tries[torch.arange(num_views), first]]
    h, w = image_size
    k = pinhole_intrinsics(w, h, fov_deg, pts_dtype)
    return Cameras(
        k.expand(num_views, 3, 3).contiguous().to(points.device),
        look_at(eyes, targets).to(pts_dtype).to(points.device),
        image_size,
    )
