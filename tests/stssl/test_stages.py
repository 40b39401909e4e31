"""STSSL's stages: BYOL pieces (Eq. 2-3 losses, momentum), the inter-frame loss on tracked pairs only,
fine-tuning from a P2C checkpoint, and every STSSL config for one step on the synthetic sequences."""

from __future__ import annotations

import copy
import inspect
import sys
from pathlib import Path

import pytest
import torch
import yaml

from unsup3d.cli import main
from unsup3d.data.datamodule_base import PointCloudDataModule
from unsup3d.data.lidar_datamodules import LidarDataModule
from unsup3d.models import MinkUNet
from unsup3d.sparse import SparseTensor
from unsup3d.stssl import datamodules as stssl_dms
from unsup3d.stssl.byol import (
    cluster_keys,
    max_pool,
    momentum_update,
    normalized_mse,
    p2c_loss,
    shared_groups,
)
from unsup3d.stssl.finetune import FinetuneModule, SegmentationIoU
from unsup3d.stssl.interframe import InterFrameModule
from unsup3d.stssl.p2c import P2CModule
from unsup3d.synthetic import datamodules as synthetic_dms

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _reference_nmse(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's loss as its paper writes it: the squared distance of the L2-normalised vectors."""
    return ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(1)


# -- losses, momentum, grouping ---------------------------------------------------------------------


def test_p2c_loss_is_zero_for_identical_views_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    targets = torch.randn(5, 16, generator=g)
    group = torch.randint(0, 5, (200,), generator=g)
    # identical: every point predicts its cluster's feature (any positive scale: the loss is on directions)
    scale = torch.rand(200, 1, generator=g) + 0.5
    assert p2c_loss(targets[group] * scale, group, targets).abs() < 1e-6
    pred = torch.randn(200, 16, generator=g)
    loss = p2c_loss(pred, group, targets)
    assert loss > 0.5
    torch.testing.assert_close(loss, _reference_nmse(pred, targets[group]).mean())
    torch.testing.assert_close(normalized_mse(pred, -pred), torch.full((200,), 4.0))


def test_p2c_term_of_the_module_matches_a_reference_and_only_trains_the_online_branch() -> None:
    torch.manual_seed(0)
    module = P2CModule(backbone=MinkUNet(4, width=0.25), feature_dropout=0.0, min_cluster_points=3)
    module.eval()  # BatchNorm on running statistics: rows are independent, so a loop can be the reference
    va, vb = _view([[(0, 5), (1, 4), (2, 2)], [(0, 6)]]), _view([[(0, 4), (1, 3), (2, 7)], [(0, 3), (5, 9)]])
    dim = module.backbone.out_channels
    on = (torch.randn(len(va["track"]), dim, requires_grad=True), torch.randn(len(vb["track"]), dim))
    tg = (torch.randn(len(va["track"]), dim), torch.randn(len(vb["track"]), dim))
    va["cluster"], vb["cluster"] = va["track"], vb["track"]
    loss, n = module.p2c_term((va, vb), on, tg)
    # shared with >= 3 voxels in both views: item 0 clusters 0 and 1, item 1 cluster 0 (2 has 2 in view a)
    assert n == 3
    ref = []
    for (x, vx), (t, vt) in (((on[0], va), (tg[1], vb)), ((on[1], vb), (tg[0], va))):
        for b, cid in ((0, 0), (0, 1), (1, 0)):
            mine = (vx["item"] == b) & (vx["track"] == cid)
            other = (vt["item"] == b) & (vt["track"] == cid)
            z = module.target_projector(t[other].max(0).values[None])
            p = module.predictor(module.projector(x[mine]))
            ref.append(_reference_nmse(p, z.expand_as(p)))
    # each direction averages over its points, then the two directions add up
    half = sum(int(((va["item"] == b) & (va["track"] == c)).sum()) for b, c in ((0, 0), (0, 1), (1, 0)))
    expected = torch.cat(ref[:3]).mean() + torch.cat(ref[3:]).mean()
    assert half == len(torch.cat(ref[:3]))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert on[0].grad is not None and on[0].grad.abs().sum() > 0
    assert all(p.grad is None for p in module.target_projector.parameters())


def test_momentum_update_formula() -> None:
    online, target = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in target.parameters()]
    momentum_update(online, target, 0.9)
    for p_on, p_old, p_new in zip(online.parameters(), before, target.parameters()):
        torch.testing.assert_close(p_new, 0.9 * p_old + 0.1 * p_on)

    module = P2CModule(backbone=MinkUNet(4, width=0.25), target_momentum=0.99)
    for a, b in zip(module.backbone.parameters(), module.target_backbone.parameters()):
        assert torch.equal(a, b) and not b.requires_grad  # the target starts as a frozen copy
    with torch.no_grad():
        for p in [*module.backbone.parameters(), *module.projector.parameters()]:
            p.add_(torch.randn_like(p))
    old = [p.clone() for p in [*module.target_backbone.parameters(), *module.target_projector.parameters()]]
    online = [*module.backbone.parameters(), *module.projector.parameters()]
    module.update_target()
    new = [*module.target_backbone.parameters(), *module.target_projector.parameters()]
    for p_on, p_old, p_new in zip(online, old, new):
        torch.testing.assert_close(p_new, 0.99 * p_old + 0.01 * p_on)


