"""PointDC's first stage, Cross-Modal Distillation (CMD): PointDC Sec. 3.3, Eq. 6-7.

The 2D teacher's features, lifted onto the points by the data module's feature pass
(:mod:`unsup3d.pointdc.feature_pass`, Eq. 3-5 and the max over views of Eq. 6), arrive per point as
``cmd_target`` / ``cmd_seen``. Training averages them over the seen points of each super-voxel of the
batch (Eq. 6, second half) and distils them into the point network: the mean of the distillation
head's outputs over the super-voxel's points is pulled onto that target (Eq. 7), both L2-normalised.

Validation logs ``val/loss`` where the validation scenes carry targets, and the Hungarian-matched
``val/miou`` / ``val/acc`` of spherical K-means (K = number of classes) on the super-voxel mean
features of the whole validation epoch: each point takes the cluster of its super-voxel.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from unsup3d.clustering import distributed as ddp
from unsup3d.clustering import kmeans
from unsup3d.metrics import HungarianMIoU
from unsup3d.models import DistillationHead
from unsup3d.pointdc.clustering_pass import descriptor_scale
from unsup3d.training.common import default_pointdc_backbone
from unsup3d.training.evaluation import forget_metric, log_metric
from unsup3d.vision.projection import superpoint_mean

#: points a ``HungarianMIoU.update`` call receives at most when the epoch's counts are replayed
_REPLAY_POINTS = 1 << 22


def cmd_loss(
    pred: Tensor,
    target: Tensor,
    seen: Tensor,
    superpoint: Tensor,
    num_superpoints: int,
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """PointDC Eq. 7 on one batch; returns ``(loss, valid)``.

    ``pred`` ``(P, D)`` head outputs, ``target`` ``(P, D)`` per-point teacher features, ``seen``
    ``(P,)``, ``superpoint`` ``(P,)`` batch-unique ids (-1: none, left out). Per super-voxel ``k``:
    ``p_k`` the mean of ``pred`` over its points, ``F_k`` the mean of ``target`` over its seen points
    (Eq. 6); the loss is the mean over super-voxels with a seen point (``valid``) of
    ``|| p_k / |p_k| - F_k / |F_k| ||^2`` (``normalize``, the release's variant), or of
    ``|| p_k - F_k ||^2`` (Eq. 7 as written). Without any, it is a zero that keeps the graph.
    """
    pred_mean, _ = superpoint_mean(pred.float(), superpoint, num_superpoints)
    target_mean, seen_count = superpoint_mean(target.float(), superpoint, num_superpoints, mask=seen)
    valid = seen_count > 0
    if not bool(valid.any()):
        return pred.sum() * 0.0, valid
    p, t = pred_mean[valid], target_mean[valid]
    if normalize:
        p, t = F.normalize(p, dim=1), F.normalize(t, dim=1)
    return (p - t).pow(2).sum(1).mean(), valid


def cluster_units(
    feats: Tensor,
    counts: Tensor,
    k: int,
    metric: HungarianMIoU,
    *,
    niter: int = 30,
    seed: int = 0,
    order: Tensor | None = None,
) -> Tensor:
    """Spherical K-means of evaluation units (super-voxel mean features ``(U, C)``) into ``k``
    clusters; every labelled point of a unit (``counts`` ``(U, num_classes)``: its points of each
    class) enters ``metric`` with its unit's cluster. Returns the clusters ``(U,)``. ``order`` (a key
    per unit, e.g. its scene) makes K-means independent of how units were spread over processes."""
    assign = kmeans(feats, k, niter=niter, spherical=True, seed=seed, order=order).assignments
    assign = assign.to(counts.device)
    rows, classes = counts.nonzero(as_tuple=True)
    weights = counts[rows, classes]
    cum = torch.cumsum(weights, 0)
    start = 0
    while start < len(rows):  # replay (cluster, class) pairs as points, a bounded number at a time
        limit = cum[start] - weights[start] + _REPLAY_POINTS
        stop = max(int(torch.searchsorted(cum, limit, right=True)), start + 1)
        w = weights[start:stop]
        metric.update(assign[rows[start:stop]].repeat_interleave(w), classes[start:stop].repeat_interleave(w))
        start = stop
    return assign


class CMDModule(LightningModule):
    """Cross-Modal Distillation (see the module docstring).

    Args:
        backbone: the point network (default: PointDC's Res16UNet, 6 input channels, 128-d output).
        target_dim: the teacher's feature dimension, the head's output (DINO ViT-S: 384; the
            release distils STEGO's 70). None reads it from the training scenes' ``cmd_target.npy``
            in ``setup`` (and records it in the hyperparameters, so checkpoints rebuild the head).
        num_classes: classes of the evaluation labels (ScanNet 20, S3DIS 13): K of the validation K-means.
        lr / weight_decay: Adam (release: 1e-3, 0).
        eval_features: what validation clusters: ``"backbone"`` features (what SVC starts from) or
            the ``"head"``'s teacher-space outputs.
        kmeans_iters: Lloyd iterations of the validation K-means.
        normalize: Eq. 7 between L2-normalised super-voxel means (the release's, for 2D teachers), or
            ``False``: Eq. 7 as written, the squared distance of the means themselves.
        target_key / seen_key: the per-point batch keys of the targets and of whether each point has
            one (None: every point has). The teacher-free recipe distils the hand-made descriptors:
            ``target_key: descriptor``, ``seen_key: null``, ``normalize: false``.
        target_weights: group weights of descriptor targets (``unsup3d.pointdc.geometric``), the
            same as SVC's ``descriptor_weights``; None leaves the targets as they are.
        seed: seed of the validation K-means.
        class_names: names for per-class IoU logs (else the data module's ``class_names``, or ids).
    """

    def __init__(
        self,
        backbone: torch.nn.Module | None = None,
        target_dim: int | None = None,
        num_classes: int = 20,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        eval_features: Literal["backbone", "head"] = "backbone",
        kmeans_iters: int = 30,
        normalize: bool = True,
        target_key: str = "cmd_target",
        seen_key: str | None = "cmd_seen",
        target_weights: dict[str, float] | None = None,
        seed: int = 0,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        if eval_features not in ("backbone", "head"):
            raise ValueError(f"CMDModule: eval_features must be 'backbone' or 'head', got {eval_features!r}")
        self.save_hyperparameters(ignore=["backbone"])
        self.scale = None if not target_weights else descriptor_scale(target_weights)
        self.backbone = backbone if backbone is not None else default_pointdc_backbone()
        self.head: DistillationHead | None = None
        if target_dim is not None:
            self.head = DistillationHead(self.backbone.out_channels, target_dim)
        self.metric = HungarianMIoU(num_classes)
        self._val_units: list[tuple[Tensor, Tensor]] = []

    # -- the head's size, from the data when not given ------------------------------------------------

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        dim = None
        if datamodule is not None and hasattr(datamodule, "scene_dirs"):
            from unsup3d.pointdc.feature_pass import target_dim

            try:
                dirs = datamodule.scene_dirs("train")
            except FileNotFoundError:
                dirs = []
            key = self.hparams.target_key
            dim = target_dim(dirs, key)
            if dim is not None and self.head is not None and dim != self.head.out_channels:
                raise ValueError(
                    f"{dirs[0].parent}: {key}.npy holds {dim}-d teacher features, but the model's "
                    f"target_dim is {self.head.out_channels}; set model.init_args.target_dim to {dim} "
                    "(or leave it out to read it from the data)"
                )
        if self.head is None:
            if dim is None:
                raise ValueError(
                    "CMDModule: target_dim is not set and no training scene holds cmd_target.npy to read it "
                    "from; set the data module's feature_targets (or model.init_args.target_dim)"
                )
            self.head = DistillationHead(self.backbone.out_channels, dim)
            self.hparams["target_dim"] = dim

    # -- training --------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Per-point backbone features ``(P, C)`` and head outputs ``(P, D)``."""
        feats = self.backbone(batch["sparse"], batch["inverse"])
        return feats, self.head(feats)

    def _has_targets(self, batch: dict[str, Any]) -> bool:
        seen = self.hparams.seen_key
        return self.hparams.target_key in batch and (seen is None or seen in batch)

    def _loss(self, batch: dict[str, Any], pred: Tensor) -> tuple[Tensor, Tensor]:
        key, seen_key = self.hparams.target_key, self.hparams.seen_key
        if not self._has_targets(batch):
            raise KeyError(
                f"CMD batch without {key} / {seen_key}: give the data module feature_targets (or "
                f"descriptors for target_key descriptor; or extra_keys over scenes that hold them)"
            )
        target = batch[key]
        if target.shape[1] != pred.shape[1]:
            raise ValueError(f"{key} has {target.shape[1]} dims, the head outputs {pred.shape[1]}")
        if self.scale is not None:
            target = target.float() * self.scale.to(target.device)
        seen = batch[seen_key].bool() if seen_key else torch.ones_like(batch["inverse"], dtype=torch.bool)
        return cmd_loss(
            pred,
            target,
            seen,
            batch["superpoint"],
            batch["num_superpoints"],
            normalize=self.hparams.normalize,
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        """PointDC Eq. 7 on the augmented batch."""
        _, pred = self(batch)
        loss, valid = self._loss(batch, pred)
        n = len(batch["scene_index"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n, sync_dist=True)  # the mean over processes
        self.log("train/supervised_superpoints", valid.float().mean(), batch_size=n)
        return loss

    # -- evaluation ------------------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._val_units = []

    def _eval_step(self, batch: dict[str, Any], prefix: str) -> dict[str, Tensor]:
        feats, pred = self(batch)
        if self._has_targets(batch):
            loss, _ = self._loss(batch, pred)
            self.log(f"{prefix}/loss", loss, batch_size=len(batch["scene_index"]), sync_dist=True)
        offset = sum(len(u[0]) for u in self._val_units)
        source = feats if self.hparams.eval_features == "backbone" else pred
        feats, counts, unit, scene = self._units(source, batch)
        self._val_units.append((feats, counts, scene))
        # clusters are known only after the epoch's K-means: media callbacks map these through
        # ``last_metrics["unit_clusters"]``
        return {"unit": unit + offset}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        """Collects the batch's units; returns ``{"unit": index per point}`` into the epoch's units."""
        return self._eval_step(batch, "val")

    def _units(self, feats: Tensor, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The batch's evaluation units: its super-voxels (mean features) and, one by one, the points
        without a super-voxel; with each unit's label counts ``(U, num_classes)``, each point's unit
        and each unit's scene (the key that orders K-means' input the same on 1 or N processes)."""
        c = self.hparams.num_classes
        sp = batch["superpoint"] if "superpoint" in batch else torch.full_like(batch["inverse"], -1)
        s = int(batch["num_superpoints"]) if "superpoint" in batch else 0
        means, _ = superpoint_mean(feats.float(), sp, s)
        loose = (sp < 0).nonzero(as_tuple=True)[0]
        unit = sp.clone()
        unit[loose] = s + torch.arange(len(loose), device=sp.device)
        label = batch["segment"]
        labelled = (label >= 0) & (label < c)
        counts = torch.bincount(unit[labelled] * c + label[labelled], minlength=(s + len(loose)) * c)
        sp_item = batch["superpoint_batch"][:s] if s else sp.new_zeros(0)
        item = torch.cat([sp_item.to(sp.device), batch["point_batch"][loose]])
        scene = batch["scene_index"].to(sp.device)[item.long()]
        return torch.cat([means, feats[loose].float()]).detach(), counts.view(-1, c), unit, scene

    def _evaluate(self, prefix: str) -> dict | None:
        """Spherical K-means of the epoch's units, then the Hungarian metric on their points; returns the
        metric's dict and ``unit_clusters``, the cluster of each unit."""
        if not self._val_units:
            forget_metric(self, prefix)
            return None
        feats = torch.cat([u[0] for u in self._val_units])
        counts = torch.cat([u[1] for u in self._val_units])
        scenes = torch.cat([u[2] for u in self._val_units])
        self._val_units = []
        total = len(feats)
        if ddp.is_distributed():  # every rank must call K-means with the same k
            total = int(ddp.all_gather_ints([total]).sum())
        k = min(self.hparams.num_classes, total)
        if k < 1:
            forget_metric(self, prefix)
            return None
        assign = cluster_units(
            feats, counts, k, self.metric,
            niter=self.hparams.kmeans_iters, seed=self.hparams.seed, order=scenes,
        )  # fmt: skip
        names = self.hparams.class_names or getattr(self.trainer.datamodule, "class_names", None)
        return {**log_metric(self, self.metric, prefix, names), "unit_clusters": assign}

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = self._evaluate("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        return self._eval_step(batch, "test")

    def on_test_epoch_start(self) -> None:
        self._val_units = []

    def on_test_epoch_end(self) -> None:
        self.last_metrics = self._evaluate("test")

    # -- optimisation ----------------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
