"""Test-time super-voxel pooling (``pool_logits``): each point of a super-voxel takes the mean logits of
the super-voxel's points, a point of none (-1) keeps its own; SVC's predictions then agree within each
super-voxel. Checked against a loop over the points."""

from __future__ import annotations

import pytest
import torch

from unsup3d.pointdc.svc import SVCModule
from unsup3d.training.evaluation import pool_logits


def _loop_pool(logits: torch.Tensor, superpoint: torch.Tensor) -> torch.Tensor:
    """The rule written out point by point: the mean over every point of the same super-voxel id."""
    out = logits.clone()
    for i, s in enumerate(superpoint.tolist()):
        if s >= 0:
            rows = [logits[j] for j, t in enumerate(superpoint.tolist()) if t == s]
            out[i] = sum(rows) / len(rows)
    return out


def _case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
    """30 points, 4 classes; super-voxels 0..5 (ids batch-wide, as collated: 0-2 from item 0, 3-5 from
    item 1) of different sizes, super-voxel 4 with no point, and 7 points in none."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(30, 4, generator=g)
    superpoint = torch.tensor([0] * 6 + [1] * 3 + [-1] * 4 + [2] * 1 + [3] * 7 + [-1] * 3 + [5] * 6)
    perm = torch.randperm(30, generator=g)  # a super-voxel's points need not be contiguous
    return logits, superpoint[perm], 6


def test_pooled_logits_match_a_loop() -> None:
    """Points of a super-voxel get its mean logits; points of -1 keep theirs unchanged."""
    logits, superpoint, n = _case()
    pooled = pool_logits(logits, superpoint, n)
    torch.testing.assert_close(pooled, _loop_pool(logits, superpoint))
    none = superpoint < 0
    assert torch.equal(pooled[none], logits[none])
    # pooling changes the logits of every super-voxel of more than one point
    assert not torch.allclose(pooled[superpoint == 0], logits[superpoint == 0])


def test_hand_worked_example() -> None:
    """Super-voxel 0 = points 0 and 2, super-voxel 1 = point 3, point 1 in none."""
    logits = torch.tensor([[1.0, 0.0], [5.0, 5.0], [3.0, 2.0], [0.0, 7.0]])
    pooled = pool_logits(logits, torch.tensor([0, -1, 0, 1]), 2)
    expected = torch.tensor([[2.0, 1.0], [5.0, 5.0], [2.0, 1.0], [0.0, 7.0]])
    torch.testing.assert_close(pooled, expected)


class _NoNet(torch.nn.Module):
    """A backbone placeholder: the test gives SVC its logits directly."""

    out_channels = 8

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))


@pytest.mark.parametrize("pooling", [True, False])
def test_svc_predicts_one_cluster_per_super_voxel(pooling: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """``test_superpoint_pooling`` (the default): a super-voxel's points all get the argmax of its mean
    logits, a point of none its own argmax; switched off, every point its own argmax."""
    logits, superpoint, n = _case(seed=3)
    model = SVCModule(backbone=_NoNet(), num_classes=4, test_superpoint_pooling=pooling).eval()
    monkeypatch.setattr(model, "eval_logits", lambda batch: logits)
    pred = model.predict_clusters({"superpoint": superpoint, "num_superpoints": n})
    own = logits.argmax(1)
    if not pooling:
        assert torch.equal(pred, own)
        return
    for i, s in enumerate(superpoint.tolist()):
        if s < 0:
            assert pred[i] == own[i]
        else:
            assert pred[i] == sum(logits[j] for j in range(30) if superpoint[j] == s).argmax()
    for s in range(n):  # one prediction per super-voxel
        assert len(set(pred[superpoint == s].tolist())) <= 1
    assert not torch.equal(pred, own)  # the case tells pooled predictions from per-point ones
