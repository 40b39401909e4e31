"""`unsup3d.sparse.nn` modules: Conv3d parameters, norms and activations on .F, global pooling."""

from __future__ import annotations

import math

import torch
from torch import nn

from tests.sparse._dense import dense_conv, random_sites
from unsup3d.sparse import SparseTensor
from unsup3d.sparse import nn as spnn


def test_conv3d_kernel_layout_and_init() -> None:
    conv = spnn.Conv3d(4, 6, kernel_size=3)
    assert conv.kernel.shape == (27, 4, 6) and conv.bias is None
    assert conv.kernel.abs().max() <= 1 / math.sqrt(4 * 27)
    assert spnn.Conv3d(4, 6, 1).kernel.shape == (1, 4, 6)  # K kept for kernel size 1
    t = spnn.Conv3d(4, 6, 2, stride=2, transposed=True, bias=True)
    assert t.kernel.shape == (8, 4, 6) and t.bias.shape == (6,)
    assert "transposed=True" in repr(t)


def test_conv3d_module_with_bias_equals_dense() -> None:
    coords = random_sites(80, 7, seed=3)
    x = SparseTensor(torch.randn(coords.shape[0], 4, dtype=torch.float64), coords)
    conv = spnn.Conv3d(4, 5, 3, dilation=2, bias=True).double()
    ref = dense_conv(coords, x.F, conv.kernel.detach(), 3, 2) + conv.bias.detach()
    torch.testing.assert_close(conv(x).F, ref)
    one = spnn.Conv3d(4, 5, 1, bias=True).double()
    torch.testing.assert_close(one(x).F, x.F @ one.kernel[0] + one.bias)


def test_batchnorm_and_relu_act_on_features() -> None:
    coords = random_sites(60, 6, seed=1)
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    bn = spnn.BatchNorm(4)
    ref = nn.BatchNorm1d(4)
    ref.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn(x).F, ref(x.F))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    y = spnn.ReLU(inplace=False)(x)
    assert torch.equal(y.F, x.F.clamp(min=0)) and torch.equal(y.C, x.C)
    torch.testing.assert_close(spnn.LeakyReLU(0.1)(x).F, nn.functional.leaky_relu(x.F, 0.1))


def test_global_pools_per_batch_item() -> None:
    coords = random_sites(40, 5, batches=3, seed=2)
    x = SparseTensor(torch.randn(coords.shape[0], 3, requires_grad=True), coords)
    avg = spnn.GlobalAvgPool()(x)
    mx = spnn.GlobalMaxPool()(x)
    assert avg.shape == mx.shape == (3, 3)
    for b in range(3):
        rows = x.F[coords[:, 0] == b]
        torch.testing.assert_close(avg[b], rows.mean(0))
        torch.testing.assert_close(mx[b], rows.max(0).values)
    (avg.sum() + mx.sum()).backward()
    assert x.F.grad is not None


def test_instance_norm_per_item() -> None:
    coords = random_sites(50, 5, batches=2, seed=4)
    x = SparseTensor(torch.randn(coords.shape[0], 3) * 3 + 1, coords)
    y = spnn.InstanceNorm(3)(x).F
    for b in range(2):
        rows = y[coords[:, 0] == b]
        torch.testing.assert_close(rows.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(rows.var(0, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)


def test_instance_norm_affine_equals_functional_per_item() -> None:
    """With a random weight and bias, each item's rows equal `F.instance_norm` of that item alone; the
    defaults are weight 1, bias 0."""
    norm = spnn.InstanceNorm(3)
    torch.testing.assert_close(norm.norm.weight.detach(), torch.ones(3))
    torch.testing.assert_close(norm.norm.bias.detach(), torch.zeros(3))
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        norm.norm.weight.copy_(torch.rand(3, generator=g) * 2 + 0.5)
        norm.norm.bias.copy_(torch.randn(3, generator=g) * 3)
    coords = random_sites(50, 5, batches=3, seed=6)
    x = SparseTensor(torch.randn(coords.shape[0], 3, generator=g) * 2 - 1, coords)
    y = norm(x).F
    for b in range(3):
        rows = coords[:, 0] == b
        want = nn.functional.instance_norm(
            x.F[rows].T[None], weight=norm.norm.weight, bias=norm.norm.bias, eps=norm.norm.eps
        )[0].T
        torch.testing.assert_close(y[rows], want)


def test_unet_like_chain_trains() -> None:
    coords = random_sites(200, 12, batches=2, seed=5)
    x = SparseTensor(torch.randn(coords.shape[0], 4), coords)
    enc = nn.Sequential(spnn.Conv3d(4, 8, 3), spnn.BatchNorm(8), spnn.ReLU(True))
    down = nn.Sequential(spnn.Conv3d(8, 16, 2, stride=2), spnn.BatchNorm(16), spnn.ReLU(True))
    up = spnn.Conv3d(16, 8, 2, stride=2, transposed=True)
    head = spnn.Conv3d(16, 2, 1)
    params = [p for m in (enc, down, up, head) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=0.05)
    target = (x.F[:, 0] > 0).long()
    losses = []
    for _ in range(10):
        e = enc(x)
        y = up(down(e))
        logits = head(SparseTensor(torch.cat([y.F, e.F], 1), y.C)).F
        loss = nn.functional.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
