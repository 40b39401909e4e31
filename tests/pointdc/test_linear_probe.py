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


def test_validation_scores_present_classes_and_reports_the_confusion(tmp_path) -> None:
    """Known predictions through the probe's validation (the "backbone" hands each point ten times the
    one-hot of its prediction, the linear layer is the identity): labels in {0, 1, 2} and -1, labelled
    points predicted in {0, 1, 2, 3}, unlabelled ones in {3, 4}. Class 3 is in no label but predicted:
    IoU 0 and counted in the mIoU; class 4 only "predicted" on unlabelled points: absent, left out of the
    mIoU, NaN, not logged. Checked against a tp / (tp + fp + fn) loop over the labelled points, and the
    confusion (prediction rows, label columns) against one built with np.add.at."""
    k = 5
    rng = np.random.default_rng(7)
    grid = np.stack(np.unravel_index(np.arange(60), (4, 5, 3)), 1).astype(np.float32)
    scenes, preds, labels = [], [], []
    for i in range(3):
        segment = rng.integers(0, 3, 60)
        # mostly right, with errors towards higher classes only: the confusion is not symmetric
        pred = np.where(rng.random(60) < 0.6, segment, np.minimum(segment + rng.integers(1, 3, 60), 3))
        unlabelled = rng.random(60) < 0.15
        segment[unlabelled] = -1
        pred[unlabelled] = rng.choice([3, 4], int(unlabelled.sum()))
        feats = np.zeros((60, DIM), np.float32)
        feats[np.arange(60), pred] = 10.0
        sample = {"coord": grid, "segment": segment.astype(np.int64), "scene_index": np.array(i)}
        scenes.append(voxelize(sample, 1.0, feats))
        preds.append(pred)
        labels.append(segment)
    pred, seg = np.concatenate(preds), np.concatenate(labels)
    assert (pred[seg >= 0] == 3).any() and (pred[seg < 0] == 4).any()  # the cases the test is about

    names = ["a", "b", "c", "d", "e"]
    model = LinearProbeModule(backbone=FixedFeatures(), num_classes=k, class_names=names)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.weight[:, :k] = torch.eye(k)
        model.linear.bias.zero_()
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.validate(model, DataLoader(scenes, batch_size=2, collate_fn=collate_scenes))

    scored = seg >= 0
    p, t = pred[scored], seg[scored]
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (p, t), 1)
    iou = {}
    for c in range(k):
        tp, fp, fn = np.sum((p == c) & (t == c)), np.sum((p == c) & (t != c)), np.sum((p != c) & (t == c))
        if tp + fp + fn > 0:
            iou[c] = tp / (tp + fp + fn)
    assert sorted(iou) == [0, 1, 2, 3] and iou[3] == 0.0
    m = model.last_metrics
    np.testing.assert_array_equal(m["confusion"].numpy(), confusion)
    got = m["iou"].numpy()
    np.testing.assert_allclose(got[:4], [iou[c] for c in range(4)], rtol=1e-6)
    assert np.isnan(got[4])
    assert float(m["miou"]) == pytest.approx(np.mean(list(iou.values())), rel=1e-6)
    assert float(m["acc"]) == pytest.approx(np.mean(p == t), rel=1e-6)
    np.testing.assert_array_equal(m["assignment"].numpy(), np.arange(k))
    logged = trainer.callback_metrics
    shown = sorted(key for key in logged if key.startswith("val/iou/"))
    assert shown == ["val/iou/a", "val/iou/b", "val/iou/c", "val/iou/d"]
    assert float(logged["val/iou/b"]) == pytest.approx(iou[1], rel=1e-6)
