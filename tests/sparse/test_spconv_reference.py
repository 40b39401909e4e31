"""spconv (an independent implementation) computes the same subm, k2 s2 and inverse convolutions."""

from __future__ import annotations

import pytest
import torch

from tests.sparse._dense import random_sites
from unsup3d.sparse import SparseTensor, conv3d, kernel_offsets

spconv = pytest.importorskip("spconv.pytorch")


def _spconv_weight(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Our (K, C_in, C_out) rows in spconv's (C_out, k, k, k, C_in) layout."""
    u = kernel_offsets(k).long() + (k - 1) // 2
    w = kernel.new_empty(kernel.shape[2], k, k, k, kernel.shape[1])
    w[:, u[:, 0], u[:, 1], u[:, 2], :] = kernel.permute(2, 0, 1)
    return w


def _sorted(coords: torch.Tensor, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = coords.long()
    order = torch.argsort(((c[:, 0] * 4096 + c[:, 1]) * 4096 + c[:, 2]) * 4096 + c[:, 3])
    return coords[order], feats[order]


@pytest.mark.parametrize("k", [3, 5])
def test_submanifold_down_and_inverse_match_spconv(k: int) -> None:
    coords = random_sites(400, 14, batches=2, seed=k)
    g = torch.Generator().manual_seed(k)
    feats = torch.randn(coords.shape[0], 4, generator=g)
    ws = torch.randn(k**3, 4, 6, generator=g)
    wd = torch.randn(8, 6, 5, generator=g)
    wu = torch.randn(8, 5, 3, generator=g)

    x = SparseTensor(feats, coords)
    y = conv3d(x, ws, k)
    d = conv3d(y, wd, 2, stride=2)
    u = conv3d(d, wu, 2, stride=2, transposed=True)

    subm = spconv.SubMConv3d(4, 6, k, bias=False, indice_key="subm")
    down = spconv.SparseConv3d(6, 5, 2, stride=2, bias=False, indice_key="down")
    inv = spconv.SparseInverseConv3d(5, 3, 2, bias=False, indice_key="down")
    for m, w, kk in ((subm, ws, k), (down, wd, 2), (inv, wu, 2)):
        m.weight.data = _spconv_weight(w, kk)
    with torch.no_grad():
        t = spconv.SparseConvTensor(feats, coords, [16, 16, 16], 2)
        ty = subm(t)
        td = down(ty)
        tu = inv(td)

    torch.testing.assert_close(y.F, ty.features, rtol=1e-5, atol=1e-5)
    sc = td.indices.clone()
    sc[:, 1:] *= 2  # spconv counts the coarse grid's cells; ours keep input units
    ours_c, ours_f = _sorted(d.C, d.F)
    their_c, their_f = _sorted(sc, td.features)
    assert torch.equal(ours_c, their_c)
    torch.testing.assert_close(ours_f, their_f, rtol=1e-5, atol=1e-5)
    assert torch.equal(tu.indices, u.C)
    torch.testing.assert_close(u.F, tu.features, rtol=1e-5, atol=1e-4)
