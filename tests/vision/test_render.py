"""Cameras and the point-splatting renderer against analytic geometry and the Eq. 4 z-buffer."""

from __future__ import annotations

import math

import pytest
import torch

from unsup3d.vision import (
    cameras_around,
    cameras_inside,
    estimate_point_spacing,
    look_at,
    pinhole_intrinsics,
    project,
    render_points,
    zbuffer_visible,
)
from unsup3d.vision.projection import pixel_index

H, W = 80, 100
K = torch.tensor([[100.0, 0, 49.5], [0, 100.0, 39.5], [0, 0, 1]])
EYE = torch.eye(4)


def _plane_z(z: float, half: float, step: float) -> torch.Tensor:
    s = torch.arange(-half, half + 1e-6, step)
    x, y = torch.meshgrid(s, s, indexing="ij")
    return torch.stack([x, y, torch.full_like(x, z)], -1).reshape(-1, 3)


def test_look_at_axes_follow_opencv() -> None:
    pose = look_at((0.0, 0.0, 0.0), (1.0, 0.0, 0.0))
    # forward +x; looking along +x with z up, right is -y and image-down is -z
    assert torch.allclose(pose[:3, 2], torch.tensor([1.0, 0, 0]))
    assert torch.allclose(pose[:3, 0], torch.tensor([0.0, -1, 0]))
    assert torch.allclose(pose[:3, 1], torch.tensor([0.0, 0, -1]))
    k = pinhole_intrinsics(W, H, 90.0)
    assert math.isclose(float(k[0, 0]), W / 2, rel_tol=1e-6) and float(k[0, 2]) == (W - 1) / 2
    pts = torch.tensor([[5.0, 0, 0], [5.0, 0, 1], [5.0, 1, 0]])
    uv, depth, inside = project(pts, k[None], pose[None], (H, W))
    assert torch.allclose(uv[0, 0], torch.tensor([(W - 1) / 2, (H - 1) / 2]))  # target at the centre
    assert uv[0, 1, 1] < (H - 1) / 2  # world up is image up
    assert uv[0, 2, 0] < (W - 1) / 2  # world +y (left of the view) is image left
    assert torch.allclose(depth[0], torch.full((3,), 5.0)) and inside.all()
    # straight down the up axis still gives a rotation
    down = look_at(torch.tensor([[0.0, 0, 5]]), torch.tensor([[0.0, 0, 0]]))
    rot = down[0, :3, :3]
    assert torch.allclose(rot.T @ rot, torch.eye(3), atol=1e-6) and torch.isclose(
        torch.det(rot), torch.tensor(1.0)
    )


def test_cameras_around_see_the_whole_scene() -> None:
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(500, 3, generator=g) * torch.tensor([4.0, 3.0, 2.5])
    cams = cameras_around(pts, 6, image_size=(60, 80), seed=0)
    corners = torch.tensor([[x, y, z] for x in (0, 4.0) for y in (0, 3.0) for z in (0, 2.5)])
    _, _, inside = project(corners, cams.intrinsics, cams.cam_to_world, cams.image_size)
    assert inside.all()
    centre = torch.tensor([[2.0, 1.5, 1.25]])
    uv, _, _ = project(centre, cams.intrinsics, cams.cam_to_world, cams.image_size)
    assert torch.allclose(uv[:, 0], torch.tensor([39.5, 29.5]).expand(6, 2), atol=0.02)
    eyes = cams.cam_to_world[:, :3, 3]
    assert (eyes[:, 2] > 2.5).all()  # above the scene, looking down into it
    again = cameras_around(pts, 6, image_size=(60, 80), seed=0)
    assert torch.equal(again.cam_to_world, cams.cam_to_world)
    assert not torch.equal(cameras_around(pts, 6, seed=1).cam_to_world, cams.cam_to_world)


