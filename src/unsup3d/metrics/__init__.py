"""Hungarian-matched mIoU and accuracy (torchmetrics), the same on 1 or N processes; their printed
table."""

from unsup3d.metrics.hungarian import HungarianMIoU, hungarian_miou
from unsup3d.metrics.table import format_metrics

__all__ = ["HungarianMIoU", "format_metrics", "hungarian_miou"]
