"""CMD's per-scene feature pass: multi-view 2D features lifted onto points and super-voxels.

PointDC Sec. 3.3, Eq. 3-6: every view ``I_iv`` goes through the frozen teacher ``h``; points are
projected into it (Eq. 3), kept where visible (Eq. 4: a measured or rendered depth image when there
is one, the point z-buffer otherwise), read from the feature map (Eq. 5), max-pooled over views and
averaged per super-voxel (Eq. 6). Views come from RGB-D frames (ScanNet, 2D-3D-S) or from rendering
the coloured cloud (S3DIS rooms, scene folders).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unsup3d.vision.cameras import Cameras
from unsup3d.vision.projection import (
    depth_consistent,
    project,
    sample_features,
    superpoint_mean,
    zbuffer_visible,
)
from unsup3d.vision.render import render_points

Teacher = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Views:
    """``V`` views of one scene at one image size: ``images`` uint8 ``(V, H, W, 3)``, ``intrinsics``
    ``(V, 3, 3)``, ``cam_to_world`` ``(V, 4, 4)`` (OpenCV axes), and optionally ``depths`` float
    ``(V, H, W)`` in metres (0 where unknown), which then decide visibility."""

    images: Tensor
    intrinsics: Tensor
    cam_to_world: Tensor
    depths: Tensor | None = None

    def __post_init__(self) -> None:
        v = self.images.shape[0]
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != torch.uint8:
            raise ValueError(
                f"Views: images must be uint8 (V, H, W, 3), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.intrinsics.shape != (v, 3, 3) or self.cam_to_world.shape != (v, 4, 4):
            raise ValueError(
                f"Views: {v} images but intrinsics {tuple(self.intrinsics.shape)} and "
                f"cam_to_world {tuple(self.cam_to_world.shape)}"
            )
        if self.depths is not None and self.depths.shape != self.images.shape[:3]:
            raise ValueError(
                f"Views: depths {tuple(self.depths.shape)} do not match images {tuple(self.images.shape[:3])}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


def _tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else torch.from_numpy(np.ascontiguousarray(x))


def _scale_intrinsics(k: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    # Pixel centres at integers: u' + 0.5 = (u + 0.5) * s.
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    k = k.clone()
    k[0, 0], k[0, 1], k[1, 1] = k[0, 0] * sx, k[0, 1] * sx, k[1, 1] * sy
    k[0, 2], k[1, 2] = (k[0, 2] + 0.5) * sx - 0.5, (k[1, 2] + 0.5) * sy - 0.5
    return k


def views_from_frames(
    frames: Iterable[Sequence[Any]],
    *,
    image_size: tuple[int, int] | None = None,
    depth_scale: float = 1000.0,
    name: str = "frames",
) -> Views:
    """Views from RGB-D frames ``(color, depth, cam_to_world, intrinsics)``, as ScanNet exports them.

    ``color`` ``(H, W, 3)`` uint8; ``depth`` ``(h, w)`` registered to the colour image (integer
    arrays are divided by ``depth_scale``: 1000 for ScanNet's millimetres, 512 for 2D-3D-S; float
    arrays are metres) or ``None`` for every frame; ``intrinsics`` ``(3, 3)`` or ``(4, 4)`` of the colour
    image. Everything is resized to ``image_size`` (default: the depth's size, else the colour's):
    colour bilinearly, depth by nearest pixel, intrinsics scaled. Frames whose pose is not finite
    (ScanNet marks lost tracking with ``-inf``) are skipped with a warning; ``name`` labels messages.
    """
    images, depths, poses, ks = [], [], [], []
    has_depth: bool | None = None
    skipped = []
    for i, frame in enumerate(frames):
        if len(frame) != 4:
            raise ValueError(
                f"{name}: frame {i} must be (color, depth, cam_to_world, intrinsics), got {len(frame)} items"
            )
        color, depth, pose, k = (None if x is None else _tensor(x) for x in frame)
        if color.ndim != 3 or color.shape[-1] != 3 or color.dtype != torch.uint8:
            raise ValueError(
                f"{name}: frame {i} colour must be uint8 (H, W, 3), got {color.dtype} {tuple(color.shape)}"
            )
        if has_depth is None:
            has_depth = depth is not None
        elif has_depth != (depth is not None):
            raise ValueError(
                f"{name}: frame {i} {'lacks' if has_depth else 'has'} a depth image, unlike frame 0"
            )
        pose = pose.double().reshape(4, 4)
        if not bool(torch.isfinite(pose).all()):
            skipped.append(i)
            continue
        size = image_size or (tuple(depth.shape[:2]) if depth is not None else tuple(color.shape[:2]))
        ks.append(_scale_intrinsics(k.double()[:3, :3], tuple(color.shape[:2]), size))
        poses.append(pose)
        img = color.permute(2, 0, 1)[None].float()
        if tuple(color.shape[:2]) != size:
            img = F.interpolate(img, size=size, mode="bilinear", align_corners=False, antialias=True)
        images.append(img[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8))
        if depth is not None:
            d = depth.float() / depth_scale if not depth.is_floating_point() else depth.float()
            if tuple(d.shape) != size:
                d = F.interpolate(d[None, None], size=size, mode="nearest-exact")[0, 0]
            depths.append(d)
    if skipped:
        warnings.warn(
            f"{name}: skipped {len(skipped)} frame(s) with a non-finite pose: {skipped[:10]}", stacklevel=2
        )
    if not images:
        raise ValueError(f"{name}: no usable frame ({len(skipped)} skipped for a non-finite pose)")
    if len({tuple(x.shape) for x in images}) > 1:
        raise ValueError(f"{name}: frames differ in size; pass image_size to resize them to one size")
    return Views(
        torch.stack(images),
        torch.stack(ks).float(),
        torch.stack(poses).float(),
        torch.stack(depths) if depths else None,
    )


def views_from_render(
    points: Tensor | np.ndarray,
    colors: Tensor | np.ndarray,
    cameras: Cameras,
    *,
    point_size: float | None = None,
    max_radius_px: int = 8,
    background: Sequence[int] = (0, 0, 0),
) -> Views:
    """Views rendered from a coloured cloud by ``render_points``; the rendered depth is kept, so
    visibility is decided by it as for a sensor's depth (a point hidden behind another's splat is
    not seen). Rendered on ``points``' device."""
    rgb, depth, _ = render_points(
        _tensor(points),
        _tensor(colors),
        cameras.intrinsics,
        cameras.cam_to_world,
        cameras.image_size,
        point_size=point_size,
        max_radius_px=max_radius_px,
        background=background,
    )
    return Views(rgb, cameras.intrinsics.float(), cameras.cam_to_world.float(), depth)


