"""The linear probe measures linear separability: near-perfect on features that separate the classes
linearly, about chance on features that say nothing about them.

A fake backbone hands each point a fixed feature (carried in as the point's own voxel feature, one
point a voxel), so the probe's linear layer is the only thing that learns; the module is driven by a
Lightning ``Trainer`` on batches collated as the data modules collate them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from unsup3d.data.collate import collate_scenes, voxelize
from unsup3d.pointdc.linear_probe import LinearProbeModule

NUM_CLASSES, DIM, POINTS = 4, 8, 1500


class FixedFeatures(torch.nn.Module):
    """A frozen "backbone" returning each point's stored feature: its voxel's input feature."""

    out_channels = DIM

    def forward(self, sparse, inverse: torch.Tensor) -> torch.Tensor:
        return sparse.F[inverse]


def _scenes(rng: np.random.Generator, count: int, means: np.ndarray | None, first: int) -> list[dict]:
    """``count`` scenes of ``POINTS`` points, each on its own voxel. With ``means`` a point's feature is
    its class's mean plus unit noise; without, pure noise whatever its class. 5 % are unlabelled (-1),
    with features of another class, which the probe must ignore."""
    grid = np.stack(np.unravel_index(np.arange(POINTS), (20, 20, 20)), 1).astype(np.float32)
    out = []
    for i in range(count):
        segment = rng.integers(0, NUM_CLASSES, POINTS)
        feats = rng.standard_normal((POINTS, DIM)).astype(np.float32)
        if means is not None:
            feats += means[segment]
            unlabelled = rng.random(POINTS) < 0.05
            feats[unlabelled] = means[(segment[unlabelled] + 1) % NUM_CLASSES] + rng.standard_normal(
                (int(unlabelled.sum()), DIM)
            ).astype(np.float32)
            segment[unlabelled] = -1
        sample = {"coord": grid, "segment": segment.astype(np.int64), "scene_index": np.array(first + i)}
        out.append(voxelize(sample, 1.0, feats))
    return out


def _probe(separable: bool, tmp_path, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    means = 2.0 * rng.standard_normal((NUM_CLASSES, DIM)).astype(np.float32) if separable else None
    train, val = _scenes(rng, 8, means, 0), _scenes(rng, 4, means, 8)  # fresh points for validation
    assert all(len(s["vox_feat"]) == POINTS for s in train)  # one point a voxel: features kept as given
    model = LinearProbeModule(backbone=FixedFeatures(), num_classes=NUM_CLASSES, lr=0.05)
    trainer = Trainer(
        max_epochs=8,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    loader = {"batch_size": 2, "collate_fn": collate_scenes}
    trainer.fit(model, DataLoader(train, shuffle=True, **loader), DataLoader(val, **loader))
    return {k: float(v) for k, v in model.last_metrics.items() if k in ("miou", "acc")}


def test_probe_separates_linearly_separable_features(tmp_path) -> None:
    m = _probe(True, tmp_path)
    assert m["miou"] > 0.9 and m["acc"] > 0.95, m


@pytest.mark.parametrize("seed", [0, 1])
def test_probe_is_at_chance_on_noise(tmp_path, seed: int) -> None:
    m = _probe(False, tmp_path, seed)
    # chance: accuracy 1 / K; mIoU 1 / (2K - 1) for random guesses, 1 / K^2 for one class everywhere
    assert abs(m["acc"] - 1 / NUM_CLASSES) < 0.05, m
    assert 1 / NUM_CLASSES**2 - 0.02 < m["miou"] < 1 / (2 * NUM_CLASSES - 1) + 0.04, m
