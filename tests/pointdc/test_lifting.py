"""CMD's feature pass (PointDC Eq. 3-6) on a synthetic room, against plain references."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from unsup3d.pointdc.lifting import Views, compute_targets, views_from_frames, views_from_render
from unsup3d.vision import (
    aggregate_views,
    cameras_inside,
    depth_consistent,
    project,
    render_points,
    sample_features,
)


class ColorTeacher(nn.Module):
    """Test double: the 'feature' of a pixel is its colour in [0, 1], at full resolution."""

    def forward(self, images: Tensor) -> Tensor:
        return images.permute(0, 3, 1, 2).float() / 255


class PatchTeacher(nn.Module):
    """Test double with a ViT's geometry: a fixed random 8x8-patch embedding, a map 8 times coarser.
    (The real ViTTeacher runs through compute_targets in test_teacher.py.)"""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 16, 8, stride=8)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.embed.weight.copy_(torch.randn(self.embed.weight.shape, generator=g) / 14)
            self.embed.bias.zero_()

    def forward(self, images: Tensor) -> Tensor:
        return torch.tanh(self.embed(images.permute(0, 3, 1, 2).float() / 255))


def _plane(
    origin: tuple[float, ...], a: tuple[float, ...], b: tuple[float, ...], la: float, lb: float, step: float
):
    s = torch.arange(0, la + 1e-9, step)
    t = torch.arange(0, lb + 1e-9, step)
    ss, tt = torch.meshgrid(s, t, indexing="ij")
    o, a_, b_ = (torch.tensor(x) for x in (origin, a, b))
    return (o + ss.reshape(-1, 1) * a_ + tt.reshape(-1, 1) * b_).float()


class Room(NamedTuple):
    points: Tensor
    colors: Tensor
    superpoint: Tensor
    hidden: Tensor  # inside the closed box: no camera can see them
    interior: Tensor  # at least 15 cm from any other surface: no colour bleeds onto them


def room(step: float = 0.05) -> Room:
    """Floor and four walls of a 4 x 3 x 2.5 m room, a closed 0.5 m box on the floor and a cluster
    hidden inside it. Each surface has its own colour and super-voxel; the hidden cluster is
    super-voxel 7 (6 has no point), the box's top face has none (-1)."""
    x, y, z = (1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0)
    surfaces = [
        (_plane((0, 0, 0), x, y, 4, 3, step), (200, 200, 200)),  # floor
        (_plane((0, 0, 0), x, z, 4, 2.5, step), (220, 30, 30)),
        (_plane((0, 3, 0), x, z, 4, 2.5, step), (30, 220, 30)),
        (_plane((0, 0, 0), y, z, 3, 2.5, step), (30, 30, 220)),
        (_plane((4, 0, 0), y, z, 3, 2.5, step), (220, 220, 30)),
    ]
    box = [
        _plane((1.75, 1.25, 0.5), x, y, 0.5, 0.5, 0.025),  # top
        _plane((1.75, 1.25, 0.0), x, z, 0.5, 0.5, 0.025),
        _plane((1.75, 1.75, 0.0), x, z, 0.5, 0.5, 0.025),
        _plane((1.75, 1.25, 0.0), y, z, 0.5, 0.5, 0.025),
        _plane((2.25, 1.25, 0.0), y, z, 0.5, 0.5, 0.025),
    ]
    surfaces.append((torch.cat(box), (150, 20, 150)))
    g = torch.Generator().manual_seed(0)
    hidden = torch.tensor([2.0, 1.5, 0.25]) + 0.05 * torch.randn(50, 3, generator=g)
    surfaces.append((hidden, (255, 255, 255)))
    points = torch.cat([p for p, _ in surfaces])
    colors = torch.cat([torch.tensor(c, dtype=torch.uint8).expand(len(p), 3) for p, c in surfaces])
    superpoint = torch.cat([torch.full((len(p),), i) for i, (p, _) in enumerate(surfaces)])
    top = torch.zeros(len(points), dtype=torch.bool)
    n_before_box = sum(len(p) for p, _ in surfaces[:5])
    top[n_before_box : n_before_box + len(box[0])] = True
    superpoint[top] = -1
    hidden_mask = superpoint == 6
    superpoint[hidden_mask] = 7
    p = points
    to_walls = torch.stack([p[:, 0], 4 - p[:, 0], p[:, 1], 3 - p[:, 1], p[:, 2], 2.5 - p[:, 2]], 1)
    near_box = ((p[:, :2] - torch.tensor([2.0, 1.5])).abs().amax(1) < 0.4) & (p[:, 2] < 0.65)
    interior = (to_walls.sort(1).values[:, 1] >= 0.15) & ~near_box  # [:, 0] is its own surface
    return Room(points, colors, superpoint, hidden_mask, interior)


