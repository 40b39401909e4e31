"""Hungarian-matched mIoU and accuracy (torchmetrics), the same on 1 or N processes."""

from unsup3d.metrics.hungarian import HungarianMIoU, hungarian_miou

__all__ = ["HungarianMIoU", "hungarian_miou"]
