"""The frozen 2D teacher (PointDC's h, Eq. 5) on tiny randomly initialised ViTs: nothing is downloaded."""

from __future__ import annotations

import pytest
import torch
import transformers

from unsup3d.pointdc.lifting import compute_targets, views_from_render
from unsup3d.vision import KNOWN_CONFIGS, TeacherWeightsNotFoundError, ViTTeacher, cameras_around

TINY = {
    "model_type": "vit",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "patch_size": 8,
    "image_size": 64,
}
TINY_DINOV2 = {
    "model_type": "dinov2",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "mlp_ratio": 2,
    "patch_size": 8,
    "image_size": 64,
}
has_registers = pytest.mark.skipif(
    not hasattr(transformers, "Dinov2WithRegistersModel"), reason="transformers has no DINOv2 with registers"
)


@pytest.fixture(scope="module")
def teacher() -> ViTTeacher:
    return ViTTeacher.from_config(TINY)


def _images(v: int = 2, h: int = 48, w: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (v, h, w, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def test_patch_feature_maps_in_every_input_layout(teacher: ViTTeacher) -> None:
    images = _images()
    out = teacher(images)
    assert out.shape == (2, 32, 6, 8) and out.dtype == torch.float32
    assert teacher.feature_dim == 32 and teacher.patch_size == 8
    assert torch.equal(teacher(images.permute(0, 3, 1, 2)), out)  # channels first
    torch.testing.assert_close(teacher(images.float() / 255), out)  # float in [0, 1]
    # not a multiple of the patch: resized to the nearest one (50 x 70 -> 48 x 72)
    assert teacher(_images(1, 50, 70)).shape == (1, 32, 6, 9)
    fixed = ViTTeacher.from_config(TINY, input_size=(32, 32), normalize=True)
    unit = fixed(images)
    assert unit.shape == (2, 32, 4, 4)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="images"):
        teacher(torch.zeros(2, 48, 64, dtype=torch.uint8))


def test_imagenet_normalisation(teacher: ViTTeacher) -> None:
    images = _images()
    x = images.permute(0, 3, 1, 2).float() / 255
    ref = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[
        :, None, None
    ]
    torch.testing.assert_close(teacher._prepare(images), ref)


def test_frozen_and_deterministic(teacher: ViTTeacher) -> None:
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.model.training
    images = _images()
    out = teacher(images)
    assert not out.requires_grad
    assert torch.equal(teacher(images), out)
    # the same seed builds the same teacher on every process; another seed does not
    assert torch.equal(ViTTeacher.from_config(TINY, seed=0)(images), out)
    assert not torch.allclose(ViTTeacher.from_config(TINY, seed=1)(images), out)


def _one_patch_changes_one_cell(config: dict) -> None:
    # With no transformer layer and no position embedding, a patch's feature depends on its own
    # pixels only: changing patch (row 2, col 5) must change cell (2, 5) of the map and nothing else.
    # This pins the token order and the removal of the CLS / register tokens.
    t = ViTTeacher.from_config({**config, "num_hidden_layers": 0})
    with torch.no_grad():
        t.model.embeddings.position_embeddings.zero_()
    images = _images(1, 48, 64)
    changed = images.clone()
    changed[0, 16:24, 40:48] = 255 - changed[0, 16:24, 40:48]
    diff = (t(changed) - t(images)).abs().amax(1)[0]
    assert diff[2, 5] > 1e-3
    diff[2, 5] = 0
    assert diff.max() < 1e-6


def test_token_layout_vit() -> None:
    _one_patch_changes_one_cell(TINY)


def test_dinov2_drops_the_cls_token() -> None:
    t = ViTTeacher.from_config(TINY_DINOV2)
    assert t.num_prefix_tokens == 1 and t(_images()).shape == (2, 32, 6, 8)
    _one_patch_changes_one_cell(TINY_DINOV2)


@has_registers
def test_dinov2_with_registers_drops_cls_and_registers() -> None:
    config = {**TINY_DINOV2, "model_type": "dinov2_with_registers", "num_register_tokens": 4}
    t = ViTTeacher.from_config(config)
    assert t.num_prefix_tokens == 5 and t(_images()).shape == (2, 32, 6, 8)
    _one_patch_changes_one_cell(config)


def test_missing_weights_fail_fast_with_instructions(tmp_path) -> None:
    with pytest.raises(TeacherWeightsNotFoundError, match="huggingface-cli download facebook/dino-vits8"):
        ViTTeacher.from_pretrained("facebook/dino-vits8", cache_dir=tmp_path)
    with pytest.raises(TeacherWeightsNotFoundError, match="does not exist"):
        ViTTeacher.from_pretrained(str(tmp_path / "no_such_model"))


def test_allow_random_builds_the_known_architecture_and_warns(tmp_path) -> None:
    small = {"num_hidden_layers": 1, "hidden_size": 24, "num_attention_heads": 2, "intermediate_size": 48}
    with pytest.warns(UserWarning, match="MEANINGLESS"):
        t = ViTTeacher.from_pretrained(
            "facebook/dino-vits8", allow_random=True, random_config_overrides=small, cache_dir=tmp_path
        )
    assert not t.pretrained and t.name == "facebook/dino-vits8"
    assert t.patch_size == 8 and t.feature_dim == 24  # patch from the known config, width overridden
    assert t(_images()).shape == (2, 24, 6, 8)
    assert KNOWN_CONFIGS["facebook/dino-vits8"]["hidden_size"] == 384
    with pytest.raises(TeacherWeightsNotFoundError, match="known architectures"):
        ViTTeacher.from_pretrained("someone/unknown-vit", allow_random=True, cache_dir=tmp_path)


def test_local_folder_round_trip(tmp_path, teacher: ViTTeacher) -> None:
    teacher.model.save_pretrained(tmp_path / "tiny")
    loaded = ViTTeacher.from_pretrained(tmp_path / "tiny")
    assert loaded.pretrained
    images = _images()
    torch.testing.assert_close(loaded(images), teacher(images))


def test_feature_pass_with_the_real_teacher(teacher: ViTTeacher) -> None:
    # A coloured plane seen from four cameras: every visible point gets a 32-d target.
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(2000, 3, generator=g) * torch.tensor([2.0, 2.0, 0.0])
    colors = (pts[:, :1] * 120).to(torch.uint8).expand(-1, 3).contiguous()
    views = views_from_render(pts, colors, cameras_around(pts, 4, image_size=(48, 64)))
    superpoint = (pts[:, 0] > 1).long()
    out = compute_targets(pts, superpoint, teacher, views, chunk=3, device="cpu")
    assert out["point_features"].shape == (2000, 32) and out["superpoint_features"].shape == (2, 32)
    assert out["seen"].float().mean() > 0.9
    assert torch.isfinite(out["point_features"].float()).all()