def test_cameras_inside_stand_in_the_room() -> None:
    """Eyes at eye height, over the floor plan, clear of the points; each looks at a point of the
    cloud at least ``min_view_distance`` (1 m) away horizontally."""
    g = torch.Generator().manual_seed(0)
    floor = torch.rand(3000, 3, generator=g) * torch.tensor([4.0, 3.0, 0.0])
    pillar = torch.rand(300, 3, generator=g) * torch.tensor([0.2, 0.2, 3.0]) + torch.tensor([1.9, 1.4, 0])
    pts = torch.cat([floor, pillar])
    cams = cameras_inside(pts, 8, seed=3)
    eyes = cams.cam_to_world[:, :3, 3]
    assert torch.allclose(eyes[:, 2], torch.full((8,), 1.5))  # eye height above the floor (z = 0)
    assert ((eyes[:, 0] > 0) & (eyes[:, 0] < 4) & (eyes[:, 1] > 0) & (eyes[:, 1] < 3)).all()
    assert (torch.cdist(eyes, pts).amin(1) >= 0.3).all()
    # The target is a point of the cloud on the optical axis (+z of the camera), in front of it: find
    # the points within 0.1 mm of each axis and check one of them is >= 1 m away horizontally.
    forward = cams.cam_to_world[:, :3, 2].double()
    rel = pts.double()[None] - eyes.double()[:, None]  # (V, N, 3)
    along = (rel * forward[:, None]).sum(-1)
    off_axis = torch.linalg.cross(rel, forward[:, None].expand_as(rel), dim=-1).norm(dim=-1)
    on_axis = (off_axis < 1e-4) & (along > 0)
    assert on_axis.any(1).all()
    horiz = rel[..., :2].norm(dim=-1)
    assert (torch.where(on_axis, horiz, 0.0).amax(1) >= 1.0).all()
    uv, depth, inside = project(pts, cams.intrinsics, cams.cam_to_world, cams.image_size)
    assert (inside.sum(1) > 0).all()
    assert torch.equal(cameras_inside(pts, 8, seed=3).cam_to_world, cams.cam_to_world)


def test_plane_renders_its_colour_over_the_expected_pixels() -> None:
    # A 1 m square at 2 m spans u, v in [24.5, 74.5] x [14.5, 64.5]: pixels 25-74 x 15-64, and
    # maybe one more row or column where a point sits exactly on a pixel border.
    pts = _plane_z(2.0, 0.5, 0.01)
    colors = torch.tensor([200, 50, 10], dtype=torch.uint8).expand(len(pts), 3)
    rgb, depth, index = render_points(pts, colors, K[None], EYE[None], (H, W), background=(1, 2, 3))
    assert rgb.shape == (1, H, W, 3) and rgb.dtype == torch.uint8 and index.dtype == torch.int64
    covered = index[0] >= 0
    assert covered[15:65, 25:75].all() and covered.sum() <= 52 * 52
    assert not covered[:14].any() and not covered[66:].any()
    assert not covered[:, :24].any() and not covered[:, 76:].any()
    assert (rgb[0][covered] == torch.tensor([200, 50, 10], dtype=torch.uint8)).all()
    assert (rgb[0][~covered] == torch.tensor([1, 2, 3], dtype=torch.uint8)).all()
    assert torch.allclose(depth[0][covered], torch.tensor(2.0)) and (depth[0][~covered] == 0).all()


def test_splats_close_the_holes_of_a_sparse_surface() -> None:
    # 5 cm spacing at 2 m is 2.5 px apart: single pixels leave holes, depth-scaled squares do not.
    pts = _plane_z(2.0, 0.5, 0.05)
    colors = torch.full((len(pts), 3), 255, dtype=torch.uint8)
    assert math.isclose(estimate_point_spacing(pts), 0.05, rel_tol=1e-3)
    _, _, single = render_points(pts, colors, K[None], EYE[None], (H, W), point_radius_px=0)
    _, _, splat = render_points(pts, colors, K[None], EYE[None], (H, W))
    assert (single[0, 20:60, 30:70] >= 0).float().mean() < 0.3
    assert (splat[0, 20:60, 30:70] >= 0).all()
    # the footprint shrinks with depth: the same plane further away covers fewer pixels
    _, _, far = render_points(pts * torch.tensor([1.0, 1, 2]), colors, K[None], EYE[None], (H, W))
    assert (far[0] >= 0).sum() < (splat[0] >= 0).sum()