def test_shared_groups_and_cluster_keys_against_brute_force() -> None:
    g = torch.Generator().manual_seed(1)
    key_a = torch.randint(-1, 12, (300,), generator=g)
    key_b = torch.randint(-1, 12, (250,), generator=g)
    ga, gb, n = shared_groups(key_a, key_b, min_size=22)
    keep = [k for k in range(12) if (key_a == k).sum() >= 22 and (key_b == k).sum() >= 22]
    assert n == len(keep)
    for key, group in ((key_a, ga), (key_b, gb)):
        expected = torch.tensor([keep.index(int(k)) if int(k) in keep else -1 for k in key])
        assert torch.equal(group, expected)
    feats = torch.randn(300, 4, generator=g)
    pooled = max_pool(feats, ga, n)
    for i, k in enumerate(keep):
        torch.testing.assert_close(pooled[i], feats[key_a == k].max(0).values)

    # a voxel takes the largest id of its points: a cluster point beats ground (-1)
    view = {
        "cluster": torch.tensor([-1, 3, 2, -1, 7, 7]),
        "inverse": torch.tensor([0, 0, 1, 1, 2, 3]),
        "sparse": SparseTensor(
            torch.zeros(4, 1), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]])
        ),
    }
    keys = cluster_keys(view, "cluster")
    stride = 1 << 32
    assert keys.tolist() == [3, 2, stride + 7, stride + 7]


def _view(items: list[list[tuple[int, int]]], noise: int = 4) -> dict:
    """A batch of one point per voxel: for each item, (id, voxels) groups plus ``noise`` voxels of -1."""
    ids, item = [], []
    for b, groups in enumerate(items):
        for cid, count in groups:
            ids += [cid] * count
            item += [b] * count
        ids += [-1] * noise
        item += [b] * noise
    n = len(ids)
    coords = torch.stack(
        [
            torch.tensor(item),
            torch.arange(n),
            torch.zeros(n, dtype=torch.long),
            torch.zeros(n, dtype=torch.long),
        ],
        1,
    )
    return {
        "sparse": SparseTensor(torch.zeros(n, 4), coords.int()),
        "inverse": torch.arange(n),
        "track": torch.tensor(ids),
        "item": torch.tensor(item),
    }