def _default_device(device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def compute_targets(
    points: Tensor | np.ndarray,
    superpoint: Tensor | np.ndarray,
    teacher: Teacher,
    views: Views,
    *,
    view_pool: str = "max",
    chunk: int = 8,
    num_superpoints: int | None = None,
    depth_tolerance: float = 0.05,
    zbuffer_tolerance: float = 0.0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """PointDC Eq. 3-6 for one scene: 2D teacher features on every point and super-voxel.

    ``teacher`` maps uint8 images ``(c, H, W, 3)`` to feature maps ``(c, D, h, w)`` (e.g.
    ``ViTTeacher``); it runs on ``chunk`` views at a time. A point is visible in a view where
    ``|z - depth| < depth_tolerance`` if the views carry depth, else by the z-buffer (Eq. 4, with
    ``zbuffer_tolerance``). Features are pooled over the views that see a point (``view_pool``:
    ``"max"`` as in Eq. 6, or ``"mean"``), then averaged over each super-voxel's seen points
    (``superpoint`` int ``(N,)``, -1 for none). Work runs on ``device`` (default: CUDA when there is
    one; an ``nn.Module`` teacher is moved there); memory is ``O(N D)`` whatever the view count.

    Returns, on the CPU: ``point_features`` float16 ``(N, D)`` (0 where unseen), ``seen`` bool
    ``(N,)``, ``view_count`` int32 ``(N,)`` (views that see the point), ``superpoint_features``
    float32 ``(S, D)`` (0 for a super-voxel with no seen point) and ``superpoint_counts`` int64
    ``(S,)`` (its seen points).
    """
    if view_pool not in ("max", "mean"):
        raise ValueError(f"view_pool must be 'max' or 'mean', got {view_pool!r}")
    points, superpoint = _tensor(points), _tensor(superpoint)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"compute_targets: points must be (N, 3), got {tuple(points.shape)}")
    if superpoint.shape != (points.shape[0],):
        raise ValueError(
            f"compute_targets: superpoint must be ({points.shape[0]},), got {tuple(superpoint.shape)}"
        )
    if len(views) == 0:
        raise ValueError("compute_targets: no views")
    dev = _default_device(device)
    if isinstance(teacher, torch.nn.Module):
        teacher = teacher.to(dev)
    pts = points.to(dev, torch.float32)
    n = pts.shape[0]
    image_size = views.image_size
    acc: Tensor | None = None
    count = torch.zeros(n, dtype=torch.int32, device=dev)
    starts = range(0, len(views), chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="2D features", unit="chunk")
    for start in starts:
        sl = slice(start, start + chunk)
        fmap = teacher(views.images[sl].to(dev)).float()
        uv, depth, inside = project(
            pts, views.intrinsics[sl].to(dev), views.cam_to_world[sl].to(dev), image_size
        )
        if views.depths is not None:
            visible = depth_consistent(uv, depth, inside, views.depths[sl].to(dev), depth_tolerance)
        else:
            visible = zbuffer_visible(uv, depth, inside, image_size, zbuffer_tolerance)
        if acc is None:
            fill = float("-inf") if view_pool == "max" else 0.0
            acc = torch.full((n, fmap.shape[1]), fill, dtype=torch.float32, device=dev)
        for k in range(fmap.shape[0]):
            idx = visible[k].nonzero(as_tuple=True)[0]
            if idx.numel() == 0:
                continue
            # Only the visible points are sampled: (N, D) per view would not fit for big scenes.
            feats = sample_features(fmap[k : k + 1], uv[k : k + 1, idx], image_size)[0]
            acc[idx] = torch.maximum(acc[idx], feats) if view_pool == "max" else acc[idx] + feats
            count[idx] += 1
    assert acc is not None
    seen = count > 0
    if view_pool == "mean":
        acc = acc / count.clamp_min(1)[:, None]
    acc = torch.where(seen[:, None], acc, torch.zeros_like(acc))
    sp = superpoint.to(dev, torch.long)
    if num_superpoints is None:
        num_superpoints = int(sp.max()) + 1 if n and bool((sp >= 0).any()) else 0
    elif n and int(sp.max()) >= num_superpoints:
        raise ValueError(
            f"compute_targets: super-voxel id {int(sp.max())} >= num_superpoints {num_superpoints}"
        )
    sp_feat, sp_count = superpoint_mean(acc, sp, num_superpoints, mask=seen)
    return {
        "point_features": acc.to(torch.float16).cpu(),
        "seen": seen.cpu(),
        "view_count": count.cpu(),
        "superpoint_features": sp_feat.cpu(),
        "superpoint_counts": sp_count.round().long().cpu(),
    }