def test_near_object_occludes_far_one_and_depth_is_analytic() -> None:
    far = _plane_z(3.0, 2.0, 0.02)
    near = _plane_z(1.0, 0.1, 0.005)
    pts = torch.cat([far, near])
    colors = torch.cat(
        [
            torch.tensor([0, 0, 255], dtype=torch.uint8).expand(len(far), 3),
            torch.tensor([255, 0, 0], dtype=torch.uint8).expand(len(near), 3),
        ]
    )
    # shuffled, so that drawing order cannot decide occlusion
    perm = torch.randperm(len(pts), generator=torch.Generator().manual_seed(0))
    rgb, depth, index = render_points(pts[perm], colors[perm], K[None], EYE[None], (H, W))
    # the near square spans 100 * 0.1 / 1 = 10 px either side of the centre
    block = (slice(32, 48), slice(42, 58))
    assert (rgb[0][block] == torch.tensor([255, 0, 0], dtype=torch.uint8)).all()
    assert torch.allclose(depth[0][block], torch.tensor(1.0))
    assert (perm[index[0][block]] >= len(far)).all()
    assert (rgb[0, 5:15, 5:95] == torch.tensor([0, 0, 255], dtype=torch.uint8)).all()
    assert torch.allclose(depth[0, 5:15, 5:95], torch.tensor(3.0))


def test_depth_of_a_tilted_plane_matches_ray_intersection() -> None:
    # plane z = 2 + 0.5 x seen from a camera 1 m to the left, through look_at: depth along the view
    s = torch.arange(-1.5, 1.5, 0.005)
    x, y = torch.meshgrid(s, s, indexing="ij")
    pts = torch.stack([x, y, 2 + 0.5 * x], -1).reshape(-1, 3)
    colors = torch.zeros(len(pts), 3, dtype=torch.uint8)
    pose = look_at((-1.0, 0.0, 0.0), (-1.0, 0.0, 1.0), up=(0.0, -1.0, 0.0))
    _, depth, index = render_points(pts, colors, K[None], pose[None], (H, W), point_radius_px=0)
    rows, cols = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    dx = (cols - 49.5) / 100
    # camera at x = -1 looking along +z (right = +x): the ray hits z = 2 + 0.5 (-1 + z dx)
    analytic = 1.5 / (1 - 0.5 * dx)
    hit = index[0] >= 0
    on_plane = (-1 + analytic * dx).abs() < 1.49  # the plane ends at x = +-1.5
    assert hit[on_plane].all()
    assert (depth[0][hit] - analytic[hit]).abs().max() < 0.01


def test_one_pixel_splats_are_the_eq4_zbuffer() -> None:
    g = torch.Generator().manual_seed(2)
    pts = torch.rand(3000, 3, generator=g) * torch.tensor([2.0, 2.0, 3.0]) + torch.tensor([-1.0, -1.0, 0.5])
    colors = torch.randint(0, 256, (3000, 3), generator=g, dtype=torch.uint8)
    poses = torch.stack([EYE, look_at((0.5, 0.0, -0.5), (0.0, 0.0, 2.0), up=(0.0, -1.0, 0.0))])
    ks = K.expand(2, 3, 3)
    rgb, depth, index = render_points(pts, colors, ks, poses, (H, W), point_radius_px=0)
    uv, z, inside = project(pts, ks, poses, (H, W))
    visible = zbuffer_visible(uv, z, inside, (H, W))
    for v in range(2):
        shown = index[v][index[v] >= 0]
        assert torch.equal(shown.sort().values, visible[v].nonzero().squeeze(1))
        pix = pixel_index(uv[v], (H, W))[visible[v]]
        assert torch.equal(index[v].reshape(-1)[pix], visible[v].nonzero().squeeze(1))
        assert torch.allclose(depth[v].reshape(-1)[pix], z[v][visible[v]])
        assert torch.equal(rgb[v].reshape(-1, 3)[pix], colors[visible[v]])
    # batched over views equals one view at a time
    single = render_points(pts, colors, ks[1:], poses[1:], (H, W), point_radius_px=0)
    assert torch.equal(single[2][0], index[1]) and torch.equal(single[0][0], rgb[1])


def test_bad_colours_are_rejected() -> None:
    pts = _plane_z(2.0, 0.1, 0.05)
    with pytest.raises(ValueError, match="float colors must be in"):
        render_points(pts, torch.full((len(pts), 3), 200.0), K[None], EYE[None], (H, W))
    with pytest.raises(ValueError, match="colors must be"):
        render_points(pts, torch.zeros(3, 3, dtype=torch.uint8), K[None], EYE[None], (H, W))
    floats = render_points(pts, torch.full((len(pts), 3), 0.5), K[None], EYE[None], (H, W))[0]
    assert (floats[floats > 0] == 128).all()