def test_interframe_loss_uses_only_tracked_pairs() -> None:
    torch.manual_seed(0)
    module = InterFrameModule(backbone=MinkUNet(4, width=0.25), feature_dropout=0.0, min_cluster_points=3)
    module.eval()
    # view0 = frame t, view1 = frame t + k. Tracks 0 and 1 of item 0 and track 4 of item 1 are in both
    # frames with >= 3 voxels; track 2 is only in frame t, track 3 has 2 voxels in frame t + k, track 9
    # of item 1 is track 9 of no other item.
    v0 = _view([[(0, 5), (1, 4), (2, 6), (3, 5)], [(4, 4)]])
    v1 = _view([[(0, 3), (1, 6), (3, 2)], [(4, 5), (9, 4)]])
    dim = module.backbone.out_channels
    f = [torch.randn(len(v["track"]), dim) for v in (v0, v1, v0, v1)]
    loss, n = module.cluster_term((v0, v1), (f[0], f[1]), (f[2], f[3]), "track")
    assert n == 3

    # reference: max-pool each shared track, online prediction against the other frame's target
    pairs = [(0, 0), (0, 1), (1, 4)]

    def pooled(x: torch.Tensor, v: dict, b: int, t: int) -> torch.Tensor:
        return x[(v["item"] == b) & (v["track"] == t)].max(0).values

    q0 = module.predictor(module.projector(torch.stack([pooled(f[0], v0, b, t) for b, t in pairs])))
    q1 = module.predictor(module.projector(torch.stack([pooled(f[1], v1, b, t) for b, t in pairs])))
    z0 = module.target_projector(torch.stack([pooled(f[2], v0, b, t) for b, t in pairs]))
    z1 = module.target_projector(torch.stack([pooled(f[3], v1, b, t) for b, t in pairs]))
    torch.testing.assert_close(loss, _reference_nmse(q0, z1).mean() + _reference_nmse(q1, z0).mean())

    # features of untracked voxels, of unshared tracks and of too-small ones change nothing
    changed = [x.clone() for x in f]
    for x, v in ((changed[0], v0), (changed[2], v0), (changed[1], v1), (changed[3], v1)):
        unused = (v["track"] < 0) | (v["track"] == 2) | (v["track"] == 3) | (v["track"] == 9)
        x[unused] = torch.randn(int(unused.sum()), dim) * 10
    again, _ = module.cluster_term((v0, v1), (changed[0], changed[1]), (changed[2], changed[3]), "track")
    torch.testing.assert_close(again, loss)
    # ... and a tracked one does
    changed[1][(v1["item"] == 0) & (v1["track"] == 1)] += 5.0
    moved, _ = module.cluster_term((v0, v1), (changed[0], changed[1]), (changed[2], changed[3]), "track")
    assert not torch.isclose(moved, loss)

    # fewer than two tracked pairs: a zero loss that still reaches every trainable parameter
    lone = _view([[(0, 5)]])
    zero, n = module.cluster_term((lone, lone), (f[0][:9], f[0][:9]), (f[0][:9], f[0][:9]), "track")
    assert n == 1 and zero.item() == 0 and zero.requires_grad


# -- whole training steps (Eq. 2 and Eq. 4) against references written out ---------------------------


class _LinearNet(torch.nn.Module):
    """A stand-in backbone: one linear map of each voxel's input features, so that a reference can
    run it voxel by voxel (``inverse`` given: per point, as the validation probe calls it)."""

    def __init__(self, in_channels: int = 4, out_channels: int = 6) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.linear = torch.nn.Linear(in_channels, out_channels)

    def forward(self, sparse: SparseTensor, inverse: torch.Tensor | None = None) -> torch.Tensor:
        out = self.linear(sparse.F)
        return out if inverse is None else out[inverse]


def _featured(items: list[list[tuple[int, int]]], seed: int) -> dict:
    """``_view`` with random input features, its ids serving as both ``track`` and ``cluster``."""
    view = _view(items)
    g = torch.Generator().manual_seed(seed)
    view["sparse"] = SparseTensor(torch.randn(len(view["track"]), 4, generator=g), view["sparse"].C)
    view["cluster"] = view["track"]
    view["scene_index"] = torch.arange(len(items))
    return view


def _stage(cls: type, **kw) -> torch.nn.Module:
    """A stage on ``_LinearNet`` whose target branch differs from its online branch (as after some
    training): the momentum step and which branch predicts then both change the loss."""
    torch.manual_seed(0)
    module = cls(backbone=_LinearNet(), projection_dim=8, projector_hidden=8, predictor_hidden=8,
                 feature_dropout=0.0, min_cluster_points=3, target_momentum=0.5, **kw)  # fmt: skip
    with torch.no_grad():
        for p in [*module.target_backbone.parameters(), *module.target_projector.parameters()]:
            p.add_(torch.randn_like(p))
    return module.eval()  # BatchNorm on running statistics: rows are independent, a loop is a reference


