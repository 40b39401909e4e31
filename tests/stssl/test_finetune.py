"""Fine-tuning's training behaviour: cross-entropy over the labelled points only, the frozen backbone of
linear evaluation (no gradient, not optimised, BatchNorm statistics kept), and the per-step cosine
learning rate, each against values worked out by hand or a loop."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader

from unsup3d.sparse import SparseTensor
from unsup3d.stssl.finetune import FinetuneModule

NUM_CLASSES = 3

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")


class _StubNet(torch.nn.Module):
    """A stand-in backbone: a linear layer and a BatchNorm over the voxel features, read out per point."""

    def __init__(self) -> None:
        super().__init__()
        self.out_channels = 5
        self.lin = torch.nn.Linear(4, 5)
        self.bn = torch.nn.BatchNorm1d(5)

    def forward(self, sparse: SparseTensor, inverse: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(sparse.F))[inverse]


def _batch(seed: int, voxels: int = 12) -> dict:
    """One scan: two points a voxel, random voxel features, targets in [0, 3) with every third point -1."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(voxels, 4, generator=g) * 2 + 1
    xyz = torch.arange(voxels)[:, None].repeat(1, 3)
    coords = torch.cat([torch.zeros(voxels, 1, dtype=torch.long), xyz], 1)
    inverse = torch.arange(voxels).repeat_interleave(2)
    segment = torch.randint(0, NUM_CLASSES, (len(inverse),), generator=g)
    segment[::3] = -1
    return {"sparse": SparseTensor(feats, coords.int()), "inverse": inverse, "segment": segment,
            "scene_index": torch.tensor([seed])}  # fmt: skip


def _module(**kw) -> FinetuneModule:
    torch.manual_seed(0)
    return FinetuneModule(backbone=_StubNet(), num_classes=NUM_CLASSES, lr=0.1, **kw)


def _fit(module: FinetuneModule, epochs: int, batches: int, callbacks: list[Callback]) -> Trainer:
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=False, callbacks=callbacks,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    loader = DataLoader([_batch(i) for i in range(batches)], batch_size=None, collate_fn=lambda b: b)
    trainer.fit(module, train_dataloaders=loader)
    return trainer


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_loss_is_cross_entropy_over_the_labelled_points_only() -> None:
    """The training loss is the mean over points with target >= 0 of -log softmax(logits)[target];
    points of target -1 add nothing (training them as class 0 would give another value)."""
    module = _module().eval()  # BatchNorm on running statistics: each point's logits are its own
    batch = _batch(1)
    with torch.no_grad():
        logits = module.classifier(module.backbone(batch["sparse"], batch["inverse"])).double()
    terms, as_class0 = [], []
    for row, t in zip(logits.tolist(), batch["segment"].tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        if t >= 0:
            terms.append(log_z - row[t])
        as_class0.append(log_z - row[max(t, 0)])
    expected = sum(terms) / len(terms)
    assert len(terms) == 16  # 24 points, 8 of them unlabelled
    assert abs(sum(as_class0) / len(as_class0) - expected) > 1e-2  # the reference tells the two apart

    loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_a_crop_without_labels_gives_zero_loss_that_reaches_every_parameter() -> None:
    """No labelled point: the loss is 0, and still a graph through the backbone and classifier (zero
    gradients), so distributed training sees every parameter."""
    module = _module().eval()
    batch = _batch(2)
    batch["segment"][:] = -1
    loss = module.training_step(batch, 0)
    assert loss.item() == 0.0
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.equal(p.grad, torch.zeros_like(p)), name


class _Record(Callback):
    """Each training step's learning rate and whether the backbone was in training mode."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.backbone_training: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.backbone_training.append(pl_module.backbone.training)


def test_frozen_backbone_is_neither_optimised_nor_updates_its_batchnorm() -> None:
    """``freeze_backbone=True`` (linear evaluation): the backbone's parameters need no gradient and are
    not in the optimiser, the backbone runs in eval mode in every training step, so neither its
    weights nor its BatchNorm statistics move; the classifier alone trains."""
    module = _module(freeze_backbone=True)
    assert not any(p.requires_grad for p in module.backbone.parameters())
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    head_before = module.classifier.weight.detach().clone()
    record = _Record()
    trainer = _fit(module, epochs=2, batches=3, callbacks=[record])
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimised == {id(module.classifier.weight), id(module.classifier.bias)}
    assert record.backbone_training == [False] * 6
    for k, v in module.backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.allclose(module.classifier.weight, head_before)


def test_unfrozen_backbone_trains_with_the_classifier() -> None:
    """The default (``freeze_backbone=False``): backbone and classifier are optimised, the backbone is in
    training mode, and its weights and BatchNorm statistics move."""
    module = _module()
    before = {k: v.clone() for k, v in module.backbone.state_dict().items()}
    record = _Record()
    trainer = _fit(module, epochs=1, batches=2, callbacks=[record])
    optimised = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert optimised == {id(p) for p in module.parameters()}
    assert record.backbone_training == [True, True]
    for k in ("lin.weight", "bn.running_mean"):
        assert not torch.equal(module.backbone.state_dict()[k], before[k]), k


def test_learning_rate_follows_the_per_step_cosine_to_zero() -> None:
    """SGD at 0.1 annealed per step: step s of T = 6 (2 epochs of 3 batches) runs at
    0.1 * (1 + cos(pi * s / 6)) / 2, i.e. 0.1, 0.0933, 0.075, 0.05, 0.025, 0.0067."""
    record = _Record()
    _fit(_module(), epochs=2, batches=3, callbacks=[record])
    c = math.sqrt(3) / 2  # cos(pi / 6)
    expected = [0.1, 0.05 * (1 + c), 0.075, 0.05, 0.025, 0.05 * (1 - c)]
    assert record.lrs == pytest.approx(expected, rel=1e-9, abs=1e-12)
