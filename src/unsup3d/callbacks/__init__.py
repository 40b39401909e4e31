"""W&B dashboards: a logger that is offline unless turned on and never fails a run for lack of
network, a media callback for validation scenes (STSSL's track clouds: :mod:`unsup3d.stssl.track_media`),
and a reader of offline runs."""

from unsup3d.callbacks.lr_monitor import LearningRateMonitor
from unsup3d.callbacks.offline_run import OfflineRun, find_offline_runs, iter_records, read_offline_run
from unsup3d.callbacks.validation_media import ValidationMedia, aligned_confusion, aligned_ids
from unsup3d.callbacks.wandb_logger import WandbLogger, resolve_mode

__all__ = [
    "LearningRateMonitor",
    "OfflineRun",
    "ValidationMedia",
    "WandbLogger",
    "aligned_confusion",
    "aligned_ids",
    "find_offline_runs",
    "iter_records",
    "read_offline_run",
    "resolve_mode",
]
