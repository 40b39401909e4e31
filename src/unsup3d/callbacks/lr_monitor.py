"""Lightning's ``LearningRateMonitor`` for recipes that may run without a logger."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info

__all__ = ["LearningRateMonitor"]


class LearningRateMonitor(_LightningLearningRateMonitor):
    """Logs the learning rate as Lightning's does; a run without a logger (``--trainer.logger false``)
    goes on without it instead of refusing to start, so every recipe runs with its logger turned off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._off = False

    def on_train_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        self._off = not trainer.loggers
        if self._off:
            rank_zero_info("LearningRateMonitor: no logger, the learning rate is not logged")
            return
        super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if not self._off:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if not self._off:
            super().on_train_epoch_start(trainer, *args, **kwargs)
