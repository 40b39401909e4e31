"""Z-buffered point splatting: the images ``I_iv`` of PointDC Sec. 3.3 for scenes without RGB-D frames.

S3DIS rooms and generic scene folders have coloured points but no camera frames; CMD then observes
the cloud from virtual cameras. Each point is drawn as a square whose side in pixels shrinks with
depth (a world-size footprint), so a surface sampled every few centimetres renders without holes;
the nearest splat wins each pixel (the z-buffer of Eq. 4, applied to footprints).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from unsup3d.vision.projection import project

_EMPTY = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF


def estimate_point_spacing(points: Tensor, samples: int = 512, chunk: int = 1 << 15, seed: int = 0) -> float:
    """Median distance from a point to its nearest neighbour, over ``samples`` random points."""
    n = points.shape[0]
    if n < 2:
        raise ValueError(f"estimate_point_spacing needs at least 2 points, got {n}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=g)[:samples].to(points.device)
    query = points[idx].float()
    best = torch.full((idx.numel(), 2), float("inf"), device=points.device)
    for start in range(0, n, chunk):
        d = torch.cdist(query, points[start : start + chunk].float())
        d = d.topk(min(2, d.shape[1]), dim=1, largest=False).values
        best = torch.cat([best, d], 1).topk(2, dim=1, largest=False).values
    # The nearest is the query itself (distance 0); duplicates make the second 0 too.
    return float(best[:, 1].median())


def _float_bits(z: Tensor) -> Tensor:
    # A positive float32's bit pattern orders as the float does: pack it above the index.
    return z.float().contiguous().view(torch.int32).long()


def render_points(
    points: Tensor,
    colors: Tensor,
    intrinsics: Tensor,
    cam_to_world: Tensor,
    image_size: tuple[int, int],
    *,
    point_size: float | None = None,
    point_radius_px: int | None = None,
    max_radius_px: int = 8,
    background: Sequence[int] = (0, 0, 0),
    budget: int = 1 << 24,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render a coloured point cloud from ``V`` cameras by z-buffered square splats.

    ``points`` ``(N, 3)``; ``colors`` ``(N, 3)`` uint8 0-255 or float in ``[0, 1]``; ``intrinsics``
    ``(V, 3, 3)``; ``cam_to_world`` ``(V, 4, 4)`` (OpenCV axes, as in ``projection.project``).
    A point at depth ``z`` covers ``(2 r + 1)^2`` pixels around its own, with ``r`` the smallest radius
    whose square spans ``f * point_size / z`` pixels, capped at ``max_radius_px``; ``point_size``
    (metres) defaults to 1.5 times the median nearest-neighbour spacing. ``point_radius_px`` fixes
    ``r`` instead (0: one pixel a point, exactly the z-buffer of PointDC Eq. 4). Each pixel shows the
    nearest splat, ties to the lower point index. ``budget`` bounds the splat fragments held at once.

    Returns ``rgb`` uint8 ``(V, H, W, 3)`` (``background`` where empty), ``depth`` float32
    ``(V, H, W)`` (the point's camera depth, 0 where empty) and ``index`` int64 ``(V, H, W)`` (the
    point seen, -1 where empty).
    """
    n = points.shape[0]
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"render_points: points must be (N, 3), got {tuple(points.shape)}")
    if colors.shape != (n, 3):
        raise ValueError(f"render_points: colors must be (N, 3) = ({n}, 3), got {tuple(colors.shape)}")
    if n >= 2**31:
        raise ValueError(f"render_points: at most 2^31 - 1 points, got {n}")
    if colors.is_floating_point():
        if n and float(colors.max()) > 1.0 + 1e-6:
            raise ValueError("render_points: float colors must be in [0, 1]; pass uint8 for 0-255 colours")
        colors_u8 = (colors.clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        colors_u8 = colors.to(torch.uint8)
    device = points.device
    v_count = intrinsics.shape[0]
    h, w = image_size
    points = points.float()
    intrinsics = intrinsics.to(device, torch.float32)
    uv, depth, _ = project(points, intrinsics, cam_to_world.to(device, torch.float32), image_size)

    if point_radius_px is not None:
        radius = torch.full_like(depth, int(point_radius_px), dtype=torch.long)
    else:
        if point_size is None:
            point_size = 1.5 * estimate_point_spacing(points) if n >= 2 else 0.0
        span_px = intrinsics[:, 0, 0, None] * point_size / depth.clamp_min(1e-6)
        radius = ((span_px - 1) / 2).ceil().clamp(0, max_radius_px).long()
    col = uv[..., 0].round()
    row = uv[..., 1].round()
    # A splat may reach into the image although its centre is outside.
    reach = radius.float()
    valid = (
        (depth > 1e-6) & (col >= -reach) & (col <= w - 1 + reach) & (row >= -reach) & (row <= h - 1 + reach)
    )
    view_id, point_id = valid.nonzero(as_tuple=True)
    col, row = col[view_id, point_id].long(), row[view_id, point_id].long()
    key = (_float_bits(depth[view_id, point_id]) << 32) | point_id
    radius = radius[view_id, point_id]

    zbuf = torch.full((v_count * h * w,), _EMPTY, dtype=torch.int64, device=device)
    for r in radius.unique().tolist():
        sel = (radius == r).nonzero(as_tuple=True)[0]
        offs = torch.arange(-r, r + 1, device=device)
        dy, dx = torch.meshgrid(offs, offs, indexing="ij")
        dy, dx = dy.reshape(-1), dx.reshape(-1)
        step = max(1, budget // dy.numel())
        for start in range(0, sel.numel(), step):
            s = sel[start : start + step]
            rr = row[s, None] + dy
            cc = col[s, None] + dx
            inb = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            pix = (view_id[s, None] * h + rr) * w + cc
            zbuf.scatter_reduce_(0, pix[inb], key[s, None].expand_as(pix)[inb], reduce="amin")

    zbuf = zbuf.view(v_count, h, w)
    empty = zbuf == _EMPTY
    index = torch.where(empty, torch.full_like(zbuf, -1), zbuf & _LOW32)
    depth_img = (zbuf >> 32).to(torch.int32).view(torch.float32)
    depth_img = torch.where(empty, torch.zeros_like(depth_img), depth_img)
    bg = torch.as_tensor(background, dtype=torch.uint8, device=device)
    rgb = torch.where(empty[..., None], bg, colors_u8.to(device)[index.clamp_min(0)])
    return rgb, depth_img, index