def _momentum_target(module: torch.nn.Module, m: float) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Copies of the target backbone and projector moved by ``m * target + (1 - m) * online``."""
    backbone, projector = copy.deepcopy(module.target_backbone), copy.deepcopy(module.target_projector)
    with torch.no_grad():
        for online, target in ((module.backbone, backbone), (module.projector, projector)):
            for p_on, p_tg in zip(online.parameters(), target.parameters(), strict=True):
                p_tg.copy_(m * p_tg + (1 - m) * p_on)
    return backbone, projector


def _rows(view: dict, b: int, cid: int, key: str) -> torch.Tensor:
    return (view["item"] == b) & (view[key] == cid)


@torch.no_grad()
def _reference_p2c(heads, online_net, target_net, target_proj, va, vb, shared) -> torch.Tensor:
    """Eq. 2 written out: each point of a shared cluster predicts (online net, projector, predictor) the
    max-pooled, target-projected feature of its cluster in the other view; mean per direction, summed."""
    projector, predictor = heads
    total = torch.zeros(())
    for x, y in ((va, vb), (vb, va)):
        losses = []
        for b, cid in shared:
            p = predictor(projector(online_net(x["sparse"])[_rows(x, b, cid, "cluster")]))
            z = target_proj(target_net(y["sparse"])[_rows(y, b, cid, "cluster")].max(0).values[None])
            losses.append(_reference_nmse(p, z.expand_as(p)))
        total = total + torch.cat(losses).mean()
    return total


@torch.no_grad()
def _reference_inter(heads, online_net, target_net, target_proj, va, vb, shared) -> torch.Tensor:
    """Eq. 3 written out: the max-pooled online prediction of each shared track in one frame against
    the max-pooled, target-projected feature of the same track in the other frame, both ways."""
    projector, predictor = heads
    total = torch.zeros(())
    for x, y in ((va, vb), (vb, va)):
        losses = []
        for b, tid in shared:
            q = predictor(projector(online_net(x["sparse"])[_rows(x, b, tid, "track")].max(0).values[None]))
            z = target_proj(target_net(y["sparse"])[_rows(y, b, tid, "track")].max(0).values[None])
            losses.append(_reference_nmse(q, z))
        total = total + torch.cat(losses).mean()
    return total


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_p2c_training_step_matches_eq2_with_the_momentum_moved_target() -> None:
    """P2C's step: the momentum update first (target = m * target + (1 - m) * online), then Eq. 2 on the
    two views with the online branch predicting and the moved target branch giving the targets."""
    module = _stage(P2CModule)
    v0 = _featured([[(0, 5), (1, 4), (2, 2)], [(0, 6)]], seed=1)
    v1 = _featured([[(0, 4), (1, 3), (2, 7)], [(0, 3), (5, 9)]], seed=2)
    shared = [(0, 0), (0, 1), (1, 0)]  # cluster 2 of item 0 has 2 < 3 voxels in view 0
    heads = (module.projector, module.predictor)
    t_net, t_proj = _momentum_target(module, 0.5)
    expected = _reference_p2c(heads, module.backbone, t_net, t_proj, v0, v1, shared)
    # the reference tells the branches apart and the moved target from the old one
    swapped = _reference_p2c(heads, t_net, module.backbone, t_proj, v0, v1, shared)
    stale = _reference_p2c(heads, module.backbone, module.target_backbone, module.target_projector, v0, v1,
                           shared)  # fmt: skip
    assert not torch.isclose(swapped, expected, rtol=1e-3) and not torch.isclose(stale, expected, rtol=1e-3)

    loss = module.training_step({"view0": v0, "view1": v1, "interval": torch.tensor([0, 0])}, 0)
    torch.testing.assert_close(loss.detach(), expected)
    for a, b in zip([*t_net.parameters(), *t_proj.parameters()],
                    [*module.target_backbone.parameters(), *module.target_projector.parameters()],
                    strict=True):  # fmt: skip
        torch.testing.assert_close(b, a)


def _interframe_batch() -> dict:
    """Frame t (view0), frame t + k (view1) and a second view of frame t (view2), two samples.

    Tracks shared with >= 3 voxels by view0 and view1: (item 0, 0), (0, 1), (1, 4); track 2 is in
    frame t only, 9 in frame t + k only. Clusters shared by view0 and view2: (0, 0), (0, 1), (0, 2),
    (1, 4)."""
    v0 = _featured([[(0, 5), (1, 4), (2, 3)], [(4, 4)]], seed=1)
    v1 = _featured([[(0, 3), (1, 6)], [(4, 5), (9, 4)]], seed=2)
    v2 = _featured([[(0, 4), (1, 3), (2, 5)], [(4, 6)]], seed=3)
    return {"view0": v0, "view1": v1, "view2": v2, "interval": torch.tensor([2, 3])}


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("epoch", [1, 2])
def test_interframe_training_step_is_eq4_with_the_warmup(epoch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Eq. 4: ``w_inter(epoch) * L_inter(view0, view1) + w_p2c * L_p2c(view0, view2)``, w_inter 0 before
    ``inter_warmup_epochs`` (2) and ``inter_weight`` (0.7) from then on, w_p2c 0.3, both terms with the
    online branch predicting the momentum-moved target branch."""
    monkeypatch.setattr(InterFrameModule, "current_epoch", property(lambda self: epoch))
    module = _stage(InterFrameModule, inter_weight=0.7, p2c_weight=0.3, inter_warmup_epochs=2)
    batch = _interframe_batch()
    v0, v1, v2 = batch["view0"], batch["view1"], batch["view2"]
    heads = (module.projector, module.predictor)
    t_net, t_proj = _momentum_target(module, 0.5)
    inter = _reference_inter(heads, module.backbone, t_net, t_proj, v0, v1, [(0, 0), (0, 1), (1, 4)])
    p2c = _reference_p2c(heads, module.backbone, t_net, t_proj, v0, v2, [(0, 0), (0, 1), (0, 2), (1, 4)])
    expected = (0.7 if epoch >= 2 else 0.0) * inter + 0.3 * p2c
    # both terms are non-trivial; P2C on (view0, view1), the un-moved target or swapped branches differ
    wrong_pair = _reference_p2c(heads, module.backbone, t_net, t_proj, v0, v1, [(0, 0), (0, 1), (1, 4)])
    stale = _reference_inter(heads, module.backbone, module.target_backbone, module.target_projector, v0, v1,
                             [(0, 0), (0, 1), (1, 4)])  # fmt: skip
    swapped = _reference_inter(heads, t_net, module.backbone, t_proj, v0, v1, [(0, 0), (0, 1), (1, 4)])
    assert inter > 0.05 and p2c > 0.05 and not torch.isclose(wrong_pair, p2c, rtol=1e-3)
    assert not torch.isclose(stale, inter, rtol=1e-3) and not torch.isclose(swapped, inter, rtol=1e-3)

    loss = module.training_step(batch, 0)
    torch.testing.assert_close(loss.detach(), expected)
    for a, b in zip([*t_net.parameters(), *t_proj.parameters()],
                    [*module.target_backbone.parameters(), *module.target_projector.parameters()],
                    strict=True):  # fmt: skip
        torch.testing.assert_close(b, a)