@pytest.fixture(scope="module")
def scene() -> Room:
    return room()


@pytest.fixture(scope="module")
def patch_teacher() -> PatchTeacher:
    return PatchTeacher()


def _colour_agreement(out: dict[str, Tensor], scene: Room, tol: float = 0.02) -> float:
    """Fraction of the seen interior points whose feature is their own colour."""
    m = out["seen"] & scene.interior
    err = (out["point_features"][m].float() - scene.colors[m].float() / 255).abs().amax(1)
    return float((err < tol).float().mean())


@pytest.mark.parametrize("view_pool", ["max", "mean"])
def test_rendered_views_reproduce_point_colours(scene, view_pool: str) -> None:
    # End to end: placement, rendering, projection, visibility, sampling and pooling must all agree
    # for a colour 'teacher' to hand each point back its own colour.
    points, colors, superpoint, hidden, _ = scene
    cams = cameras_inside(points, 6, image_size=(72, 96), seed=0)
    views = views_from_render(points, colors, cams)
    out = compute_targets(
        points, superpoint, ColorTeacher(), views, view_pool=view_pool, chunk=3, device="cpu"
    )
    seen = out["seen"]
    assert not seen[hidden].any()
    assert torch.all(out["point_features"][hidden] == 0) and torch.all(out["view_count"][hidden] == 0)
    assert seen.float().mean() > 0.4
    assert _colour_agreement(out, scene) > 0.99


def test_rgbd_frames_reproduce_point_colours(scene) -> None:
    # ScanNet-style frames: numpy colour at twice the depth's resolution (its own intrinsics, 4x4),
    # millimetre uint16 depth registered to it; one frame has a lost pose (-inf) and is dropped.
    points, colors, superpoint, hidden, _ = scene
    cams = cameras_inside(points, 4, image_size=(72, 96), seed=2)
    k_color = cams.intrinsics.clone()
    k_color[:, :2, :2] *= 2
    k_color[:, :2, 2] = (k_color[:, :2, 2] + 0.5) * 2 - 0.5
    rgb, _, _ = render_points(points, colors, k_color, cams.cam_to_world, (144, 192))
    _, depth, _ = render_points(points, colors, cams.intrinsics, cams.cam_to_world, (72, 96))
    frames = []
    for v in range(4):
        k4 = np.eye(4)
        k4[:3, :3] = k_color[v].numpy()
        depth_mm = (depth[v] * 1000).round().numpy().astype(np.uint16)
        frames.append((rgb[v].numpy(), depth_mm, cams.cam_to_world[v].double().numpy(), k4))
    frames.insert(2, (frames[0][0], frames[0][1], np.full((4, 4), -np.inf), frames[0][3]))
    with pytest.warns(UserWarning, match="scene_test: skipped 1 frame"):
        views = views_from_frames(frames, name="scene_test")
    assert views.images.shape == (4, 72, 96, 3) and views.depths.dtype == torch.float32
    torch.testing.assert_close(views.intrinsics, cams.intrinsics)  # colour's scaled to depth's size
    out = compute_targets(points, superpoint, ColorTeacher(), views, chunk=3, device="cpu")
    assert not out["seen"][hidden].any()
    assert out["seen"].float().mean() > 0.3
    assert _colour_agreement(out, scene, tol=0.03) > 0.99


def test_resized_frame_intrinsics_follow_the_pixels() -> None:
    # A pixel centre (u, v) of the original maps to ((u + .5) s - .5, (v + .5) s - .5) after resizing.
    k = torch.tensor([[300.0, 0, 159.5], [0, 310.0, 119.5], [0, 0, 1]])
    color = np.zeros((240, 320, 3), np.uint8)
    views = views_from_frames([(color, None, np.eye(4), k.numpy())], image_size=(60, 80))
    pts = torch.tensor([[0.3, -0.2, 2.0], [-0.5, 0.4, 3.0]])
    uv_big, _, _ = project(pts, k[None], torch.eye(4)[None], (240, 320))
    uv_small, _, _ = project(pts, views.intrinsics, views.cam_to_world, (60, 80))
    assert torch.allclose(uv_small[0], (uv_big[0] + 0.5) * 0.25 - 0.5, atol=1e-4)
    assert views.depths is None


