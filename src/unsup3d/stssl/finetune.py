"""Fine-tuning for LiDAR semantic segmentation (STSSL Sec. 4.1-4.2): a pre-trained (or fresh) backbone
and a linear classifier trained with cross-entropy on the labelled scans of a label split.

The release (``downstream_train.py``): MinkUNet with a linear head, cross-entropy ignoring the
unlabelled class, SGD 0.1 (momentum 0.9, Nesterov, weight decay 1e-4) with a cosine schedule per
step, 15 epochs, batch 2 per GPU on 4 GPUs. ``freeze_backbone`` gives the linear evaluation of the
release's ``--linear-eval``. Validation logs plain (not Hungarian) ``val/miou`` and ``val/acc`` over
the points with a label, and ``val/iou/<class>``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import Metric

from unsup3d.training.common import build_backbone, default_stssl_backbone
from unsup3d.training.evaluation import log_metric
from unsup3d.training.precision import float32, to_float32


class SegmentationIoU(Metric):
    """Confusion-matrix mIoU and accuracy of class predictions, synchronised across processes.

    Points whose target is ``ignore_index`` (or outside ``[0, num_classes)``) are left out. IoU of a class
    is ``tp / (tp + fp + fn)``; mIoU averages the classes that occur in the evaluated targets (the
    others are NaN), which equals SemanticKITTI's evaluation whenever every class occurs, as on its
    validation sequence. ``compute()`` returns ``miou``, ``acc`` (fractions), ``iou`` per class, and the
    counts as ``confusion`` (``(predicted, target)``, :class:`~unsup3d.metrics.HungarianMIoU`'s layout)
    with the identity ``assignment``.
    """

    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = -1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.add_state(
            "confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum"
        )

    def update(self, preds: Tensor, target: Tensor) -> None:
        """``preds`` and ``target``: class ids of the same points."""
        if preds.shape != target.shape:
            raise ValueError(f"SegmentationIoU: preds {tuple(preds.shape)} and target {tuple(target.shape)}")
        p, t = preds.reshape(-1).long(), target.reshape(-1).long()
        keep = (t != self.ignore_index) & (t >= 0) & (t < self.num_classes)
        p, t = p[keep], t[keep]
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= self.num_classes):
            raise ValueError(f"SegmentationIoU: predictions outside [0, {self.num_classes})")
        n = self.num_classes
        self.confmat += torch.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def compute(self) -> dict[str, Tensor]:
        cm = self.confmat.double()
        tp = cm.diag()
        union = cm.sum(0) + cm.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
        present = cm.sum(1) > 0
        miou = iou[present].mean() if bool(present.any()) else torch.tensor(float("nan"), dtype=torch.double)
        acc = tp.sum() / cm.sum().clamp_min(1)
        # ``confusion`` and ``assignment`` in HungarianMIoU's layout (prediction rows; each prediction is
        # its own class), so the same code draws either metric's confusion matrix
        assignment = torch.arange(self.num_classes, device=self.confmat.device)
        confusion = self.confmat.T.clone()
        return {"miou": miou, "acc": acc, "iou": iou, "confusion": confusion, "assignment": assignment}


class FinetuneModule(LightningModule):
    """Supervised fine-tuning with few labels (see the module docstring).

    Args:
        backbone: the point network (default: STSSL's MinkUNet, 4 inputs, 96-d out).
        init_checkpoint: a checkpoint of any unsup3d stage (P2C, inter-frame, ...) whose ``backbone.*``
            weights start the backbone; None trains from scratch.
        num_classes: classes of the labels (SemanticKITTI 19, SemanticPOSS 13).
        freeze_backbone: train the classifier only (linear evaluation).
        lr / momentum / weight_decay / nesterov: SGD, cosine-annealed to 0 per step (release: 0.1,
            0.9, 1e-4, Nesterov).
        class_names: names for per-class IoU logs (else the data module's ``class_names``).
    """

    def __init__(
        self,
        backbone: torch.nn.Module | None = None,
        init_checkpoint: str | None = None,
        num_classes: int = 19,
        freeze_backbone: bool = False,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        nesterov: bool = True,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = build_backbone(backbone, init_checkpoint, default_stssl_backbone)
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.classifier = torch.nn.Linear(self.backbone.out_channels, num_classes)
        self.metric = SegmentationIoU(num_classes)

    def forward(self, batch: dict[str, Any]) -> Tensor:
        """Per-point class logits (float32 under mixed precision: they feed cross-entropy and argmax)."""
        feats = self.backbone(batch["sparse"], batch["inverse"])
        with float32(feats.device):
            return self.classifier(to_float32(feats))

    def on_fit_start(self) -> None:
        """The classifier must have the data's classes (a mismatch would fail deep in cross-entropy)."""
        dm = self.trainer.datamodule
        have = getattr(dm, "num_classes", None)
        if have is not None and have != self.hparams.num_classes:
            raise ValueError(
                f"FinetuneModule: num_classes={self.hparams.num_classes}, "
                f"but {type(dm).__name__} has {have} classes"
            )

    def on_train_epoch_start(self) -> None:
        if self.hparams.freeze_backbone:  # BatchNorm statistics stay those of pre-training
            self.backbone.eval()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """Cross-entropy over the labelled points (-1 ignored)."""
        target = batch["segment"]
        logits = self(batch)
        if bool((target >= 0).any()):
            loss = F.cross_entropy(logits, target, ignore_index=-1)
        else:  # a crop with no labelled point: nothing to learn, but every parameter stays in the graph
            loss = logits.sum() * 0
        bs = len(batch["scene_index"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)  # the mean over processes
        with torch.no_grad():
            labelled = target >= 0
            acc = (logits.argmax(1)[labelled] == target[labelled]).float().mean() if labelled.any() else 0.0
        self.log("train/acc", acc, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Scores the batch; returns ``{"pred": class id per point}`` for media callbacks."""
        pred = self(batch).argmax(1)
        self.metric.update(pred, batch["segment"])
        return {"pred": pred.detach()}

    def _names(self) -> list[str] | None:
        names = self.hparams.class_names or getattr(self.trainer.datamodule, "class_names", None)
        return list(names) if names is not None and len(names) == self.hparams.num_classes else None

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = log_metric(self, self.metric, "val", self._names())

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.last_metrics = log_metric(self, self.metric, "test", self._names())

    def configure_optimizers(self) -> Any:
        """SGD with a per-step cosine schedule to 0 over the run (the release's ``LambdaLR``)."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.SGD(
            params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