# -- the validation probe: K-means of the features, Hungarian-matched mIoU ---------------------------


class _ProbeNet(torch.nn.Module):
    """A stand-in backbone for the probe: each voxel's input is (class channel, 3 noise channels). The
    ``informative`` net outputs a one-hot of the class channel plus the noise / 10, features that
    separate the classes perfectly; the other outputs the noise alone, which says nothing of them."""

    def __init__(self, num_classes: int, informative: bool) -> None:
        super().__init__()
        self.num_classes, self.informative = num_classes, informative
        self.out_channels = num_classes + 3
        self.unused = torch.nn.Parameter(torch.zeros(1))  # an optimiser-free stage still has parameters

    def forward(self, sparse: SparseTensor, inverse: torch.Tensor | None = None) -> torch.Tensor:
        noise = sparse.F[:, 1:]
        if self.informative:
            label = torch.nn.functional.one_hot(sparse.F[:, 0].long(), self.num_classes).float()
            out = torch.cat([label, noise / 10], 1)
        else:
            out = torch.cat([torch.zeros(len(noise), self.num_classes), noise], 1)
        return out if inverse is None else out[inverse]


def _probe_batches(num_classes: int, frames: int = 3, points: int = 90) -> list[dict]:
    """Validation batches of one frame each: two points a voxel, both of the voxel's class (its input's
    class channel), a quarter of the voxels unlabelled (segment -1, any class channel)."""
    g = torch.Generator().manual_seed(5)
    batches = []
    for frame in range(frames):
        voxels = points // 2
        cls = torch.randint(0, num_classes, (voxels,), generator=g)
        feats = torch.cat([cls[:, None].float(), torch.randn(voxels, 3, generator=g)], 1)
        xyz = torch.randint(0, 50, (voxels, 3), generator=g)
        coords = torch.cat([torch.zeros(voxels, 1, dtype=torch.long), xyz], 1)
        inverse = torch.arange(voxels).repeat_interleave(2)
        segment = cls[inverse].clone()
        segment[torch.rand(len(segment), generator=g) < 0.25] = -1
        batches.append({
            "sparse": SparseTensor(feats, coords), "inverse": inverse, "segment": segment,
            "point_batch": torch.zeros(len(inverse), dtype=torch.long), "scene_index": torch.tensor([frame]),
        })  # fmt: skip
    return batches


