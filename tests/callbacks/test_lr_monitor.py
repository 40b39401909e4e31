"""unsup3d's LearningRateMonitor: logs as Lightning's does, and lets a run without a logger go on."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor as LightningLearningRateMonitor
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from unsup3d.callbacks import LearningRateMonitor

QUIET = {"max_steps": 2, "limit_val_batches": 0, "enable_progress_bar": False, "enable_model_summary": False}


def test_runs_without_a_logger_where_lightnings_refuses(tmp_path: Path) -> None:
    monitor = LightningLearningRateMonitor()
    lightnings = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[monitor], **QUIET)
    with pytest.raises(MisconfigurationException, match="no logger"):
        lightnings.fit(BoringModel())
    trainer = Trainer(default_root_dir=tmp_path, logger=False, callbacks=[LearningRateMonitor()], **QUIET)
    trainer.fit(BoringModel())
    assert trainer.global_step == 2


def test_logs_the_learning_rate_with_a_logger(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, name="run", version=0)
    trainer = Trainer(default_root_dir=tmp_path, logger=logger, callbacks=[LearningRateMonitor()],
                      log_every_n_steps=1, **QUIET)  # fmt: skip
    trainer.fit(BoringModel())
    header = (tmp_path / "run" / "version_0" / "metrics.csv").read_text().splitlines()[0]
    assert "lr-SGD" in header.split(",")


class HalvingModel(BoringModel):
    """SGD at 0.1, halved after every optimiser step (a scheduler stepped each step)."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_logged_values_are_the_learning_rate_of_each_step(tmp_path: Path) -> None:
    """With the logger, each step's row holds the rate that step's update used: 0.1, 0.05, 0.025, 0.0125
    for steps 0-3 (halved after each step, worked out by hand)."""
    logger = CSVLogger(tmp_path, name="run", version=0)
    trainer = Trainer(default_root_dir=tmp_path, logger=logger, callbacks=[LearningRateMonitor()],
                      log_every_n_steps=1, **{**QUIET, "max_steps": 4})  # fmt: skip
    trainer.fit(HalvingModel())
    with (tmp_path / "run" / "version_0" / "metrics.csv").open() as f:
        logged = [(int(r["step"]), float(r["lr-SGD"])) for r in csv.DictReader(f) if r.get("lr-SGD")]
    assert logged == [(0, 0.1), (1, 0.05), (2, 0.025), (3, 0.0125)]
