"""`sparse_quantize` and `sparse_collate` against torchsparse 2.1's documented behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unsup3d.sparse import SparseTensor, ravel_hash, sparse_collate, sparse_collate_fn, sparse_quantize


def _points(seed: int = 0, n: int = 500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) * 2.0).astype(np.float32)


def _reference(points: np.ndarray, voxel_size) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torchsparse: floor(coords / voxel_size) as int32, unique rows in lexicographic order, first index."""
    floored = np.floor(points / np.array(voxel_size, dtype=np.float64)).astype(np.int32)
    voxels, index, inverse = np.unique(floored, axis=0, return_index=True, return_inverse=True)
    return voxels, index, inverse.reshape(-1)


@pytest.mark.parametrize("voxel_size", [1, 0.5, (0.3, 0.7, 1.1)])
def test_numpy_matches_reference(voxel_size) -> None:
    points = _points()
    voxels, index, inverse = sparse_quantize(points, voxel_size, return_index=True, return_inverse=True)
    rv, ri, rinv = _reference(points, voxel_size)
    assert isinstance(voxels, np.ndarray) and voxels.dtype == np.int32
    np.testing.assert_array_equal(voxels, rv)
    np.testing.assert_array_equal(index, ri)
    np.testing.assert_array_equal(inverse, rinv)
    floored = np.floor(points / np.array(voxel_size, dtype=np.float64)).astype(np.int32)
    np.testing.assert_array_equal(voxels[inverse], floored)  # inverse reconstructs every point's voxel
    np.testing.assert_array_equal(floored[index], voxels)  # index picks a point of each voxel


def test_torch_matches_numpy() -> None:
    points = _points(1)
    out_np = sparse_quantize(points, 0.4, return_index=True, return_inverse=True)
    out_t = sparse_quantize(torch.from_numpy(points), 0.4, return_index=True, return_inverse=True)
    assert all(isinstance(t, torch.Tensor) for t in out_t)
    assert out_t[0].dtype == torch.int32
    for a, b in zip(out_np, out_t):
        np.testing.assert_array_equal(a, b.numpy())


def test_output_arity_follows_flags() -> None:
    points = _points(2, 50)
    assert isinstance(sparse_quantize(points, 1.0), np.ndarray)
    two = sparse_quantize(points, 1.0, return_inverse=True)
    assert isinstance(two, list) and len(two) == 2 and two[1].shape == (50,)
    two = sparse_quantize(points, 1.0, return_index=True)
    assert len(two) == 2 and two[1].shape == two[0].shape[:1]


def test_first_occurrence_index() -> None:
    points = np.array([[0.5, 0, 0], [3.2, 0, 0], [0.1, 0, 0], [3.9, 0, 0], [-0.5, 0, 0]], np.float32)
    for pts in (points, torch.from_numpy(points)):
        voxels, index, inverse = sparse_quantize(pts, 1, return_index=True, return_inverse=True)
        assert np.asarray(voxels)[:, 0].tolist() == [-1, 0, 3]
        assert np.asarray(index).tolist() == [4, 0, 1]
        assert np.asarray(inverse).tolist() == [1, 2, 1, 2, 0]


def test_ravel_hash_is_lexicographic() -> None:
    rows = np.array([[0, 5, 1], [0, 0, 9], [1, -3, 0], [0, 5, 0]])
    order = np.argsort(ravel_hash(rows))
    np.testing.assert_array_equal(order, np.lexsort(rows.T[::-1]))
    from_torch = ravel_hash(torch.from_numpy(rows)).numpy()
    np.testing.assert_array_equal(from_torch, ravel_hash(rows).astype(np.int64))


def test_bad_voxel_size() -> None:
    with pytest.raises(ValueError, match="voxel_size"):
        sparse_quantize(_points(), (1.0, 2.0))
    with pytest.raises(ValueError, match="positive"):
        sparse_quantize(_points(), 0)


def test_collate_prepends_batch_column() -> None:
    g = torch.Generator().manual_seed(0)
    samples = [SparseTensor(torch.randn(n, 2, generator=g), torch.randint(0, 9, (n, 3), generator=g))
               for n in (4, 0, 3)]
    batch = sparse_collate(samples)
    assert batch.C.dtype == torch.int32 and batch.C.shape == (7, 4)
    assert batch.C[:, 0].tolist() == [0, 0, 0, 0, 2, 2, 2]
    assert torch.equal(batch.C[:, 1:], torch.cat([s.C for s in samples]))
    assert torch.equal(batch.F, torch.cat([s.F for s in samples]))
    assert batch.s == (1, 1, 1)


def test_collate_checks_strides_and_coords() -> None:
    a = SparseTensor(torch.randn(2, 1), torch.zeros(2, 3, dtype=torch.int32))
    b = SparseTensor(torch.randn(2, 1), torch.zeros(2, 3, dtype=torch.int32), stride=2)
    with pytest.raises(ValueError, match="stride"):
        sparse_collate([a, b])
    c = SparseTensor(torch.randn(2, 1), torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        sparse_collate([a, c])


def test_collate_fn_handles_dicts() -> None:
    samples = [{"x": SparseTensor(torch.ones(2, 1), torch.zeros(2, 3, dtype=torch.int32)),
                "label": np.array([1, 2]), "name": f"s{k}"} for k in range(2)]
    out = sparse_collate_fn(samples)
    assert out["x"].C[:, 0].tolist() == [0, 0, 1, 1]
    assert out["label"].shape == (2, 2) and out["name"] == ["s0", "s1"]
