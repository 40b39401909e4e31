"""Release checkpoints (MinkowskiEngine / torchsparse key names) load into MinkUNet and Res16UNet."""

from __future__ import annotations

import pytest
import torch

from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.models.checkpoints import convert_release_state_dict, load_release_weights
from unsup3d.sparse import kernel_offsets

# Keys and shapes as the releases' modules name them (SegContrast's models/minkunet.py and
# PointDC's models/fpn.py, both on MinkowskiEngine), at full width.
MINKUNET_RELEASE_KEYS = {
    "stem.0.kernel": (27, 4, 32),
    "stem.1.bn.running_var": (32,),
    "stem.3.kernel": (27, 32, 32),
    "stage1.0.net.0.kernel": (8, 32, 32),
    "stage1.0.net.1.bn.weight": (32,),
    "stage2.1.downsample.0.kernel": (1, 32, 64),
    "stage4.2.net.3.kernel": (27, 256, 256),
    "up1.0.net.0.kernel": (8, 256, 256),
    "up1.1.0.net.0.kernel": (27, 384, 256),
    "up1.1.0.downsample.1.bn.bias": (256,),
    "up4.1.1.net.4.bn.weight": (96,),
}
RES16_RELEASE_KEYS = {
    "conv0p1s1.kernel": (125, 6, 32),
    "bn0.bn.running_mean": (32,),
    "conv1p1s2.kernel": (8, 32, 32),
    "block1.0.conv1.kernel": (27, 32, 32),
    "block1.1.norm2.bn.weight": (32,),
    "conv2p2s2.kernel": (8, 32, 32),
    "block2.0.downsample.0.kernel": (1, 32, 64),
    "block2.0.downsample.1.bn.num_batches_tracked": (),
    "conv4p8s2.kernel": (8, 128, 128),
    "block4.1.conv2.kernel": (27, 256, 256),
    "delayer1.linear.weight": (128, 256),
    "delayer4.linear.weight": (128, 32),
}


@pytest.mark.parametrize(("model", "release_keys"), [(MinkUNet, MINKUNET_RELEASE_KEYS),
                                                     (Res16UNet, RES16_RELEASE_KEYS)])
def test_release_names_map_onto_modules(model: type, release_keys: dict[str, tuple[int, ...]]) -> None:
    own = model().state_dict()
    converted = convert_release_state_dict({k: torch.zeros(s) for k, s in release_keys.items()})
    assert len(converted) == len(release_keys)
    for key, value in converted.items():
        assert key in own, key
        assert tuple(own[key].shape) == tuple(value.shape), key


def _minkowski_layout(kernel: torch.Tensor) -> torch.Tensor:
    """Rows reordered to MinkowskiEngine's `kernel_region`: x fastest, offsets 0..k-1 (even) or centred."""
    k = round(kernel.shape[0] ** (1 / 3))
    offs = kernel_offsets(k).long()
    axis = offs - offs.min(0).values  # 0..k-1 per axis in both engines
    rows = axis[:, 0] + k * axis[:, 1] + k * k * axis[:, 2]
    out = torch.empty_like(kernel)
    out[rows] = kernel
    return out


def _as_minkowski(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Our state dict as MinkowskiEngine holds it: `.bn.` / `.linear.` children, its kernel row order."""
    out = {}
    for key, value in state.items():
        if key.endswith("kernel"):
            value = _minkowski_layout(value)
        module, _, name = key.rpartition(".")
        if name in {"running_mean", "running_var", "num_batches_tracked"} or (
                name in {"weight", "bias"} and value.dim() == 1):
            key = f"{module}.bn.{name}"
        elif module.startswith("delayer"):
            key = f"{module}.linear.{name}"
        out[prefix + key] = value
    return out


@pytest.mark.parametrize("model", [lambda: MinkUNet(width=0.25), lambda: Res16UNet(width=0.25)])
def test_minkowski_checkpoint_round_trip(model) -> None:
    torch.manual_seed(0)
    src, dst = model(), model()
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    checkpoint = _as_minkowski(src.state_dict(), "model_q.")
    checkpoint["model_k.stem.0.kernel"] = torch.zeros(1)  # another network in the same file: ignored
    load_release_weights(dst, checkpoint, prefix="model_q.")
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), name


def test_minkowski_two_cube_rows_are_permuted_odd_ones_kept() -> None:
    k2 = torch.arange(8.0).view(8, 1, 1)
    k3 = torch.arange(27.0).view(27, 1, 1)
    out = convert_release_state_dict({"a.kernel": k2, "b.kernel": k3})
    # Our row 1 is offset (0, 0, 1), MinkowskiEngine's row 4; our row 4 is (1, 0, 0), its row 1.
    assert out["a.kernel"].flatten().tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    assert torch.equal(out["b.kernel"], k3)
    same = convert_release_state_dict({"a.kernel": k2}, engine="torchsparse")
    assert torch.equal(same["a.kernel"], k2)
    with pytest.raises(ValueError, match="even kernel volume 64"):
        convert_release_state_dict({"c.kernel": torch.zeros(64, 1, 1)})


def test_torchsparse_one_by_one_kernels_get_their_axis_back() -> None:
    src, dst = MinkUNet(width=0.25), MinkUNet(width=0.25)
    state = {k: (v[0] if k.endswith("downsample.0.kernel") else v) for k, v in src.state_dict().items()}
    assert state["stage2.1.downsample.0.kernel"].dim() == 2
    load_release_weights(dst, state, engine="torchsparse")
    assert torch.equal(dst.stage2[1].downsample[0].kernel, src.stage2[1].downsample[0].kernel)


def test_missing_prefix_and_wrong_shapes_raise() -> None:
    with pytest.raises(ValueError, match="prefix"):
        load_release_weights(MinkUNet(width=0.25), {"a.b": torch.zeros(1)}, prefix="model_q.")
    wide = MinkUNet(width=0.5).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_release_weights(MinkUNet(width=0.25), wide)
