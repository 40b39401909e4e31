"""Evaluation shared by the stages: cluster predictions, test-time super-voxel pooling, the
Hungarian metric and its logging (``val/miou``, ``val/acc`` as fractions, ``val/iou/<class>``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from unsup3d.metrics import HungarianMIoU
from unsup3d.vision.projection import superpoint_mean


def pool_logits(logits: Tensor, superpoint: Tensor, num_superpoints: int) -> Tensor:
    """Test-time super-voxel pooling: every point takes the mean logits of its super-voxel."""
    means, _ = superpoint_mean(logits, superpoint, num_superpoints)
    return torch.where((superpoint >= 0)[:, None], means[superpoint.clamp_min(0)], logits)


def merge_clusters(centroids: Tensor, num_classes: int, seed: int = 0, spherical: bool = True) -> Tensor:
    """Over-clustering merged to the class count: K-means of the centroids into ``num_classes``
    groups, in the space the clusters were made in (``spherical``: by cosine, as SVC's Eq. 8; else
    Euclidean, as the teacher-free path's joint clustering); returns the group of each cluster."""
    from unsup3d.clustering import kmeans

    out = kmeans(centroids.float(), num_classes, spherical=spherical, seed=seed, distributed=False)
    return out.assignments


def log_metric(
    module: LightningModule, metric: HungarianMIoU, prefix: str, class_names: Sequence[str] | None
) -> dict:
    """Compute, log and reset ``metric``; returns the computed dict. ``class_names`` of another length
    than the classes would mislabel them: the classes are then named by id, with a warning.

    A class whose IoU is undefined (NaN: no point of it and no point matched to it) is not logged, and
    its value from an earlier validation of the run is removed from the trainer's ``callback_metrics``,
    which Lightning keeps from epoch to epoch: what a run reports after its last validation (the
    quickstart's table, a benchmark's per-class IoU) is that validation's alone."""
    out = metric.compute()
    module.log(f"{prefix}/miou", out["miou"].float(), sync_dist=False)
    module.log(f"{prefix}/acc", out["acc"].float(), sync_dist=False)
    names = class_names or [str(i) for i in range(len(out["iou"]))]
    if len(names) != len(out["iou"]):  # e.g. a data module's 20 names beside num_classes 13
        warnings.warn(
            f"{len(names)} class names for {len(out['iou'])} classes: per-class IoU logged by class id",
            stacklevel=2,
        )
        names = [str(i) for i in range(len(out["iou"]))]
    for name, iou in zip(names, out["iou"].tolist()):
        if iou == iou:
            module.log(f"{prefix}/iou/{name}", iou, sync_dist=False)
        else:
            forget_logged(module, f"{prefix}/iou/{name}")
    metric.reset()
    return out


def forget_metric(module: LightningModule, prefix: str) -> None:
    """Remove an earlier epoch's ``<prefix>/miou``, ``/acc`` and ``/iou/<class>`` from the trainer's
    ``callback_metrics``: for an epoch whose evaluation is skipped (too few points to cluster), whose
    run must not report the previous evaluation as its own."""
    if module._trainer is not None:
        scalars, per_class = (f"{prefix}/miou", f"{prefix}/acc"), f"{prefix}/iou/"
        for key in [k for k in module.trainer.callback_metrics if k in scalars or k.startswith(per_class)]:
            forget_logged(module, key)


def forget_logged(module: LightningModule, key: str) -> None:
    """Remove ``key``'s value from an earlier epoch from the trainer's ``callback_metrics`` (which
    Lightning keeps from epoch to epoch), for a metric this epoch does not log."""
    if module._trainer is not None:
        module.trainer.callback_metrics.pop(key, None)
