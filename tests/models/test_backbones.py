"""MinkUNet and Res16UNet: shapes, voxel order, coordinates, batches, gradients, parameter counts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.sparse import SparseTensor

from ._scenes import _batch, _scene


def _minkunet(in_channels: int = 4, width: float = 0.25) -> nn.Module:
    return MinkUNet(in_channels=in_channels, width=width)


def _res16(in_channels: int = 4, width: float = 0.25) -> nn.Module:
    return Res16UNet(in_channels=in_channels, width=width, out_channels=32)


BUILDERS: dict[str, Callable[..., nn.Module]] = {"minkunet": _minkunet, "res16unet": _res16}


@pytest.fixture(scope="module")
def batch() -> tuple[SparseTensor, torch.Tensor]:
    return _batch([_scene(0), _scene(1)])


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def model(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    net = BUILDERS[request.param]()
    # Non-trivial running statistics so eval mode is not just a rescaling by 1/sqrt(1 + eps).
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def _with(x: SparseTensor, feats: torch.Tensor | None = None,
          coords: torch.Tensor | None = None) -> SparseTensor:
    """A fresh tensor (no cached kernel maps) with `x`'s data, optionally replaced."""
    return SparseTensor(x.F.clone() if feats is None else feats, x.C.clone() if coords is None else coords)


def _run(net: nn.Module, x: SparseTensor, inverse_map: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return net(x, inverse_map)


def test_shapes_and_inverse_map(model: nn.Module, batch: tuple[SparseTensor, torch.Tensor]) -> None:
    x, inverse = batch
    voxels = _run(model, _with(x))
    assert voxels.shape == (x.C.shape[0], model.out_channels)
    assert torch.isfinite(voxels).all()
    points = _run(model, _with(x), inverse)
    assert points.shape == (4000, model.out_channels)
    torch.testing.assert_close(points, voxels[inverse])
    assert x.C[:, 0].unique().tolist() == [0, 1]


def test_output_follows_input_voxel_order(model: nn.Module, batch: tuple[SparseTensor, torch.Tensor]) -> None:
    x, _ = batch
    perm = torch.randperm(x.C.shape[0], generator=torch.Generator().manual_seed(0))
    ref = _run(model, _with(x))
    out = _run(model, _with(x, x.F[perm], x.C[perm]))
    torch.testing.assert_close(out, ref[perm], rtol=1e-4, atol=1e-5)


def test_translation_by_coarsest_stride_changes_nothing(
    model: nn.Module, batch: tuple[SparseTensor, torch.Tensor]
) -> None:
    x, _ = batch
    ref = _run(model, _with(x))
    shifted = x.C.clone()
    shifted[:, 1:] += torch.tensor([16 * 3, -16 * 5, 16 * 7], dtype=shifted.dtype)
    torch.testing.assert_close(_run(model, _with(x, coords=shifted)), ref, rtol=1e-4, atol=1e-5)
    # A shift off the stride-16 grid regroups the coarse voxels, so the features must change.
    off_grid = x.C.clone()
    off_grid[:, 1] += 1
    assert not torch.allclose(_run(model, _with(x, coords=off_grid)), ref, rtol=1e-3, atol=1e-3)


def test_scenes_in_a_batch_are_independent(model: nn.Module) -> None:
    a = _scene(0)
    x_ab, _ = _batch([a, _scene(1)])
    x_ac, _ = _batch([a, _scene(2, n=1500)])
    x_a, _ = _batch([a])
    n_a = x_a.C.shape[0]
    feats_a = _run(model, x_a)
    torch.testing.assert_close(_run(model, x_ab)[:n_a], feats_a, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(_run(model, x_ac)[:n_a], feats_a, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("in_channels", [1, 3, 7])
def test_any_input_channel_count(name: str, in_channels: int) -> None:
    net = BUILDERS[name](in_channels=in_channels).eval()
    x, inverse = _batch([_scene(3, n=600, channels=in_channels)])
    assert _run(net, x, inverse).shape == (600, net.out_channels)
    with pytest.raises(ValueError, match=f"\\(N, {in_channels}\\)"):
        net(_with(x, feats=torch.zeros(x.C.shape[0], in_channels + 1)))


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradients_reach_every_parameter(name: str) -> None:
    torch.manual_seed(0)
    net = BUILDERS[name]().train()
    x, inverse = _batch([_scene(0, n=1000), _scene(1, n=1000)])
    out = net(x, inverse)
    (out * torch.randn_like(out)).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert dead == []


# Parameter counts from the architecture as the releases describe it (conv kernels K^3 * C_in * C_out
# without bias, BatchNorm weight and bias), independent of how the modules are written.
def _conv(k: int, c_in: int, c_out: int) -> int:
    return k**3 * c_in * c_out


def _residual(c_in: int, c_out: int) -> int:
    n = _conv(3, c_in, c_out) + _conv(3, c_out, c_out) + 4 * c_out
    return n + (_conv(1, c_in, c_out) + 2 * c_out if c_in != c_out else 0)


def _minkunet_params(in_channels: int, width: float) -> int:
    cs = [int(width * c) for c in (32, 32, 64, 128, 256, 256, 128, 96, 96)]
    n = _conv(3, in_channels, cs[0]) + _conv(3, cs[0], cs[0]) + 4 * cs[0]
    for i in range(4):
        n += _conv(2, cs[i], cs[i]) + 2 * cs[i]
        n += _residual(cs[i], cs[i + 1]) + _residual(cs[i + 1], cs[i + 1])
    for c_in, c_out, skip in zip(cs[4:8], cs[5:9], (cs[3], cs[2], cs[1], cs[0])):
        n += _conv(2, c_in, c_out) + 2 * c_out + _residual(c_out + skip, c_out) + _residual(c_out, c_out)
    return n


def _res16_params(in_channels: int, width: float, out_channels: int) -> int:
    planes = [int(width * p) for p in (32, 64, 128, 256)]
    inplanes = int(width * 32)
    n = _conv(5, in_channels, inplanes) + 2 * inplanes
    for p in planes:
        n += _conv(2, inplanes, inplanes) + 2 * inplanes + _residual(inplanes, p) + _residual(p, p)
        n += p * out_channels
        inplanes = p
    return n


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_parameter_counts(width: float) -> None:
    assert _count(MinkUNet(in_channels=4, width=width)) == _minkunet_params(4, width)
    assert _count(Res16UNet(in_channels=6, width=width)) == _res16_params(6, width, 128)


def test_release_widths() -> None:
    mink, res16 = MinkUNet(), Res16UNet()
    assert mink.out_channels == 96 and mink.channels == (32, 32, 64, 128, 256, 256, 128, 96, 96)
    assert res16.out_channels == 128 and res16.planes == (32, 64, 128, 256) and res16.in_channels == 6
    # Halving the width roughly quarters the (quadratic in width) parameter count.
    assert 3.5 < _count(MinkUNet(width=1.0)) / _count(MinkUNet(width=0.5)) < 4.1