@pytest.mark.parametrize("factor", [2, 3])
def test_resized_depth_takes_the_nearest_source_pixel(factor: int) -> None:
    """Depth is resized by picking pixels, never by blending them: blending 1 m and 3 m at an occlusion
    edge would invent a 2 m surface that Eq. 4 then matches. On a random 1 m / 3 m pattern (millimetre
    uint16, as ScanNet stores it) every resized value is one of the two. Output pixel ``i`` covers
    source pixels ``factor i .. factor i + factor - 1``; for factor 3 the one nearest its centre is
    ``3 i + 1``, for factor 2 the middle falls between two pixels, so any pixel of the 2 x 2 block it
    covers is nearest."""
    h, w = 6, 8
    rng = np.random.default_rng(factor)
    depth_mm = np.where(rng.random((h * factor, w * factor)) < 0.5, 1000, 3000).astype(np.uint16)
    color = np.zeros((h * factor, w * factor, 3), np.uint8)
    views = views_from_frames([(color, depth_mm, np.eye(4), np.eye(3))], image_size=(h, w))
    got = views.depths[0]
    assert got.shape == (h, w)
    assert set(got.unique().tolist()) <= {1.0, 3.0}
    for i in range(h):
        for j in range(w):
            block = depth_mm[i * factor : (i + 1) * factor, j * factor : (j + 1) * factor] / 1000
            if factor == 3:
                assert float(got[i, j]) == block[1, 1], (i, j)
            else:
                assert float(got[i, j]) in block.ravel().tolist(), (i, j)


def _one_ray_views(depth_m: float) -> tuple[Tensor, Views]:
    """Two points 3 cm apart on the ray through pixel (4, 4) of an 8 x 8 camera at the origin looking
    down +z (u = 10 x / z + 3.5), and one view whose measured depth is ``depth_m`` everywhere."""
    z = torch.tensor([2.0, 2.03])
    points = torch.stack([0.05 * z, 0.05 * z, z], 1)
    k = torch.tensor([[[10.0, 0, 3.5], [0, 10.0, 3.5], [0, 0, 1]]])
    images = torch.full((1, 8, 8, 3), 128, dtype=torch.uint8)
    return points, Views(images, k, torch.eye(4)[None], torch.full((1, 8, 8), depth_m))


def test_depth_tolerance_decides_which_points_on_a_ray_are_seen() -> None:
    """Eq. 4 with a measured depth: a point is seen where ``|z - D| < depth_tolerance``. The depth
    reads 2.00 m, the points sit at 2.00 and 2.03 m: 2 cm sees only the near one, 5 cm both."""
    points, views = _one_ray_views(2.0)
    uv, _, inside = project(points, views.intrinsics, views.cam_to_world, (8, 8))
    assert inside.all() and torch.allclose(uv, torch.full_like(uv, 4.0), atol=1e-5)
    superpoint = torch.tensor([0, 1])
    for tolerance, seen in ((0.02, [True, False]), (0.05, [True, True]), (0.01, [True, False])):
        out = compute_targets(
            points, superpoint, ColorTeacher(), views, depth_tolerance=tolerance, device="cpu"
        )
        assert out["seen"].tolist() == seen, tolerance
        assert out["view_count"].tolist() == [int(x) for x in seen]
    # Measured at the far point instead: 2 cm sees only the far one.
    points, views = _one_ray_views(2.03)
    out = compute_targets(points, superpoint, ColorTeacher(), views, depth_tolerance=0.02, device="cpu")
    assert out["seen"].tolist() == [False, True]


