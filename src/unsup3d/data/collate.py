"""Voxelisation of one sample and collation of samples into a ``SparseTensor`` batch.

A batch is a dict of tensors (Lightning moves it, and the ``SparseTensor`` in it, to the device):

- ``sparse``: ``SparseTensor`` of voxel features, coords ``(batch, x, y, z)`` int32;
- ``inverse``: int64 ``(P,)``, for each point the row of its voxel in ``sparse``;
- ``point_batch``: int64 ``(P,)``, the batch item of each point; ``offsets``: ``(B + 1,)`` point offsets;
- ``coord`` float32 ``(P, 3)``; ``point_index`` int64 ``(P,)``, each point's row in its stored scene;
- ``superpoint``: int64 ``(P,)``, super-voxel ids made unique across the batch and consecutive
  (``-1`` none), ``num_superpoints`` their count, ``superpoint_batch`` the item of each;
- ``segment``: int64 ``(P,)`` class ids (``-1`` ignored) — for evaluation only, never for training;
- ``scene_index`` int64 ``(B,)``; any other per-point array of the samples, concatenated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from unsup3d.sparse import SparseTensor, sparse_quantize

#: keys that collation builds itself; every other per-point array is concatenated as is.
_BUILT = {"vox_coord", "vox_feat", "inverse", "superpoint", "scene_index", "num_points"}


def voxelize(sample: dict[str, np.ndarray], voxel_size: float, features: np.ndarray) -> dict[str, Any]:
    """Quantise ``sample["coord"]`` to ``voxel_size`` and attach voxel coords, features, inverse map.

    The voxel's feature is that of its first point (torchsparse's convention); the inverse map
    sends every point back to its voxel, so per-voxel outputs become per-point outputs.
    """
    coord = sample["coord"]
    vox, index, inverse = sparse_quantize(coord, voxel_size, return_index=True, return_inverse=True)
    vox = np.asarray(vox, dtype=np.int32)
    out = dict(sample)
    out["vox_coord"] = vox - vox.min(0, keepdims=True)  # a non-negative grid; voxel borders unmoved
    out["vox_feat"] = np.ascontiguousarray(features[index], dtype=np.float32)
    out["inverse"] = np.asarray(inverse, dtype=np.int64).reshape(-1)
    out["num_points"] = np.array(len(coord))
    return out


def _consecutive(ids: np.ndarray) -> tuple[np.ndarray, int]:
    valid = ids >= 0
    out = np.full(len(ids), -1, dtype=np.int64)
    uniq, inv = np.unique(ids[valid], return_inverse=True)
    out[valid] = inv
    return out, len(uniq)


def _is_per_point(sample: dict[str, Any], key: str) -> bool:
    value = sample.get(key)
    return isinstance(value, np.ndarray) and value.ndim > 0 and len(value) == len(sample["inverse"])


def collate_scenes(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate voxelised samples (see :func:`voxelize`) into one batch (module docstring)."""
    coords, feats, inverse, point_batch, sps, sp_batch = [], [], [], [], [], []
    vox_offset = sp_offset = 0
    for b, s in enumerate(samples):
        v = len(s["vox_coord"])
        coords.append(np.concatenate([np.full((v, 1), b, np.int32), s["vox_coord"]], axis=1))
        feats.append(s["vox_feat"])
        inverse.append(s["inverse"] + vox_offset)
        n = len(s["inverse"])
        point_batch.append(np.full(n, b, np.int64))
        if "superpoint" in s:
            sp, count = _consecutive(np.asarray(s["superpoint"]))
            sps.append(np.where(sp >= 0, sp + sp_offset, -1))
            sp_batch.append(np.full(count, b, np.int64))
            sp_offset += count
        vox_offset += v
    batch: dict[str, Any] = {
        "sparse": SparseTensor(
            torch.from_numpy(np.concatenate(feats)), torch.from_numpy(np.concatenate(coords))
        ),
        "inverse": torch.from_numpy(np.concatenate(inverse)),
        "point_batch": torch.from_numpy(np.concatenate(point_batch)),
        "offsets": torch.tensor(np.cumsum([0] + [len(s["inverse"]) for s in samples]), dtype=torch.int64),
        "scene_index": torch.tensor([int(s["scene_index"]) for s in samples], dtype=torch.int64),
    }
    if sps:
        batch["superpoint"] = torch.from_numpy(np.concatenate(sps))
        batch["superpoint_batch"] = torch.from_numpy(np.concatenate(sp_batch))
        batch["num_superpoints"] = sp_offset
    for key in samples[0]:
        if key not in _BUILT and all(_is_per_point(s, key) for s in samples):
            batch[key] = torch.from_numpy(np.concatenate([s[key] for s in samples]))
    return batch
