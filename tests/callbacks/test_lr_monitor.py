"""unsup3d's LearningRateMonitor: logs as Lightning's does, and lets a run without a logger go on."""

from __future__ import annotations

from pathlib import Path

import pytest
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