def _probe_miou(informative: bool) -> dict:
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    module = P2CModule(backbone=_ProbeNet(3, informative), projection_dim=8, projector_hidden=8,
                       predictor_hidden=8, val_num_classes=3, val_points=30)  # fmt: skip
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    loader = DataLoader(_probe_batches(3), batch_size=None, collate_fn=lambda b: b)
    (metrics,) = trainer.validate(module, dataloaders=loader, verbose=False)
    return metrics


def test_probe_scores_features_that_separate_the_classes_perfectly() -> None:
    """Features that are a one-hot of each point's class: K-means finds the classes, mIoU and accuracy
    are 1 (a probe pairing features with other points' labels would score about 1/3)."""
    metrics = _probe_miou(informative=True)
    assert metrics["val/miou"] == pytest.approx(1.0) and metrics["val/acc"] == pytest.approx(1.0)


def test_probe_scores_class_blind_features_low() -> None:
    """Features independent of the classes: the matched mIoU stays near chance (1/3 of 3 classes'
    IoU of about 1/5 each), far from 1."""
    metrics = _probe_miou(informative=False)
    assert metrics["val/miou"] < 0.5


def test_segmentation_iou_against_a_loop() -> None:
    g = torch.Generator().manual_seed(2)
    target = torch.randint(-1, 4, (500,), generator=g)
    target[target == 3] = 2  # class 3 never occurs in the targets
    pred = torch.randint(0, 4, (500,), generator=g)
    metric = SegmentationIoU(4)
    metric.update(pred[:200], target[:200])
    metric.update(pred[200:], target[200:])
    out = metric.compute()
    valid = target >= 0
    ious = []
    for c in range(3):
        inter = ((pred == c) & (target == c) & valid).sum()
        union = (((pred == c) & valid) | (target == c)).sum()
        ious.append(inter / union)
    torch.testing.assert_close(out["miou"].float(), torch.stack(ious).mean().float())
    torch.testing.assert_close(out["acc"].float(), (pred[valid] == target[valid]).float().mean())
    assert out["iou"][3] == 0  # predicted but absent: IoU 0, left out of the mean


