"""The "spconv" backend: forced on the CPU (forward, one thread) it equals the built-in convolution;
"auto" never picks it on the CPU; on CUDA (``gpu`` marker) forward and gradients equal the built-in."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.sparse._dense import random_sites
from unsup3d.data.formats.semantic_kitti import read_scan
from unsup3d.models import MinkUNet
from unsup3d.sparse import SparseTensor, backend, conv3d, sparse_quantize
from unsup3d.sparse import spconv_adapter as adapter

pytest.importorskip("spconv.pytorch")


def _sorted(coords: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = coords.long()
    order = torch.argsort(((c[:, 0] * 4096 + c[:, 1]) * 4096 + c[:, 2]) * 4096 + c[:, 3])
    return coords[order], feats[order]


def _chain(name: str, coords: torch.Tensor, feats: torch.Tensor, weights: dict, k: int, dilation: int):
    """Submanifold, stride-1 transposed, k2 s2 down, submanifold at stride 2, k2 s2 up: every output."""
    with backend.use_backend(name), torch.no_grad():
        x = SparseTensor(feats, coords)
        y = conv3d(x, weights["subm"], k, dilation=dilation)
        t = conv3d(y, weights["flip"], k, dilation=dilation, transposed=True)
        d = conv3d(t, weights["down"], 2, stride=2, bias=weights["bias"])
        d2 = conv3d(d, weights["coarse"], 3)
        u = conv3d(d2, weights["up"], 2, stride=2, transposed=True)
    return y, t, d, d2, u


@pytest.mark.parametrize(("k", "dilation"), [(3, 1), (5, 1), (3, 2)])
def test_forced_spconv_on_cpu_equals_the_builtin_convolution(k: int, dilation: int) -> None:
    coords = random_sites(500, 16, batches=2, seed=k + dilation, low=-7)  # negative coordinates too
    g = torch.Generator().manual_seed(k)
    feats = torch.randn(coords.shape[0], 4, generator=g)
    weights = {
        "subm": torch.randn(k**3, 4, 6, generator=g),
        "flip": torch.randn(k**3, 6, 6, generator=g),
        "down": torch.randn(8, 6, 5, generator=g),
        "bias": torch.randn(5, generator=g),
        "coarse": torch.randn(27, 5, 5, generator=g),
        "up": torch.randn(8, 5, 3, generator=g),
    }
    ours = _chain("torch", coords, feats, weights, k, dilation)
    theirs = _chain("spconv", coords, feats, weights, k, dilation)
    assert torch.get_num_threads() == 1  # the conftest's setting, back after the forced spconv calls
    # stride-1 outputs keep the input's sites and order; the transposed conv returns the finer sites
    def close(a: torch.Tensor, b: torch.Tensor) -> None:  # float32 sums of up to 125 x 6 terms, any order
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))

    for i in (0, 1, 4):
        assert torch.equal(ours[i].C, theirs[i].C) and ours[i].s == theirs[i].s
        close(theirs[i].F, ours[i].F)
    # the downsampled sites agree as a set (spconv orders them its own way)
    for i in (2, 3):
        oc, of = _sorted(ours[i].C, ours[i].F)
        tc, tf = _sorted(theirs[i].C, theirs[i].F)
        assert torch.equal(oc, tc) and ours[i].s == theirs[i].s == (2, 2, 2)
        close(tf, of)


def _kitti_frame(kitti_seq_dir: Path, voxel: float = 0.05) -> SparseTensor:
    scan = read_scan(kitti_seq_dir / "velodyne" / "000000.bin")
    coords, index = sparse_quantize(scan[:, :3], voxel, return_index=True)
    coords = torch.from_numpy(np.asarray(coords)).int()
    coords = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords], dim=1)
    return SparseTensor(torch.from_numpy(scan[index]).float(), coords)


def test_forced_spconv_minkunet_forward_equals_builtin_on_a_kitti_frame(kitti_seq_dir: Path) -> None:
    x = _kitti_frame(kitti_seq_dir)
    assert x.C.shape[0] > 80_000 and int(x.C[:, 1:].min()) < 0  # a real frame, off the positive octant
    model = MinkUNet(in_channels=4).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # non-trivial BN affine parameters, so every layer shows
            p.add_(0.05 * torch.randn_like(p))
        with backend.use_backend("torch"):
            ours = model(SparseTensor(x.F, x.C))
        torch.set_num_threads(2)  # the adapter must still run spconv on one thread
        with backend.use_backend("spconv"):
            theirs = model(SparseTensor(x.F, x.C))
        assert torch.get_num_threads() == 2
    assert ours.shape == theirs.shape == (x.C.shape[0], model.out_channels)  # per input voxel, in order
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4 * float(ours.abs().max()))


def test_auto_never_picks_spconv_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend, "spconv_cuda_available", lambda: True)
    monkeypatch.setattr(backend, "torchsparse_available", lambda: False)
    assert backend.get_backend() == "auto"
    cases = (((3, 3, 3), (1, 1, 1), False), ((2, 2, 2), (2, 2, 2), False), ((2, 2, 2), (2, 2, 2), True))
    for ks, st, tr in cases:
        assert backend.resolve(torch.zeros(1, 1), kernel_size=ks, stride=st, transposed=tr) == "torch"
    cuda = types.SimpleNamespace(is_cuda=True)  # only the device is read
    assert backend.resolve(cuda, kernel_size=(3, 3, 3)) == "spconv"
    assert backend.resolve(cuda, kernel_size=(3, 3, 3), stride=(2, 2, 2)) == "torch"  # not spconv's grid
    monkeypatch.setattr(backend, "torchsparse_available", lambda: True)
    assert backend.resolve(cuda, kernel_size=(3, 3, 3)) == "torchsparse"  # torchsparse first
    assert backend.resolve(cuda, (2, 2, 2), kernel_size=(3, 3, 3)) == "spconv"  # it ignores dilation
    monkeypatch.setattr(backend, "spconv_cuda_available", lambda: False)
    assert backend.resolve(cuda, (2, 2, 2), kernel_size=(3, 3, 3)) == "torch"


def test_forced_spconv_refuses_what_it_cannot_compute() -> None:
    coords = random_sites(50, 6, batches=1)
    x = SparseTensor(torch.randn(coords.shape[0], 2), coords)
    with backend.use_backend("spconv"):
        with pytest.raises(RuntimeError, match="kernel 2, stride 2"):
            conv3d(x, torch.randn(27, 2, 2), 3, stride=2)
        with pytest.raises(RuntimeError, match="even kernel"):
            conv3d(x, torch.randn(8, 2, 2), 2)
        with pytest.raises(RuntimeError, match="no backward"):
            conv3d(x, torch.randn(27, 2, 2, requires_grad=True), 3)
        with torch.no_grad():
            down = conv3d(x, torch.randn(8, 2, 2), 2, stride=2)
        coarse = SparseTensor(down.F, down.C.flip(0), down.s)  # the same sites, another order,
        coarse._caches = down._caches  # in the same network (cache)
        with torch.no_grad(), pytest.raises(RuntimeError, match="no spconv downsampling"):
            conv3d(coarse, torch.randn(8, 2, 2), 2, stride=2, transposed=True)
    with backend.use_backend("torch"):  # the built-in path inverts any downsampling
        assert conv3d(coarse, torch.randn(8, 2, 2), 2, stride=2, transposed=True).C.shape == coords.shape


def test_kernel_layout_puts_each_offset_in_its_cell() -> None:
    kernel = torch.arange(27 * 2 * 3, dtype=torch.float32).view(27, 2, 3)
    w = adapter.spconv_weight(kernel, (3, 3, 3), (2, 2, 2))
    offsets = backend_offsets = adapter.kernel_offsets(3, 2)
    for row, off in enumerate(backend_offsets.tolist()):
        cell = [o // 2 + 1 for o in off]
        assert torch.equal(w[:, cell[0], cell[1], cell[2], :], kernel[row].T)
    flipped = adapter.spconv_weight(kernel, (3, 3, 3), (1, 1, 1), flip=True)
    assert torch.equal(flipped[:, 0, 1, 1, :], kernel[(offsets == torch.tensor([2, 0, 0])).all(1)][0].T)


def _gpu_chain(name: str, coords: torch.Tensor, feats: torch.Tensor, weights: list[torch.Tensor]):
    with backend.use_backend(name):
        x = SparseTensor(feats, coords)
        y = conv3d(x, weights[0], 3)
        d = conv3d(y, weights[1], 2, stride=2)
        u = conv3d(d, weights[2], 2, stride=2, transposed=True)
        return u


@pytest.mark.gpu
def test_spconv_on_cuda_equals_builtin_forward_and_backward() -> None:
    if not adapter.spconv_cuda_available():
        pytest.skip("spconv here is the CPU-only build (install spconv-cuXXX for your CUDA)")
    coords = random_sites(3000, 40, batches=2, seed=1, low=-20).cuda()
    g = torch.Generator().manual_seed(1)
    feats0 = torch.randn(coords.shape[0], 8, generator=g).cuda()
    weights0 = [torch.randn(27, 8, 8, generator=g), torch.randn(8, 8, 8, generator=g),
                torch.randn(8, 8, 4, generator=g)]
    runs = {}
    for name in ("torch", "spconv"):
        feats = feats0.clone().requires_grad_(True)
        weights = [w.cuda().requires_grad_(True) for w in weights0]
        u = _gpu_chain(name, coords, feats, weights)
        (u.F * torch.linspace(-1, 1, u.F.numel(), device="cuda").view_as(u.F)).sum().backward()
        runs[name] = (u.C, u.F.detach(), feats.grad, [w.grad for w in weights])
    assert torch.equal(runs["torch"][0], runs["spconv"][0])
    torch.testing.assert_close(runs["spconv"][1], runs["torch"][1], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(runs["spconv"][2], runs["torch"][2], rtol=1e-3, atol=1e-3)
    for a, b in zip(runs["spconv"][3], runs["torch"][3]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-2)


@pytest.mark.gpu
def test_auto_uses_spconv_on_cuda_where_it_is_the_best_installed() -> None:
    if backend.torchsparse_available() or not adapter.spconv_cuda_available():
        pytest.skip("needs spconv built for CUDA and no torchsparse")
    x = torch.zeros(1, 1, device="cuda")
    assert backend.resolve(x, kernel_size=(3, 3, 3)) == "spconv"
