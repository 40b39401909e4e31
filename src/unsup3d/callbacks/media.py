"""What the media callbacks share: finding the W&B run of a trainer, sub-sampling points, and turning
coloured points into ``wandb.Object3D`` clouds."""

from __future__ import annotations

from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

__all__ = ["log_media", "object3d", "sample_rows", "wandb_logger"]


def wandb_logger(trainer: Trainer) -> LightningWandbLogger | None:
    """The trainer's W&B logger on the global-zero process, else None (no W&B logger, a
    ``fast_dev_run``'s dummy logger, another rank): media callbacks then do nothing."""
    if not trainer.is_global_zero:
        return None
    for logger in trainer.loggers:
        if isinstance(logger, LightningWandbLogger):
            return logger
    return None


def log_media(logger: LightningWandbLogger, trainer: Trainer, media: dict[str, Any]) -> None:
    """One ``run.log`` call, on the ``trainer/global_step`` axis Lightning's logger defines."""
    if media:
        logger.experiment.log({**media, "trainer/global_step": trainer.global_step})


def sample_rows(n: int, max_points: int, seed: int) -> np.ndarray:
    """Sorted rows of at most ``max_points`` of ``n`` points, the same for the same seed."""
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def object3d(coord: np.ndarray, rgb: np.ndarray) -> Any:
    """A ``wandb.Object3D`` point cloud: ``(N, 6)`` rows of x, y, z, r, g, b (colours 0-255)."""
    import wandb

    coord = np.asarray(coord, dtype=np.float64).reshape(-1, 3)
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    if len(coord) != len(rgb):
        raise ValueError(f"object3d: {len(coord)} points but {len(rgb)} colours")
    return wandb.Object3D(np.concatenate([coord, rgb], axis=1))