def test_feature_targets_depth_tolerance_reaches_compute_targets(
    scene, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data modules' setting ``FeatureTargets.depth_tolerance`` is what the feature pass hands to
    ``compute_targets`` (recorded by a wrapper around the real function)."""
    import unsup3d.pointdc.lifting as lifting
    from unsup3d.data.scene_folder import write_scene
    from unsup3d.pointdc.feature_pass import FeatureTargets, run_feature_pass

    class NamedColorTeacher(ColorTeacher):
        name, pretrained, feature_dim = "colour", True, 3

    real, seen_tolerances = lifting.compute_targets, []

    def recording(*args, **kwargs):
        seen_tolerances.append(kwargs["depth_tolerance"])
        return real(*args, **kwargs)

    monkeypatch.setattr(lifting, "compute_targets", recording)
    n = len(scene.points)
    scene_dir = write_scene(
        tmp_path / "train" / "room",
        {
            "coord": scene.points.numpy(),
            "color": scene.colors.numpy(),
            "segment": np.zeros(n, np.int64),
            "superpoint": scene.superpoint.numpy(),
        },
    )
    for tolerance in (0.013, 0.2):
        cfg = FeatureTargets(
            views="render",
            num_views=2,
            inside_fraction=1.0,
            image_size=(16, 16),
            depth_tolerance=tolerance,
            device="cpu",
        )
        assert run_feature_pass([scene_dir], cfg, teacher=NamedColorTeacher())["computed"] == 1
    assert seen_tolerances == [0.013, 0.2]


def test_streaming_pool_matches_dense_reference(scene, patch_teacher: PatchTeacher) -> None:
    # compute_targets pools view chunk by view chunk over visible points only; the reference holds
    # every view's features for every point at once and pools with aggregate_views.
    points, colors, superpoint, _, _ = scene
    cams = cameras_inside(points, 5, image_size=(64, 80), seed=3)
    views = views_from_render(points, colors, cams)
    for pool in ("max", "mean"):
        out = compute_targets(points, superpoint, patch_teacher, views, view_pool=pool, chunk=2, device="cpu")
        fmap = patch_teacher(views.images)
        assert fmap.shape == (5, 16, 8, 10)
        uv, depth, inside = project(points, views.intrinsics, views.cam_to_world, (64, 80))
        visible = depth_consistent(uv, depth, inside, views.depths, 0.05)
        ref, ref_seen = aggregate_views(sample_features(fmap, uv, (64, 80)), visible, pool)
        assert torch.equal(out["seen"], ref_seen)
        assert torch.equal(out["view_count"], visible.sum(0).int())
        assert out["point_features"].dtype == torch.float16
        assert out["point_features"].shape == (len(points), 16)
        torch.testing.assert_close(out["point_features"].float(), ref, atol=2e-3, rtol=1e-3)


def test_superpoint_targets_are_means_of_seen_points(scene, patch_teacher: PatchTeacher) -> None:
    points, colors, superpoint, _, _ = scene
    cams = cameras_inside(points, 4, image_size=(64, 80), seed=5)
    views = views_from_render(points, colors, cams)
    out = compute_targets(points, superpoint, patch_teacher, views, device="cpu")
    feats, seen = out["point_features"].float(), out["seen"]
    assert out["superpoint_features"].shape == (8, 16) and out["superpoint_counts"].dtype == torch.int64
    for k in range(8):
        members = ((superpoint == k) & seen).nonzero(as_tuple=True)[0]
        assert int(out["superpoint_counts"][k]) == len(members)
        if len(members):
            torch.testing.assert_close(
                out["superpoint_features"][k], feats[members].mean(0), atol=2e-3, rtol=0
            )
        else:
            assert torch.all(out["superpoint_features"][k] == 0)
    assert out["superpoint_counts"][6] == 0 and out["superpoint_counts"][7] == 0  # empty; hidden


def test_views_without_depth_use_the_zbuffer(scene) -> None:
    # Without depth images, visibility is Eq. 4: at most one point per pixel and never a hidden one.
    points, colors, superpoint, hidden, _ = scene
    cams = cameras_inside(points, 3, image_size=(48, 64), seed=2)
    rendered = views_from_render(points, colors, cams)
    views = Views(rendered.images, rendered.intrinsics, rendered.cam_to_world)
    out = compute_targets(points, superpoint, ColorTeacher(), views, device="cpu")
    assert not out["seen"][hidden].any()
    assert 0 < int(out["view_count"].sum()) <= 3 * 48 * 64
    out_tol = compute_targets(points, superpoint, ColorTeacher(), views, zbuffer_tolerance=0.05, device="cpu")
    assert int(out_tol["seen"].sum()) > int(out["seen"].sum())
    assert not out_tol["seen"][hidden].any()


def test_bad_inputs_are_named(scene) -> None:
    points, colors, superpoint, _, _ = scene
    views = views_from_render(points, colors, cameras_inside(points, 1, image_size=(16, 16)))
    with pytest.raises(ValueError, match="view_pool"):
        compute_targets(points, superpoint, ColorTeacher(), views, view_pool="median", device="cpu")
    with pytest.raises(ValueError, match="superpoint"):
        compute_targets(points, superpoint[:-1], ColorTeacher(), views, device="cpu")
    with pytest.raises(ValueError, match="num_superpoints"):
        compute_targets(points, superpoint, ColorTeacher(), views, num_superpoints=3, device="cpu")
    with pytest.raises(ValueError, match="frame 0 colour"):
        views_from_frames([(np.zeros((4, 4, 3), np.float32), None, np.eye(4), np.eye(3))])


@pytest.mark.gpu
def test_cuda_matches_cpu(scene, patch_teacher: PatchTeacher) -> None:
    points, colors, superpoint, _, _ = scene
    views = views_from_render(
        points.cuda(), colors.cuda(), cameras_inside(points, 4, image_size=(64, 80)).to("cuda")
    )
    gpu = compute_targets(points, superpoint, patch_teacher, views, device="cuda")
    cpu_views = Views(
        views.images.cpu(), views.intrinsics.cpu(), views.cam_to_world.cpu(), views.depths.cpu()
    )
    cpu = compute_targets(points, superpoint, patch_teacher, cpu_views, device="cpu")
    assert (gpu["seen"] != cpu["seen"]).float().mean() < 1e-3
    both = gpu["seen"] & cpu["seen"]
    torch.testing.assert_close(
        gpu["point_features"][both].float(), cpu["point_features"][both].float(), atol=2e-2, rtol=0
    )
