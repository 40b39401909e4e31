"""The linear probe of PointDC's Table 1: a frozen backbone, one linear layer trained with labels.

It measures how linearly separable the learned features are: mIoU and accuracy against the labels
(no Hungarian matching: the probe is trained on the classes themselves).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from unsup3d.training.common import build_backbone, default_pointdc_backbone
from unsup3d.training.evaluation import forget_logged
from unsup3d.training.precision import float32, to_float32


class LinearProbeModule(LightningModule):
    """Frozen backbone + ``Linear(out_channels, num_classes)`` trained with cross-entropy.

    Args:
        backbone: the point network (default: PointDC's Res16UNet).
        init_checkpoint: checkpoint of any stage whose ``backbone.*`` weights are probed.
        num_classes: label classes; points labelled ``ignore_index`` are left out.
        lr / weight_decay: Adam on the linear layer.
        class_names: names for per-class IoU logs (else the data module's ``class_names``).
    """

    def __init__(
        self,
        backbone: torch.nn.Module | None = None,
        init_checkpoint: str | None = None,
        num_classes: int = 20,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        ignore_index: int = -1,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = build_backbone(backbone, init_checkpoint, default_pointdc_backbone)
        self.backbone.requires_grad_(False)
        self.linear = torch.nn.Linear(self.backbone.out_channels, num_classes)
        metric_args = {"num_classes": num_classes, "ignore_index": ignore_index}
        self.val_iou = MulticlassJaccardIndex(average="none", **metric_args)
        self.val_acc = MulticlassAccuracy(average="micro", **metric_args)

    def train(self, mode: bool = True) -> LinearProbeModule:
        super().train(mode)
        self.backbone.eval()  # frozen: batch-norm statistics stay those of pre-training
        return self

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            feats = self.backbone(batch["sparse"], batch["inverse"])
        with float32(feats.device):  # logits feed cross-entropy and argmax: float32 under mixed precision
            return self.linear(to_float32(feats))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch), batch["segment"], ignore_index=self.hparams.ignore_index)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["scene_index"]), sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Scores the batch; returns ``{"pred": class id per point}`` for media callbacks."""
        pred = self(batch).argmax(1)
        self.val_iou.update(pred, batch["segment"])
        self.val_acc.update(pred, batch["segment"])
        return {"pred": pred.detach()}

    def on_validation_epoch_end(self) -> None:
        iou = self.val_iou.compute()
        present = self.val_iou.confmat.sum(0) + self.val_iou.confmat.sum(1) > 0  # union non-empty
        miou = iou[present].mean() if present.any() else torch.tensor(float("nan"))
        acc = self.val_acc.compute()
        self.log("val/miou", miou)
        self.log("val/acc", acc)
        # HungarianMIoU's layout (prediction rows, identity assignment) for media callbacks
        n = self.hparams.num_classes
        self.last_metrics = {
            "miou": miou, "acc": acc, "iou": torch.where(present, iou, torch.full_like(iou, float("nan"))),
            "confusion": self.val_iou.confmat.T.clone(), "assignment": torch.arange(n, device=iou.device),
        }  # fmt: skip
        names = self.hparams.class_names or getattr(self.trainer.datamodule, "class_names", None)
        for c in range(n):
            key = f"val/iou/{names[c] if names else c}"
            if present[c]:
                self.log(key, iou[c])
            else:
                forget_logged(self, key)  # an earlier validation's value of a class absent now
        self.val_iou.reset()
        self.val_acc.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.linear.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
