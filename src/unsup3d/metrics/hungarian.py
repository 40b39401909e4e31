"""Hungarian-matched mIoU and accuracy of an unsupervised segmentation (PointDC Sec. 4.1, STEGO, PiCIE).

Clusters carry no class names, so each cluster is first matched one-to-one to a class by the Hungarian
algorithm on the cluster x class confusion matrix, maximising the number of points whose cluster is
matched to their own class; IoU per class and overall accuracy are then those of the matched labelling.

Averaging: mIoU is the mean IoU over the classes whose union (points of the class, plus points
predicted as the class) is non-empty; the other classes' IoU is NaN. This is STEGO's and PiCIE's rule
(``nanmean`` of ``tp / (tp + fp + fn)``). PointDC's release averages over all classes with a 1e-8 guard,
so a class with an empty union counts as 0 there; the two agree whenever every class occurs in the
evaluated points, as on a full validation split.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics import Metric


def _check_ids(preds: Tensor, target: Tensor) -> None:
    if preds.shape != target.shape:
        raise ValueError(
            f"HungarianMIoU: preds and target must have the same shape, got {tuple(preds.shape)} "
            f"and {tuple(target.shape)}"
        )
    for name, t in (("preds", preds), ("target", target)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"HungarianMIoU: {name} must hold integer ids, got dtype {t.dtype}")


def _hungarian_miou_update(
    preds: Tensor, target: Tensor, num_clusters: int, num_classes: int, ignore_index: int
) -> Tensor:
    """Confusion counts ``(num_clusters, num_classes)`` (int64) of one batch of point ids.

    Points whose target is ``ignore_index`` or outside ``[0, num_classes)`` are dropped, as every
    reference evaluation does (``mask = (label >= 0) & (label < n)``); the predictions of the points
    kept must lie in ``[0, num_clusters)``, anything else raises ValueError.
    """
    _check_ids(preds, target)
    p = preds.reshape(-1).long()
    t = target.reshape(-1).long()
    keep = (t != ignore_index) & (t >= 0) & (t < num_classes)
    p, t = p[keep], t[keep]
    if p.numel() > 0:
        low, high = int(p.min()), int(p.max())
        if low < 0 or high >= num_clusters:
            raise ValueError(
                f"HungarianMIoU: preds must be cluster ids in [0, {num_clusters}), got values in "
                f"[{low}, {high}] on labelled points"
            )
    counts = torch.bincount(p * num_classes + t, minlength=num_clusters * num_classes)
    return counts.reshape(num_clusters, num_classes)


def _hungarian_match(confusion: Tensor) -> Tensor:
    """For each cluster (row), the class (column) it is matched to, or -1: the one-to-one matching
    that maximises the matched points (``scipy.optimize.linear_sum_assignment``). int64, CPU."""
    rows, cols = linear_sum_assignment(confusion.detach().cpu().numpy(), maximize=True)
    assignment = torch.full((confusion.shape[0],), -1, dtype=torch.int64)
    assignment[torch.from_numpy(rows.astype(np.int64))] = torch.from_numpy(cols.astype(np.int64))
    return assignment


def _hungarian_miou_compute(confusion: Tensor) -> dict[str, Tensor]:
    """mIoU, accuracy, per-class IoU and the cluster -> class matching of a confusion matrix (which is
    returned too, as ``confusion``, for pictures of the aligned matrix).

    Points of unmatched clusters (more clusters than classes) are false negatives of their own class
    and false positives of none; unmatched classes (fewer clusters than classes) have tp = 0.
    """
    num_clusters, num_classes = confusion.shape
    counts = confusion.detach().cpu().to(torch.float64)
    assignment = _hungarian_match(confusion)
    matched = torch.nonzero(assignment >= 0).flatten()
    classes = assignment[matched]

    tp = torch.zeros(num_classes, dtype=torch.float64)
    predicted = torch.zeros(num_classes, dtype=torch.float64)
    tp[classes] = counts[matched, classes]
    predicted[classes] = counts[matched].sum(dim=1)
    actual = counts.sum(dim=0)
    union = actual + predicted - tp

    iou = torch.where(union > 0, tp / union.clamp_min(1.0), torch.full_like(union, float("nan")))
    present = union > 0
    total = counts.sum()
    miou = iou[present].mean() if bool(present.any()) else torch.tensor(float("nan"), dtype=torch.float64)
    acc = tp.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64)

    device = confusion.device
    return {
        "miou": miou.to(device=device, dtype=torch.float32),
        "acc": acc.to(device=device, dtype=torch.float32),
        "iou": iou.to(device=device, dtype=torch.float32),
        "assignment": assignment.to(device),
        "confusion": confusion.detach().clone(),
    }


def hungarian_miou(
    preds: Tensor,
    target: Tensor,
    num_classes: int,
    num_clusters: int | None = None,
    ignore_index: int = -1,
) -> dict[str, Tensor]:
    """Functional form of :class:`HungarianMIoU` for one set of predictions."""
    k = num_classes if num_clusters is None else num_clusters
    return _hungarian_miou_compute(_hungarian_miou_update(preds, target, k, num_classes, ignore_index))


class HungarianMIoU(Metric):
    """Hungarian-matched mIoU and accuracy of cluster ids against class ids, over every update.

    Args:
        num_classes: number of ground-truth classes (ids ``0 .. num_classes - 1``).
        num_clusters: number of cluster ids (``0 .. num_clusters - 1``); defaults to ``num_classes``.
            More clusters than classes is allowed: each class is matched to one cluster and the points
            of unmatched clusters count as wrong. With fewer, unmatched classes have IoU 0.
        ignore_index: target id of unlabelled points, which are dropped. Targets outside
            ``[0, num_classes)`` are dropped as well (the reference evaluations' mask).

    ``update(preds, target)`` takes integer tensors of one shape (any; flattened). ``compute()`` returns
    a dict of tensors: ``miou`` and ``acc`` (0-dim float32, fractions in [0, 1]; NaN before any
    labelled point), ``iou`` (float32 ``(num_classes,)``, NaN where a class has an empty union and is
    left out of ``miou``; see the module docstring), ``assignment`` (int64 ``(num_clusters,)``, the
    class each cluster was matched to, or -1) and ``confusion`` (int64 ``(num_clusters, num_classes)``,
    the counts the matching was made on: points of cluster ``i`` and class ``j``).

    The state is the ``(num_clusters, num_classes)`` confusion matrix, summed across processes, so
    the result on N processes equals that on one process holding all the points.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confusion: Tensor

    def __init__(
        self, num_classes: int, num_clusters: int | None = None, ignore_index: int = -1, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        num_clusters = num_classes if num_clusters is None else num_clusters
        for name, value in (("num_classes", num_classes), ("num_clusters", num_clusters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"HungarianMIoU: {name} must be a positive int, got {value!r}")
        self.num_classes = num_classes
        self.num_clusters = num_clusters
        self.ignore_index = ignore_index
        self.add_state(
            "confusion",
            default=torch.zeros(num_clusters, num_classes, dtype=torch.int64),
            dist_reduce_fx="sum",
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add a batch of per-point cluster ids ``preds`` and class ids ``target``."""
        self.confusion += _hungarian_miou_update(
            preds.to(self.confusion.device),
            target.to(self.confusion.device),
            self.num_clusters,
            self.num_classes,
            self.ignore_index,
        )

    def compute(self) -> dict[str, Tensor]:
        """Match clusters to classes on the accumulated counts and score the matched labelling."""
        return _hungarian_miou_compute(self.confusion)
