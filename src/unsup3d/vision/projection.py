"""From pixels to points: PointDC's back-projection of 2D features (Eq. 3-6).

All functions are batched over views and vectorised over points, in torch, on whatever device
their inputs are on. Conventions: ``intrinsics`` ``(V, 3, 3)`` pinhole matrices; ``cam_to_world``
``(V, 4, 4)`` (ScanNet's ``pose/*.txt``), camera looking down +z with x right and y down (OpenCV);
pixel ``(u, v)`` is column, row, with pixel centres at integer coordinates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def project(
    points: Tensor, intrinsics: Tensor, cam_to_world: Tensor, image_size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    """PointDC Eq. 3 and the image-bounds filter: ``z p = K T P`` for every view.

    Returns ``uv`` ``(V, N, 2)`` pixel coordinates, ``depth`` ``(V, N)`` (the ``z`` of Eq. 3) and
    ``inside`` ``(V, N)``: in front of the camera and within ``0 <= u < W``, ``0 <= v < H``.
    """
    h, w = image_size
    world_to_cam = torch.linalg.inv(cam_to_world.to(points.dtype))
    cam = points @ world_to_cam[:, :3, :3].transpose(1, 2) + world_to_cam[:, None, :3, 3]
    depth = cam[..., 2]
    pix = cam @ intrinsics.to(points.dtype).transpose(1, 2)
    uv = pix[..., :2] / depth.clamp_min(1e-9)[..., None]
    u, v = uv.unbind(-1)
    # Pixel centres sit at integers, so a pixel covers [c - 0.5, c + 0.5).
    inside = (depth > 1e-6) & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return uv, depth, inside


def pixel_index(uv: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Flat index ``row * W + col`` of the pixel each projection falls in (clamped to the image)."""
    h, w = image_size
    col = uv[..., 0].round().long().clamp(0, w - 1)
    row = uv[..., 1].round().long().clamp(0, h - 1)
    return row * w + col


def zbuffer_visible(
    uv: Tensor, depth: Tensor, inside: Tensor, image_size: tuple[int, int], tolerance: float = 0.0
) -> Tensor:
    """PointDC Eq. 4: on each pixel only the nearest projected point (``argmin_j z``) is visible.

    With ``tolerance == 0`` exactly one point per pixel is visible (ties keep the lower index), as
    in the paper. A dense cloud puts many points of one surface on a pixel; ``tolerance > 0`` (metres)
    keeps every point within that distance behind the nearest. Returns ``(V, N)``.
    """
    v_count, n = depth.shape
    h, w = image_size
    pix = pixel_index(uv, image_size) + torch.arange(v_count, device=uv.device)[:, None] * (h * w)
    z = torch.where(inside, depth, torch.full_like(depth, float("inf")))
    zbuf = torch.full((v_count * h * w,), float("inf"), dtype=depth.dtype, device=depth.device)
    zbuf.scatter_reduce_(0, pix.reshape(-1), z.reshape(-1), reduce="amin")
    nearest = inside & (z <= zbuf[pix] + tolerance)
    if tolerance > 0:
        return nearest
    # Among points exactly at the minimum depth, keep the first index only.
    idx = torch.arange(n, device=uv.device).expand(v_count, n)
    big = torch.full((v_count * h * w,), n, dtype=torch.long, device=uv.device)
    first = big.scatter_reduce(0, pix[nearest], idx[nearest], reduce="amin")
    return nearest & (first[pix] == idx)


def depth_consistent(
    uv: Tensor, depth: Tensor, inside: Tensor, depth_images: Tensor, tolerance: float = 0.05
) -> Tensor:
    """Occlusion by a measured depth image (RGB-D views): visible where ``|z - D(u, v)| < tol``.

    ``depth_images`` ``(V, H, W)`` in metres, 0 where the sensor gave nothing (never visible).
    """
    v_count, h, w = depth_images.shape
    pix = pixel_index(uv, (h, w))
    measured = depth_images.reshape(v_count, -1).gather(1, pix)
    return inside & (measured > 0) & ((depth - measured).abs() < tolerance)


def sample_features(feature_maps: Tensor, uv: Tensor, image_size: tuple[int, int]) -> Tensor:
    """PointDC Eq. 5: read each view's feature map at every point's pixel, ``(V, N, D)``.

    ``feature_maps`` ``(V, D, h, w)`` may be coarser than the image (ViT patches): it is sampled
    bilinearly at the pixel's position scaled to the map, which equals upsampling the map to the
    image and reading the pixel.
    """
    h, w = image_size
    # grid_sample with align_corners=False maps -1/+1 to the outer edges of the border pixels.
    gx = (uv[..., 0] + 0.5) / w * 2 - 1
    gy = (uv[..., 1] + 0.5) / h * 2 - 1
    grid = torch.stack([gx, gy], -1)[:, :, None, :].to(feature_maps.dtype)
    out = F.grid_sample(feature_maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


def aggregate_views(features: Tensor, visible: Tensor, mode: str = "max") -> tuple[Tensor, Tensor]:
    """PointDC Eq. 6, first half: pool each point's features over the views that see it.

    ``features`` ``(V, N, D)``, ``visible`` ``(V, N)``. ``mode`` is ``"max"`` (the paper) or
    ``"mean"``. Returns ``(N, D)`` features (zero where no view sees the point) and ``seen`` ``(N,)``.
    """
    if mode not in ("max", "mean"):
        raise ValueError(f"mode must be 'max' or 'mean', got {mode!r}")
    seen = visible.any(0)
    mask = visible[..., None]
    if mode == "max":
        pooled = torch.where(mask, features, torch.full_like(features, float("-inf"))).amax(0)
    else:
        pooled = (features * mask).sum(0) / visible.sum(0).clamp_min(1)[:, None]
    return torch.where(seen[:, None], pooled, torch.zeros_like(pooled)), seen


def superpoint_mean(
    features: Tensor, superpoint: Tensor, num_superpoints: int, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """PointDC Eq. 6 (second half) and Eq. 7/8's ``S_vox``: mean feature of each super-voxel.

    Points with ``superpoint < 0`` or ``mask`` False are left out. Returns ``(S, D)`` means (zero for
    a super-voxel with no point counted) and ``(S,)`` point counts.
    """
    keep = superpoint >= 0
    if mask is not None:
        keep = keep & mask
    sp = superpoint[keep]
    sums = torch.zeros(num_superpoints, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, sp, features[keep])
    counts = torch.bincount(sp, minlength=num_superpoints).to(features.dtype)
    return sums / counts.clamp_min(1)[:, None], counts
