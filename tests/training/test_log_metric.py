"""``log_metric``: what a run's metrics hold after its last validation, when a class's IoU is defined
in one validation epoch and not in the next."""

from __future__ import annotations

import math

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader

from unsup3d.training.evaluation import forget_metric, log_metric


class _Scripted:
    """A stand-in metric: each compute() returns the next scripted per-class IoU (mIoU: their nanmean)."""

    def __init__(self, script: list[list[float]]) -> None:
        self.script = list(script)

    def compute(self) -> dict:
        iou = torch.tensor(self.script.pop(0))
        return {"miou": iou.nanmean(), "acc": torch.tensor(0.5), "iou": iou}

    def reset(self) -> None:
        pass


class _Module(LightningModule):
    def __init__(self, script: list[list[float]]) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.metric = _Scripted(script)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = log_metric(self, self.metric, "val", ["wall", "bathtub"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, epochs: int) -> Trainer:
    return Trainer(
        max_epochs=epochs, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip


def test_a_class_undefined_at_the_last_validation_is_not_reported_from_an_earlier_one(tmp_path) -> None:
    """Epoch 0: bathtub 0 (a cluster was matched to it); epoch 1: NaN (no val point, no cluster). The run's
    metrics after fit are the last validation's: no val/iou/bathtub left over from epoch 0."""
    module = _Module([[0.9, 0.0], [0.8, math.nan]])
    data = DataLoader(torch.ones(2, 1), batch_size=1)
    trainer = _trainer(tmp_path, 2)
    trainer.fit(module, data, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert metrics == {"val/miou": 0.800000011920929, "val/acc": 0.5, "val/iou/wall": 0.800000011920929}


def test_class_names_of_another_length_give_way_to_ids(tmp_path) -> None:
    """A list of names of another length would mislabel or drop per-class keys: ids, with a warning."""
    module = _Module([[0.9, 0.0]])
    module.on_validation_epoch_end = lambda: log_metric(module, module.metric, "val", ["wall"])
    trainer = _trainer(tmp_path, 1)
    data = DataLoader(torch.ones(2, 1), batch_size=1)
    with pytest.warns(UserWarning, match="1 class names for 2 classes"):
        trainer.validate(module, data, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/iou/")}
    assert metrics == {"val/iou/0": pytest.approx(0.9), "val/iou/1": 0.0}


class _Skipping(_Module):
    """Evaluates at epoch 0, skips (too few points to cluster) at epoch 1."""

    def on_validation_epoch_end(self) -> None:
        if self.current_epoch == 0:
            self.last_metrics = log_metric(self, self.metric, "val", ["wall", "bathtub"])
        else:
            forget_metric(self, "val")
            self.log("val/loss", 1.0)  # another val key of the epoch stays


def test_a_skipped_evaluation_does_not_report_the_previous_one(tmp_path) -> None:
    module = _Skipping([[0.9, 0.0]])
    data = DataLoader(torch.ones(2, 1), batch_size=1)
    trainer = _trainer(tmp_path, 2)
    trainer.fit(module, data, data)
    assert {k for k in trainer.callback_metrics if k.startswith("val/")} == {"val/loss"}
