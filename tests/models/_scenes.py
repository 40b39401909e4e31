"""Small synthetic scenes voxelised and batched the way the data modules do it."""

from __future__ import annotations

import numpy as np
import torch

from unsup3d.sparse import SparseTensor, sparse_collate, sparse_quantize

VOXEL = 0.05


def _scene(seed: int, n: int = 2000, channels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A small room corner: floor, two walls and a box, in metres, with random per-point features."""
    rng = np.random.default_rng(seed)
    k = n // 4
    floor = np.c_[rng.uniform(0, 2, (k, 2)), np.zeros(k)]
    wall_x = np.c_[rng.uniform(0, 2, k), np.zeros(k), rng.uniform(0, 1.2, k)]
    wall_y = np.c_[np.zeros(k), rng.uniform(0, 2, k), rng.uniform(0, 1.2, k)]
    box = rng.uniform(0, 0.4, (n - 3 * k, 3)) + np.array([0.8 + 0.1 * seed, 0.8, 0.0])
    points = np.concatenate([floor, wall_x, wall_y, box]).astype(np.float32)
    points += rng.normal(0, 0.005, points.shape).astype(np.float32)
    return points, rng.normal(size=(n, channels)).astype(np.float32)


def _batch(scenes: list[tuple[np.ndarray, np.ndarray]]) -> tuple[SparseTensor, torch.Tensor]:
    """Voxelise each scene, collate them, and offset each scene's inverse map into the batch."""
    tensors, inverses, offset = [], [], 0
    for points, feats in scenes:
        coords, index, inverse = sparse_quantize(points, VOXEL, return_index=True, return_inverse=True)
        tensors.append(SparseTensor(torch.as_tensor(feats[np.asarray(index)]), torch.as_tensor(coords)))
        inverses.append(torch.as_tensor(np.asarray(inverse), dtype=torch.long) + offset)
        offset += len(index)
    return sparse_collate(tensors), torch.cat(inverses)
