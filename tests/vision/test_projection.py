"""PointDC Eq. 3-6 against hand-computed cameras and plain loops."""

from __future__ import annotations

import math

import torch

from unsup3d.vision.projection import (
    aggregate_views,
    depth_consistent,
    project,
    sample_features,
    superpoint_mean,
    zbuffer_visible,
)

K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]], dtype=torch.float64)


def _pose(yaw_deg: float, t: tuple[float, float, float]) -> torch.Tensor:
    """Camera-to-world: rotation about the camera's y axis (down) by yaw, then translation t."""
    a = math.radians(yaw_deg)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    pose[:3, 3] = torch.tensor(t)
    return pose


def test_projection_against_hand_computed_camera() -> None:
    pts = torch.tensor([[0.1, 0.2, 2.0], [3.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    poses = torch.stack([_pose(0, (0, 0, 0)), _pose(90, (1, 0, 0))])
    uv, depth, inside = project(pts, K.expand(2, 3, 3), poses, (80, 100))
    # view 0 is the identity: u = 100 * 0.1 / 2 + 50, v = 100 * 0.2 / 2 + 40
    assert torch.allclose(uv[0, 0], torch.tensor([55.0, 50.0], dtype=torch.float64))
    assert depth[0, 0] == 2.0 and inside[0].tolist() == [True, False, False]  # 2nd: u = 350, 3rd: behind
    # view 1 sits at x=1 looking along world +x (its z axis): the point (3, 0, 1) is 2 m ahead,
    # and 1 m to the camera's left (world +z is camera -x after a +90 degree yaw).
    assert torch.allclose(depth[1, 1], torch.tensor(2.0, dtype=torch.float64))
    assert torch.allclose(uv[1, 1], torch.tensor([100 * -1 / 2 + 50, 40.0], dtype=torch.float64))
    assert bool(inside[1, 1])


def test_hidden_point_gets_no_feature() -> None:
    # two points on the same ray: the far one is occluded by the near one
    pts = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 3.0], [0.2, 0.0, 2.0]], dtype=torch.float64)
    pose = _pose(0, (0, 0, 0))[None]
    uv, depth, inside = project(pts, K[None], pose, (80, 100))
    vis = zbuffer_visible(uv, depth, inside, (80, 100))
    assert vis[0].tolist() == [True, False, True]
    maps = torch.arange(80 * 100, dtype=torch.float64).reshape(1, 1, 80, 100)
    feats = sample_features(maps, uv, (80, 100))
    pooled, seen = aggregate_views(feats, vis)
    assert seen.tolist() == [True, False, True]
    assert pooled[1].item() == 0.0
    assert pooled[0].item() == 40 * 100 + 50  # the value of pixel (row 40, col 50)
    # the same with a measured depth image: the far point disagrees with the measured 1 m
    depth_img = torch.full((1, 80, 100), 2.0, dtype=torch.float64)
    depth_img[0, 40, 50] = 1.0
    assert depth_consistent(uv, depth, inside, depth_img)[0].tolist() == [True, False, True]


def test_tolerance_keeps_points_of_one_surface() -> None:
    pts = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.004], [0.0, 0.0, 1.5]], dtype=torch.float64)
    uv, depth, inside = project(pts, K[None], _pose(0, (0, 0, 0))[None], (80, 100))
    assert zbuffer_visible(uv, depth, inside, (80, 100), tolerance=0.01)[0].tolist() == [True, True, False]


def test_sampling_a_coarse_map_equals_upsampling_then_reading() -> None:
    torch.manual_seed(0)
    coarse = torch.randn(2, 5, 10, 12, dtype=torch.float64)
    up = torch.nn.functional.interpolate(coarse, size=(80, 96), mode="bilinear", align_corners=False)
    uv = torch.stack([torch.randint(0, 96, (2, 50)), torch.randint(0, 80, (2, 50))], -1).double()
    got = sample_features(coarse, uv, (80, 96))
    ref = torch.stack([up[v, :, uv[v, :, 1].long(), uv[v, :, 0].long()].T for v in range(2)])
    assert torch.allclose(got, ref, atol=1e-10)


def test_view_max_then_superpoint_mean_against_loops() -> None:
    g = torch.Generator().manual_seed(1)
    v, n, d, s = 4, 60, 3, 7
    feats = torch.randn(v, n, d, generator=g, dtype=torch.float64)
    vis = torch.rand(v, n, generator=g) < 0.4
    sp = torch.randint(-1, s, (n,), generator=g)
    for mode in ("max", "mean"):
        pooled, seen = aggregate_views(feats, vis, mode)
        for j in range(n):
            views = [feats[k, j] for k in range(v) if vis[k, j]]
            if not views:
                assert not seen[j] and torch.all(pooled[j] == 0)
                continue
            ref = torch.stack(views).amax(0) if mode == "max" else torch.stack(views).mean(0)
            assert torch.allclose(pooled[j], ref)
        means, counts = superpoint_mean(pooled, sp, s, mask=seen)
        for k in range(s):
            members = [pooled[j] for j in range(n) if sp[j] == k and seen[j]]
            assert counts[k] == len(members)
            if members:
                assert torch.allclose(means[k], torch.stack(members).mean(0))
            else:
                assert torch.all(means[k] == 0)