def test_finetune_from_a_p2c_checkpoint_loads_the_online_backbone(tmp_path: Path) -> None:
    p2c = P2CModule(backbone=MinkUNet(4, width=0.25))
    with torch.no_grad():  # make the online backbone differ from the target one
        for p in p2c.backbone.parameters():
            p.add_(torch.randn_like(p))
    ckpt = tmp_path / "p2c.ckpt"
    torch.save({"state_dict": p2c.state_dict()}, ckpt)
    fine = FinetuneModule(backbone=MinkUNet(4, width=0.25), init_checkpoint=str(ckpt), num_classes=19)
    for (name, a), b in zip(fine.backbone.state_dict().items(), p2c.backbone.state_dict().values()):
        assert torch.equal(a, b), name
    scratch = FinetuneModule(backbone=MinkUNet(4, width=0.25), num_classes=19)
    assert not torch.equal(next(scratch.backbone.parameters()), next(p2c.backbone.parameters()))


# -- every config, one step on the synthetic sequences ---------------------------------------------

CONFIGS = sorted(
    [*EXPERIMENTS.glob("stssl_*.yaml"), *EXPERIMENTS.glob("finetune_*.yaml")]
    + [
        *(EXPERIMENTS / "quickstart").glob("stssl_*.yaml"),
        *(EXPERIMENTS / "quickstart").glob("finetune_*.yaml"),
    ]
)

TINY_DATA = {
    "num_sequences": 3, "num_val": 1, "frames_per_sequence": 3, "azimuth_steps": 256, "voxel_size": 0.2,
    "batch_size": 2, "val_batch_size": 2, "num_workers": 0, "prepare_workers": 1, "max_voxels": 1200,
    "track_min_points": 40,
}  # fmt: skip


def _synthetic_like(class_path: str) -> tuple[type, ...]:
    """The synthetic sequences as the recipe's data module: STSSL's (clusters, tracks) for pre-training,
    the generic one for fine-tuning; then the classes whose arguments it takes (not SemanticKITTI's
    raw_root and sequences: the synthetic module sets them)."""
    generic = (synthetic_dms.SyntheticLidarDataModule, LidarDataModule, PointCloudDataModule)
    if class_path.startswith("unsup3d.stssl."):
        return (stssl_dms.SyntheticLidarDataModule, stssl_dms.STSSLDataModule, *generic)
    return generic


