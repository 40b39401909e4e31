"""`SparseTensor`: properties, devices, caches that travel, dense grids, errors."""

from __future__ import annotations

import pytest
import torch

from unsup3d.sparse import SparseTensor, cat, conv3d, fapply
from unsup3d.sparse import nn as spnn


def _tensor(n: int = 30, c: int = 3) -> SparseTensor:
    g = torch.Generator().manual_seed(0)
    xyz = torch.unique(torch.randint(0, 6, (n, 3), generator=g), dim=0)
    coords = torch.cat([torch.zeros(xyz.shape[0], 1, dtype=torch.long), xyz], dim=1)
    return SparseTensor(torch.randn(xyz.shape[0], c, generator=g), coords)


def test_properties_follow_torchsparse() -> None:
    x = _tensor()
    assert x.F is x.feats and x.C is x.coords
    assert x.C.dtype == torch.int32  # int64 input is stored as int32
    assert x.s == (1, 1, 1) and SparseTensor(x.F, x.C, stride=(2, 2, 4)).s == (2, 2, 4)
    x.s = 2
    assert x.stride == (2, 2, 2)


def test_to_and_cpu_move_in_place() -> None:
    x = _tensor()
    assert x.to("cpu") is x and x.cpu() is x
    y = x.to("cpu", dtype=torch.float64)
    assert y.F.dtype == torch.float64 and y.C.dtype == torch.int32


def test_caches_travel_through_ops() -> None:
    x = _tensor()
    y = spnn.Conv3d(3, 4, 3)(x)
    z = spnn.ReLU()(spnn.BatchNorm(4)(y))
    w = z + y
    v = cat([w, y])
    u = fapply(v, torch.tanh)
    for t in (y, z, w, v, u):
        assert t._caches is x._caches
    assert v.F.shape == (x.F.shape[0], 8)
    down = spnn.Conv3d(8, 8, 2, stride=2)(u)
    up = spnn.Conv3d(8, 2, 2, stride=2, transposed=True)(spnn.ReLU()(down))
    assert torch.equal(up.C, x.C)


def test_moving_device_drops_stale_caches() -> None:
    x = _tensor()
    conv3d(x, torch.randn(27, 3, 3), 3)
    before = x._caches
    assert before.kmaps
    x.to("cpu")
    assert x._caches is before  # same device: the maps stay valid
    x.to("meta")  # another device: maps built for CPU tensors must not be reused
    assert x.C.device.type == "meta" and x._caches is not before and not x._caches.kmaps


def test_dense_places_features_by_stride() -> None:
    coords = torch.tensor([[0, 0, 2, 4], [1, 2, 0, 0]], dtype=torch.int32)
    x = SparseTensor(torch.tensor([[1.0], [2.0]]), coords, stride=2)
    grid = x.dense()
    assert grid.shape == (2, 2, 2, 3, 1)
    assert grid[0, 0, 1, 2, 0] == 1.0 and grid[1, 1, 0, 0, 0] == 2.0 and grid.sum() == 3.0
    with pytest.raises(ValueError, match="below origin"):
        SparseTensor(torch.ones(1, 1), torch.tensor([[0, -1, 0, 0]])).dense()


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match=r"coords must be \(N, 4\)"):
        SparseTensor(torch.ones(2, 1), torch.zeros(2, 5, dtype=torch.int32))
    with pytest.raises(ValueError, match="differ in N"):
        SparseTensor(torch.ones(3, 1), torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="integers"):
        SparseTensor(torch.ones(2, 1), torch.zeros(2, 4))
    x = _tensor()
    with pytest.raises(ValueError, match="feature rows"):
        x.replace_feature(torch.ones(1, 3))
    with pytest.raises(ValueError, match="sites"):
        cat([x, SparseTensor(torch.ones(1, 1), torch.zeros(1, 4, dtype=torch.int32))])
