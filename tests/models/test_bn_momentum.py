"""Res16UNet's `bn_momentum`: the stem, downsampling and shortcut BatchNorms take it (0.02, the
release's value); the BatchNorms inside residual blocks keep PyTorch's 0.1, as in the release."""

from __future__ import annotations

import torch

from tests.sparse._dense import random_sites
from unsup3d.models import Res16UNet
from unsup3d.sparse import SparseTensor
from unsup3d.sparse import nn as spnn


def _momenta(net: torch.nn.Module) -> dict[str, float]:
    return {name: m.momentum for name, m in net.named_modules() if isinstance(m, spnn.BatchNorm)}


def _expected(name: str, bn_momentum: float) -> float:
    """By the release's layout: `norm1` / `norm2` in a block at 0.1, every other BatchNorm (`bn0..4`,
    the shortcut's `downsample.1`) at `bn_momentum`."""
    return 0.1 if name.endswith((".norm1", ".norm2")) else bn_momentum


def test_default_res16unet_batchnorm_momenta_are_the_releases() -> None:
    """Default network: bn0..bn4 and the shortcut BatchNorms at 0.02, the in-block norms at 0.1."""
    momenta = _momenta(Res16UNet())
    for name in ("bn0", "bn1", "bn2", "bn3", "bn4", "block2.0.downsample.1", "block4.0.downsample.1"):
        assert momenta[name] == 0.02, name
    assert momenta["block1.0.norm1"] == momenta["block3.1.norm2"] == 0.1
    assert {n: _expected(n, 0.02) for n in momenta} == momenta


def test_res16unet_takes_a_passed_bn_momentum() -> None:
    """A passed value reaches the same BatchNorms and no others."""
    net = Res16UNet(4, 8, planes=(8, 16, 16, 32), layers=(1, 1, 1, 1), width=0.5, bn_momentum=0.3)
    momenta = _momenta(net)
    assert {n: _expected(n, 0.3) for n in momenta} == momenta
    assert sum(v == 0.3 for v in momenta.values()) == 5 + 3  # bn0..4 and three shortcuts


def test_stem_running_stats_follow_the_momentum_formula() -> None:
    """One train-mode forward: bn0's running mean is (1 - m) * 0 + m * batch mean and its running var
    (1 - m) * 1 + m * unbiased batch variance, with m = 0.02, read off bn0's own input."""
    torch.manual_seed(0)
    net = Res16UNet(4, 8, planes=(8, 16, 16, 32), layers=(1, 1, 1, 1), width=0.5)
    seen: list[torch.Tensor] = []
    net.bn0.register_forward_pre_hook(lambda _m, args: seen.append(args[0].F.detach().clone()))
    coords = random_sites(120, 10, batches=2, seed=1)
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    net.train()
    net(x)
    f = seen[0]
    m = 0.02
    torch.testing.assert_close(net.bn0.running_mean, m * f.mean(0))
    torch.testing.assert_close(net.bn0.running_var, (1 - m) + m * f.var(0, unbiased=True))