def _data_args(classes: tuple[type, ...]) -> set[str]:
    names: set[str] = set()
    for cls in classes:
        names |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    return names


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "p2c.ckpt"
    torch.save({"state_dict": P2CModule(backbone=MinkUNet(4, width=0.25)).state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic_lidar")


def test_there_are_all_the_configs() -> None:
    names = {c.name for c in CONFIGS}
    pretraining = {"stssl_p2c.yaml", "stssl_interframe.yaml", "stssl_nuscenes_p2c.yaml"}
    assert pretraining | {"stssl_nuscenes_interframe.yaml", "finetune_semantickitti.yaml"} <= names
    assert "finetune_semanticposs.yaml" in names
    assert len([c for c in CONFIGS if c.parent.name == "quickstart"]) == 3


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_runs_one_step(
    config: Path, tmp_path: Path, data_root: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_one_step(config, tmp_path, data_root, tiny_checkpoint, monkeypatch)


def test_interframe_tracks_with_the_release_cluster_features(
    tmp_path: Path, data_root: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``track_cluster_features: max_projection``: the first tracking uses P2C's projection head."""
    seen = []
    original = stssl_dms.STSSLDataModule.refresh_tracks

    def spy(self, backbone, *args, projector=None, **kw):
        seen.append((self.track_settings.cluster_features, projector))
        return original(self, backbone, *args, projector=projector, **kw)

    monkeypatch.setattr(stssl_dms.STSSLDataModule, "refresh_tracks", spy)
    config = EXPERIMENTS / "quickstart" / "stssl_interframe.yaml"
    release = {"track_cluster_features": "max_projection"}
    _run_one_step(config, tmp_path, data_root, tiny_checkpoint, monkeypatch, **release)
    assert len(seen) == 1 and seen[0][0] == "max_projection"
    p2c = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    for name, value in seen[0][1].state_dict().items():
        assert torch.equal(value, p2c[f"projector.{name}"]), name


def test_tracking_projector_is_p2cs_until_the_stage_tracks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    p2c = P2CModule(backbone=MinkUNet(4, width=0.25))
    ckpt = tmp_path / "p2c.ckpt"
    torch.save({"state_dict": p2c.state_dict()}, ckpt)
    torch.manual_seed(1)
    module = InterFrameModule(backbone=MinkUNet(4, width=0.25), init_checkpoint=str(ckpt))
    head = module.tracking_projector()
    assert head is not module.projector
    for (name, a), b in zip(head.state_dict().items(), p2c.projector.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(module.projector.net[0].weight, p2c.projector.net[0].weight)  # fresh head
    module.last_track_epoch.fill_(0)
    assert module.tracking_projector() is module.projector
    scratch = InterFrameModule(backbone=MinkUNet(4, width=0.25))  # no P2C checkpoint: its own head
    assert scratch.tracking_projector() is scratch.projector


def _run_one_step(
    config: Path, tmp_path: Path, data_root: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
    **data: object,
) -> None:  # fmt: skip
    cfg = yaml.safe_load(config.read_text())
    # the recipe's data settings on the synthetic sequences, at a tiny size
    classes = _synthetic_like(cfg["data"]["class_path"])
    cls, accepted = classes[0], _data_args(classes)
    args = {k: v for k, v in cfg["data"]["init_args"].items() if k in accepted}
    args.update({k: v for k, v in TINY_DATA.items() if k in accepted}, data_root=str(data_root), **data)
    cfg["data"] = {"class_path": f"{cls.__module__}.{cls.__name__}", "init_args": args}
    model = cfg["model"]["init_args"]
    model["backbone"]["init_args"]["width"] = 0.25
    if model.get("init_checkpoint"):
        model["init_checkpoint"] = str(tiny_checkpoint)
    if "num_classes" in model:
        model["num_classes"] = 19  # the synthetic scans carry SemanticKITTI's classes
    if "val_points" in model:
        model["val_points"] = 500
    trainer = cfg["trainer"]
    trainer.update(fast_dev_run=True, accelerator="cpu", devices=1, default_root_dir=str(tmp_path))
    trainer.update(enable_progress_bar=False, enable_model_summary=False)
    trainer["logger"]["init_args"]["save_dir"] = str(tmp_path)
    for cb in trainer.get("callbacks", []):
        if "dirpath" in cb.get("init_args", {}):
            cb["init_args"]["dirpath"] = str(tmp_path / "checkpoints")
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump(copy.deepcopy(cfg)))
    monkeypatch.setattr(sys, "argv", ["unsup3d"])  # pytest's own arguments are not the CLI's
    main(["fit", "--config", str(path)])


def test_interframe_schedule_and_resume_state() -> None:
    module = InterFrameModule(backbone=MinkUNet(4, width=0.25), inter_warmup_epochs=3, retrack_every=4)
    assert [module.inter_weight_at(e) for e in (0, 2, 3, 10)] == [0.0, 0.0, 0.8, 0.8]
    assert module._retrack_due(0)  # never tracked with features yet
    module.last_track_epoch.fill_(0)
    assert [e for e in range(1, 13) if module._retrack_due(e)] == [4, 8, 12]
    module.track_version = "abc"
    ckpt: dict = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    resumed = InterFrameModule(backbone=MinkUNet(4, width=0.25), inter_warmup_epochs=3, retrack_every=4)
    resumed.on_load_checkpoint(ckpt)
    resumed.load_state_dict(ckpt["state_dict"])
    assert resumed.track_version == "abc" and int(resumed.last_track_epoch) == 0
    assert not InterFrameModule(backbone=MinkUNet(4, width=0.25), track_features=False)._retrack_due(0)


def test_p2c_refuses_pairs_of_different_frames() -> None:
    module = P2CModule(backbone=MinkUNet(4, width=0.25))
    view = _view([[(0, 5)]])
    with pytest.raises(ValueError, match="interval_max"):
        module.training_step({"view0": view, "view1": view, "interval": torch.tensor([2])}, 0)
