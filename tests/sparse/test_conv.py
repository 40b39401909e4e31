"""Sparse convolution against dense `conv3d`: submanifold, strided, transposed, gradients, batches."""

from __future__ import annotations

import pytest
import torch

from tests.sparse._dense import dense_conv, random_sites
from unsup3d.sparse import SparseTensor, conv3d, grid_table, kernel_offsets
from unsup3d.sparse import kernel_map as km

D = torch.float64

@pytest.fixture(autouse=True, params=["table", "search"])
def lookup(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: site lookups through dense tables where they fit, and through sorted keys only."""
    if request.param == "search":
        monkeypatch.setattr(grid_table, "DENSE_TABLE_MAX", 0)
    return request.param



def _offsets_torchsparse(k: int, dilation: int) -> list[list[int]]:
    """torchsparse 2.1's `get_kernel_offsets`, written out as in its source."""
    r = [d * dilation for d in range(-k // 2 + 1, k // 2 + 1)]
    if k**3 % 2 == 1:
        return [[x, y, z] for z in r for y in r for x in r]
    return [[x, y, z] for x in r for y in r for z in r]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dilation", [1, 2])
def test_kernel_offsets_follow_torchsparse_order(k: int, dilation: int) -> None:
    offsets = kernel_offsets(k, dilation)
    assert offsets.dtype == torch.int32
    assert offsets.tolist() == _offsets_torchsparse(k, dilation)


def test_kernel_offsets_known_rows() -> None:
    assert kernel_offsets(3)[0].tolist() == [-1, -1, -1]
    assert kernel_offsets(3)[1].tolist() == [0, -1, -1]  # x fastest for odd volumes
    assert kernel_offsets(3)[13].tolist() == [0, 0, 0]
    assert kernel_offsets(2)[1].tolist() == [0, 0, 1]  # z fastest for even volumes
    assert kernel_offsets((3, 1, 1)).tolist() == [[-1, 0, 0], [0, 0, 0], [1, 0, 0]]


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("dilation", [1, 2])
def test_submanifold_equals_dense_conv(k: int, dilation: int) -> None:
    coords = random_sites(120, 9, batches=2, seed=10 * k + dilation, low=-4)
    g = torch.Generator().manual_seed(k)
    feats = torch.randn(coords.shape[0], 3, dtype=D, generator=g)
    kernel = torch.randn(k**3, 3, 4, dtype=D, generator=g)
    out = conv3d(SparseTensor(feats, coords), kernel, k, dilation=dilation)
    assert torch.equal(out.C, coords) and out.s == (1, 1, 1)
    torch.testing.assert_close(out.F, dense_conv(coords, feats, kernel, k, dilation), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k, dilation", [(3, 1), (2, 2), (5, 1)])
def test_submanifold_gradients_equal_dense(k: int, dilation: int) -> None:
    coords = random_sites(100, 8, batches=2, seed=k)
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(coords.shape[0], 3, dtype=D, generator=g, requires_grad=True)
    kernel = torch.randn(k**3, 3, 2, dtype=D, generator=g, requires_grad=True)
    weights = torch.randn(coords.shape[0], 2, dtype=D, generator=g)
    out = conv3d(SparseTensor(feats, coords), kernel, k, dilation=dilation)
    gx, gw = torch.autograd.grad((out.F * weights).sum(), (feats, kernel))
    ref = dense_conv(coords, feats, kernel, k, dilation)
    rx, rw = torch.autograd.grad((ref * weights).sum(), (feats, kernel))
    torch.testing.assert_close(gx, rx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, rw, rtol=1e-12, atol=1e-12)


def _floor_sites(coords: torch.Tensor, step: int) -> torch.Tensor:
    xyz = torch.div(coords[:, 1:], step, rounding_mode="floor") * step
    return torch.unique(torch.cat([coords[:, :1], xyz], dim=1), dim=0)


@pytest.mark.parametrize("in_stride, k, dilation, stride", [
    (1, 2, 1, 2), (2, 2, 1, 2), (1, 3, 1, 2), (2, 3, 1, 2), (1, 3, 2, 2), (1, 4, 1, 2), (1, 3, 1, 3),
])
def test_strided_conv_equals_dense_conv(in_stride: int, k: int, dilation: int, stride: int) -> None:
    coords = random_sites(120, 9, batches=2, seed=k + in_stride, stride=in_stride, low=-5 * in_stride)
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(coords.shape[0], 3, dtype=D, generator=g, requires_grad=True)
    kernel = torch.randn(k**3, 3, 4, dtype=D, generator=g, requires_grad=True)
    out = conv3d(SparseTensor(feats, coords, stride=in_stride), kernel, k, stride=stride, dilation=dilation)
    assert out.s == (stride * in_stride,) * 3
    # Output sites: unique floor(c / S) * S, in lexicographic order (torch.unique's).
    assert torch.equal(out.C, _floor_sites(coords, stride * in_stride))
    ref = dense_conv(coords, feats, kernel, k, dilation, in_stride=in_stride, conv_stride=stride,
                     out_coords=out.C)
    torch.testing.assert_close(out.F, ref, rtol=1e-12, atol=1e-12)
    w = torch.randn(out.F.shape, dtype=D, generator=g)
    grads = torch.autograd.grad((out.F * w).sum(), (feats, kernel))
    refs = torch.autograd.grad((ref * w).sum(), (feats, kernel))
    for a, b in zip(grads, refs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3])
def test_transposed_is_adjoint_of_downsampling_and_restores_sites(k: int) -> None:
    coords = random_sites(150, 10, batches=2, seed=7, low=-3)
    g = torch.Generator().manual_seed(3)
    x = SparseTensor(torch.randn(coords.shape[0], 3, dtype=D, generator=g), coords)
    kernel = torch.randn(k**3, 3, 4, dtype=D, generator=g)
    down = conv3d(x, kernel, k, stride=2)
    y = torch.randn(down.F.shape, dtype=D, generator=g)
    up = conv3d(down.replace_feature(y), kernel.transpose(1, 2).contiguous(), k, stride=2, transposed=True)
    assert torch.equal(up.C, coords) and up.s == (1, 1, 1)
    # <down(x), y> == <x, up(y)> with the transposed rows: the transposed conv inverts the same map.
    torch.testing.assert_close((down.F * y).sum(), (x.F * up.F).sum(), rtol=1e-12, atol=1e-12)


def test_two_levels_down_and_up_give_back_each_level() -> None:
    coords = random_sites(300, 16, batches=2, seed=4)
    x = SparseTensor(torch.randn(coords.shape[0], 2, dtype=D), coords)
    w = torch.randn(8, 2, 2, dtype=D)
    d1 = conv3d(x, w, 2, stride=2)
    d2 = conv3d(conv3d(d1, torch.randn(27, 2, 2, dtype=D), 3), w, 2, stride=2)
    assert d2.s == (4, 4, 4)
    u1 = conv3d(d2, w, 2, stride=2, transposed=True)
    assert u1.s == (2, 2, 2) and torch.equal(u1.C, d1.C)
    u0 = conv3d(u1, w, 2, stride=2, transposed=True)
    assert u0.s == (1, 1, 1) and torch.equal(u0.C, coords)


def test_transposed_reuses_the_cached_map(monkeypatch: pytest.MonkeyPatch) -> None:
    coords = random_sites(200, 10, seed=5)
    x = SparseTensor(torch.randn(coords.shape[0], 2, dtype=D), coords)
    w = torch.randn(8, 2, 2, dtype=D)
    sub = conv3d(x, torch.randn(27, 2, 2, dtype=D), 3)
    down = conv3d(sub, w, 2, stride=2)
    caches = x._caches
    assert down._caches is caches and sorted(caches.cmaps) == [(1, 1, 1), (2, 2, 2)]
    n_maps = len(caches.kmaps)

    def no_build(*args, **kwargs):
        raise AssertionError("kernel map rebuilt")

    for name in ("build_kernel_map", "sorted_coords", "_downsample_partition", "downsample_coords"):
        monkeypatch.setattr(km, name, no_build)
    up = conv3d(down, w, 2, stride=2, transposed=True)
    again = conv3d(sub, torch.randn(27, 2, 2, dtype=D), 3)  # same map as the first subm conv
    assert len(caches.kmaps) == n_maps
    assert up._caches is caches and again._caches is caches
    assert up.C is caches.cmaps[(1, 1, 1)]


def test_transposed_without_downsampling_is_a_clear_error() -> None:
    coords = random_sites(50, 6, seed=6, stride=2)
    x = SparseTensor(torch.randn(coords.shape[0], 2, dtype=D), coords, stride=2)
    with pytest.raises(ValueError, match="no coordinates of stride"):
        conv3d(x, torch.randn(8, 2, 2, dtype=D), 2, stride=2, transposed=True)


def test_transposed_builds_a_map_when_the_coarse_sites_are_new() -> None:
    fine = random_sites(80, 8, batches=1, seed=8)
    x = SparseTensor(torch.randn(fine.shape[0], 2, dtype=D), fine)
    down = conv3d(x, torch.randn(8, 2, 3, dtype=D), 2, stride=2)
    coarse = down.C[torch.randperm(down.C.shape[0])]  # same sites, another order
    y = SparseTensor(torch.randn(coarse.shape[0], 3, dtype=D), coarse, stride=2)
    y._caches = x._caches
    w = torch.randn(8, 3, 2, dtype=D)
    up = conv3d(y, w, 2, stride=2, transposed=True)
    # Reference: each fine site p receives y[q] @ w[k] from its coarse site q = floor(p / 2) * 2.
    ref = torch.zeros(fine.shape[0], 2, dtype=D)
    lookup = {tuple(c): i for i, c in enumerate(coarse.tolist())}
    offs = kernel_offsets(2).tolist()
    for i, (b, *p) in enumerate(fine.tolist()):
        q = [v // 2 * 2 for v in p]
        k = offs.index([a - c for a, c in zip(p, q)])
        ref[i] = y.F[lookup[(b, *q)]] @ w[k]
    torch.testing.assert_close(up.F, ref)


def test_batch_items_never_interact() -> None:
    a = random_sites(150, 8, batches=1, seed=9)
    b = a.clone()
    b[:, 0] = 1
    b[:, 1] += 1  # item 1 sits one voxel from item 0: neighbours, were the batch column ignored
    g = torch.Generator().manual_seed(4)
    fa = torch.randn(a.shape[0], 3, dtype=D, generator=g)
    fb = torch.randn(b.shape[0], 3, dtype=D, generator=g)
    kernel = torch.randn(27, 3, 2, dtype=D, generator=g)
    both = conv3d(SparseTensor(torch.cat([fa, fb]), torch.cat([a, b])), kernel, 3)
    alone_a = conv3d(SparseTensor(fa, a), kernel, 3)
    b0 = b.clone()
    b0[:, 0] = 0
    alone_b = conv3d(SparseTensor(fb, b0), kernel, 3)
    torch.testing.assert_close(both.F, torch.cat([alone_a.F, alone_b.F]), rtol=0, atol=1e-13)
    down = conv3d(SparseTensor(torch.cat([fa, fb]), torch.cat([a, b])), torch.randn(8, 3, 2, dtype=D), 2,
                  stride=2)
    assert set(down.C[:, 0].tolist()) == {0, 1}


def test_gradcheck_strided_and_transposed() -> None:
    coords = random_sites(20, 4, batches=2, seed=11)
    g = torch.Generator().manual_seed(5)
    feats = torch.randn(coords.shape[0], 2, dtype=D, generator=g, requires_grad=True)
    wd = torch.randn(8, 2, 3, dtype=D, generator=g, requires_grad=True)
    wu = torch.randn(8, 3, 2, dtype=D, generator=g, requires_grad=True)
    ws = torch.randn(27, 3, 3, dtype=D, generator=g, requires_grad=True)

    def net(f, a, s, b):
        x = SparseTensor(f, coords)
        y = conv3d(x, a, 2, stride=2)
        y = conv3d(y, s, 3)
        return conv3d(y, b, 2, stride=2, transposed=True).F

    assert torch.autograd.gradcheck(net, (feats, wd, ws, wu), fast_mode=True)


def test_empty_and_single_site_tensors() -> None:
    empty = SparseTensor(torch.zeros(0, 2), torch.zeros(0, 4, dtype=torch.int32))
    out = conv3d(empty, torch.randn(27, 2, 3), 3)
    assert out.F.shape == (0, 3)
    one = SparseTensor(torch.ones(1, 2), torch.tensor([[0, 5, -3, 7]], dtype=torch.int32))
    w = torch.randn(27, 2, 3)
    torch.testing.assert_close(conv3d(one, w, 3).F, torch.ones(1, 2) @ w[13])
    down = conv3d(one, torch.randn(8, 2, 3), 2, stride=2)
    assert down.C.tolist() == [[0, 4, -4, 6]]


def test_bad_kernel_shape_is_named() -> None:
    x = SparseTensor(torch.randn(3, 2), torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="kernel must be"):
        conv3d(x, torch.randn(9, 2, 3), 3)


def test_autocast_cpu_bfloat16() -> None:
    coords = random_sites(100, 8, seed=12)
    feats = torch.randn(coords.shape[0], 8, requires_grad=True)
    kernel = torch.randn(27, 8, 8, requires_grad=True)
    ref = conv3d(SparseTensor(feats, coords), kernel, 3).F
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv3d(SparseTensor(feats, coords), kernel, 3).F
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.2)
    out.float().sum().backward()
    assert kernel.grad is not None and kernel.grad.dtype == torch.float32


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    from unsup3d.sparse.backend import use_backend

    coords = random_sites(200, 10, seed=13)
    feats = torch.randn(coords.shape[0], 4, dtype=D)
    w3, w2 = torch.randn(27, 4, 4, dtype=D), torch.randn(8, 4, 4, dtype=D)

    def run(device: str) -> torch.Tensor:
        x = SparseTensor(feats, coords).to(device)
        y = conv3d(conv3d(x, w3.to(device), 3), w2.to(device), 2, stride=2)
        return conv3d(y, w2.to(device), 2, stride=2, transposed=True).F.cpu()

    with use_backend("torch"):
        torch.testing.assert_close(run("cuda"), run("cpu"))
