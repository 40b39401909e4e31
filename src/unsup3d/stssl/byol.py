"""BYOL machinery shared by STSSL's pre-training stages (STSSL Sec. 3.2-3.3, Eq. 2-4).

An online branch (backbone, projector, predictor) learns to predict a momentum *target* branch
(backbone and projector, ``target = m * target + (1 - m) * online`` after each step, m = 0.999) under
BYOL's normalised MSE, ``2 - 2 cos`` (:func:`byol_loss`). What the paper leaves out follows the
authors' release (``models/byol_pix.py``, ``models/blocks.py``):

- everything is per *voxel* (the release keeps one point a voxel); a voxel takes the largest cluster
  (or track) id of its points, so a voxel with a cluster point and ground belongs to the cluster;
- before a head, voxel features go through dropout (p = 0.4), then, for a cluster-level feature, a
  max pool over the cluster's voxels; the projector maps the 96-d pooled or per-voxel features.
  The dropout masks are drawn per sample from (seed, epoch, sample, site) (:func:`sample_dropout`),
  never from the global RNG, so a run resumed from any checkpoint, or split over N processes,
  draws the masks an uninterrupted single-process run draws;
- only clusters present in both views with at least 20 voxels in each take part (SegContrast's
  ``overlap_clusters``, which the release reuses); a term with fewer than two such clusters in the
  batch is zero (BatchNorm needs two rows; the release catches the error and uses 0);
- the losses are symmetric: each view's online output against the other view's target.

:class:`BYOLStage` holds the two branches, the momentum update, SGD with cosine annealing (the
release: 0.18, Nesterov, to lr / 1000) and a label-free validation probe: spherical K-means of
the validation points' features into ``val_num_classes`` clusters, scored by Hungarian-matched
``val/miou`` and ``val/acc``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from unsup3d.metrics import HungarianMIoU
from unsup3d.models import PredictionHead, ProjectionHead
from unsup3d.training.common import build_backbone, default_stssl_backbone
from unsup3d.training.evaluation import forget_metric, log_metric
from unsup3d.training.precision import float32, to_float32

__all__ = [
    "BYOLStage",
    "byol_loss",
    "cluster_keys",
    "max_pool",
    "momentum_update",
    "normalized_mse",
    "p2c_loss",
    "sample_dropout",
    "shared_groups",
]

_KEY_STRIDE = 1 << 32  # batch item * stride + id: unique per (item, id) for any int32 id
# A dropout site is (loss term, view's place in the term, branch): each draws its own masks.
_P2C, _GROUP = 0, 1
_ONLINE, _TARGET = 0, 1


def normalized_mse(pred: Tensor, target: Tensor) -> Tensor:
    """BYOL's loss per row: ``|| p/|p| - z/|z| ||^2 = 2 - 2 cos(p, z)``, in float32 (under bf16 the
    cosine would keep 8 bits, and the loss is its small difference from 1)."""
    with float32(pred.device):
        return 2 - 2 * F.cosine_similarity(to_float32(pred), to_float32(target), dim=-1, eps=1e-8)


def byol_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean of :func:`normalized_mse` over rows; no gradient reaches ``target``."""
    return normalized_mse(pred, target.detach()).mean()


def p2c_loss(point_pred: Tensor, point_group: Tensor, cluster_target: Tensor) -> Tensor:
    """STSSL Eq. 2, one direction: each point's online prediction against its cluster's target
    feature (``cluster_target[point_group]``), averaged over points."""
    return byol_loss(point_pred, cluster_target[point_group])


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """``target = m * target + (1 - m) * online`` for every parameter (BYOL's exponential moving average)."""
    for p_online, p_target in zip(online.parameters(), target.parameters(), strict=True):
        p_target.mul_(m).add_(p_online.detach(), alpha=1 - m)


def _generator_seed(key: Sequence[int]) -> int:
    """A 63-bit seed mixed from a tuple of integers (numpy's SeedSequence: nearby tuples, far seeds)."""
    lo, hi = np.random.SeedSequence([int(k) for k in key]).generate_state(2)
    return (int(hi) << 31 ^ int(lo)) & ((1 << 63) - 1)


def sample_dropout(x: Tensor, p: float, item: Tensor, keys: Sequence[Sequence[int]]) -> Tensor:
    """Dropout (zero with probability ``p``, the rest scaled by ``1 / (1 - p)``, as ``F.dropout``) whose
    mask on the rows of batch item ``b`` (``item == b``, in row order) is drawn from a generator seeded
    by ``keys[b]``: a pure function of the key (e.g. seed, epoch, sample, site), not of the global RNG,
    the other items of the batch or the process."""
    if p <= 0:
        return x
    if p >= 1:
        return x * 0
    keep = torch.zeros(x.shape, dtype=torch.bool, device=x.device)
    for b, key in enumerate(keys):
        rows = torch.nonzero(item == b).squeeze(1)
        if len(rows):
            g = torch.Generator(device=x.device).manual_seed(_generator_seed(key))
            keep[rows] = torch.rand((len(rows), *x.shape[1:]), generator=g, device=x.device) >= p
    return x * keep / (1 - p)


def cluster_keys(view: dict[str, Any], key: str) -> Tensor:
    """Per voxel of a batch, a key unique to (batch item, id of ``view[key]``), -1 for none.

    A voxel takes the largest id among its points (points hold -1 for ground and noise)."""
    ids, inverse = view[key].long(), view["inverse"]
    coords = view["sparse"].C
    vox = torch.full((len(coords),), -1, dtype=torch.long, device=ids.device)
    vox.scatter_reduce_(0, inverse, ids, reduce="amax")
    return torch.where(vox >= 0, coords[:, 0].long() * _KEY_STRIDE + vox, -1)


def shared_groups(key_a: Tensor, key_b: Tensor, min_size: int = 20) -> tuple[Tensor, Tensor, int]:
    """Groups present in both views with at least ``min_size`` members in each: per member of each view,
    its group index in ``[0, G)`` (-1 for none), and ``G``. Groups are numbered in key order."""
    va, vb = key_a >= 0, key_b >= 0
    keys, inv = torch.unique(torch.cat([key_a[va], key_b[vb]]), return_inverse=True)
    na = int(va.sum())
    count_a = torch.bincount(inv[:na], minlength=len(keys))
    count_b = torch.bincount(inv[na:], minlength=len(keys))
    keep = (count_a >= min_size) & (count_b >= min_size)
    index = torch.cumsum(keep.long(), 0) - 1
    index = torch.where(keep, index, -1)
    group_a = torch.full_like(key_a, -1)
    group_b = torch.full_like(key_b, -1)
    group_a[va] = index[inv[:na]]
    group_b[vb] = index[inv[na:]]
    return group_a, group_b, int(keep.sum())


def max_pool(features: Tensor, group: Tensor, num_groups: int) -> Tensor:
    """Max of the rows of ``features`` in each group ``0..num_groups-1`` (rows with group -1 ignored)."""
    member = group >= 0
    out = features.new_zeros(num_groups, features.shape[1])
    index = group[member][:, None].expand(-1, features.shape[1])
    return out.scatter_reduce(0, index, features[member], reduce="amax", include_self=False)


class BYOLStage(LightningModule):
    """Base of the STSSL pre-training stages (:class:`~unsup3d.stssl.p2c.P2CModule`,
    :class:`~unsup3d.stssl.interframe.InterFrameModule`).

    Subclasses call :meth:`build` from their ``__init__`` (after ``save_hyperparameters``) with the
    hyper-parameters named here, and implement ``training_step`` from :meth:`p2c_term` and
    :meth:`cluster_term`.
    """

    def build(
        self,
        backbone: nn.Module | None,
        init_checkpoint: str | None,
        projection_dim: int = 128,
        projector_hidden: int = 128,
        predictor_hidden: int = 256,
        val_num_classes: int | None = None,
    ) -> None:
        self.backbone = build_backbone(backbone, init_checkpoint, default_stssl_backbone)
        dim = self.backbone.out_channels
        self.projector = ProjectionHead(dim, projector_hidden, projection_dim)
        self.predictor = PredictionHead(projection_dim, predictor_hidden, projection_dim)
        # The target starts as a copy of the online branch and only ever moves by momentum.
        self.target_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.target_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.metric = HungarianMIoU(val_num_classes) if val_num_classes else None
        self._val: list[tuple[Tensor, Tensor, Tensor]] = []  # features, labels, frame of each row

    # -- branches ------------------------------------------------------------------------------------

    def online_features(self, view: dict[str, Any]) -> Tensor:
        """Voxel features of the online backbone, ``(V, C)`` in ``view["sparse"]``'s voxel order."""
        return self.backbone(view["sparse"])

    @torch.no_grad()
    def target_features(self, view: dict[str, Any]) -> Tensor:
        return self.target_backbone(view["sparse"])

    def _drop(self, x: Tensor, view: dict[str, Any], site: tuple[int, ...]) -> Tensor:
        """Feature dropout on the voxel features ``x`` of ``view``: each sample's mask is a function of
        (seed, epoch, sample, ``site``), ``site`` naming the loss term, the view's place in it and the
        branch, so masks are reproducible on resume and do not depend on the batch's other samples."""
        p = self.hparams.feature_dropout
        if not self.training or p <= 0:
            return x
        head = (self.hparams.get("seed", 0), self.current_epoch)  # checkpoints from before `seed`
        keys = [(*head, int(s), *site) for s in view["scene_index"].tolist()]
        return sample_dropout(x, p, view["sparse"].C[:, 0].to(x.device), keys)

    def update_target(self) -> None:
        """The momentum step of the target branch (backbone and projector)."""
        m = self.hparams.target_momentum
        momentum_update(self.backbone, self.target_backbone, m)
        momentum_update(self.projector, self.target_projector, m)

    def zero_loss(self) -> Tensor:
        """A zero that every trainable parameter reaches (a batch without usable clusters, under DDP)."""
        return sum(p.sum() * 0 for p in self.parameters() if p.requires_grad)

    # -- losses --------------------------------------------------------------------------------------

    def p2c_term(
        self, views: tuple[dict, dict], online: tuple[Tensor, Tensor], target: tuple[Tensor, Tensor]
    ) -> tuple[Tensor, int]:
        """STSSL Eq. 2, symmetric: each view's per-voxel online predictions against the max-pooled,
        projected target features of the same cluster in the other view. Returns (loss, clusters)."""
        ga, gb, n = shared_groups(
            cluster_keys(views[0], "cluster"),
            cluster_keys(views[1], "cluster"),
            self.hparams.min_cluster_points,
        )
        if n < 2:
            return self.zero_loss(), n
        groups = (ga, gb)
        preds, targets = [], []
        for pos, (view, f_on, f_tg, g) in enumerate(zip(views, online, target, groups)):
            m = g >= 0
            on = self._drop(f_on, view, (_P2C, pos, _ONLINE))[m]
            preds.append(self.predictor(self.projector(on)))
            with torch.no_grad():
                tg = self._drop(f_tg, view, (_P2C, pos, _TARGET))[m]
                targets.append(self.target_projector(max_pool(tg, g[m], n)))
        loss = p2c_loss(preds[0], ga[ga >= 0], targets[1]) + p2c_loss(preds[1], gb[gb >= 0], targets[0])
        return loss, n

    def cluster_term(
        self, views: tuple[dict, dict], online: tuple[Tensor, Tensor], target: tuple[Tensor, Tensor], key: str
    ) -> tuple[Tensor, int]:
        """STSSL Eq. 3, symmetric: max-pooled online predictions of each group (``key``: ``track``) in
        one view against the pooled target features of the same group in the other. Returns (loss,
        groups)."""
        ga, gb, n = shared_groups(
            cluster_keys(views[0], key), cluster_keys(views[1], key), self.hparams.min_cluster_points
        )
        if n < 2:
            return self.zero_loss(), n
        preds, targets = [], []
        for pos, (view, f_on, f_tg, g) in enumerate(zip(views, online, target, (ga, gb))):
            m = g >= 0
            on = self._drop(f_on, view, (_GROUP, pos, _ONLINE))[m]
            preds.append(self.predictor(self.projector(max_pool(on, g[m], n))))
            with torch.no_grad():
                tg = self._drop(f_tg, view, (_GROUP, pos, _TARGET))[m]
                targets.append(self.target_projector(max_pool(tg, g[m], n)))
        return byol_loss(preds[0], targets[1]) + byol_loss(preds[1], targets[0]), n

    # -- validation: K-means probe -------------------------------------------------------------------

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """Collect L2-normalised features of up to ``val_points`` labelled points of each frame.

        The points of a frame are drawn by a generator seeded with the frame's index, so the probe
        sees the same points whatever the batch size or the number of processes."""
        if self.metric is None:
            return
        picks, frames = [], []
        for b, frame in enumerate(batch["scene_index"].tolist()):
            labelled = torch.nonzero((batch["segment"] >= 0) & (batch["point_batch"] == b)).squeeze(1)
            g = torch.Generator().manual_seed(frame)
            order = torch.randperm(len(labelled), generator=g)[: self.hparams.val_points]
            picks.append(labelled[order.to(labelled.device)])
            frames.append(torch.full((len(order),), frame, dtype=torch.long))
        pick = torch.cat(picks)
        feats = self.backbone(batch["sparse"], batch["inverse"])[pick]
        self._val.append(
            (F.normalize(feats.float(), dim=1).cpu(), batch["segment"][pick].cpu(), torch.cat(frames))
        )

    def on_validation_epoch_end(self) -> None:
        """Spherical K-means of the collected features (all ranks together), Hungarian-matched mIoU."""
        if self.metric is None:
            return
        from unsup3d.clustering import kmeans

        dim = self.backbone.out_channels
        none = [torch.zeros(0, dtype=torch.long)]
        feats = torch.cat([torch.zeros(0, dim)] + [f for f, _, _ in self._val])
        labels = torch.cat(none + [y for _, y, _ in self._val])
        frames = torch.cat(none + [i for _, _, i in self._val])
        self._val = []
        k = self.hparams.val_num_classes
        total = int(
            self.trainer.strategy.reduce(torch.tensor(float(len(feats)), device=self.device), reduce_op="sum")
        )
        if total < k:  # e.g. validation scans without labels: every rank skips alike
            warnings.warn(
                f"K-means probe skipped: {total} labelled validation points for {k} clusters", stacklevel=2
            )
            self.last_metrics = None  # no table or confusion of an earlier epoch drawn as this one's
            forget_metric(self, "val")
            return
        # Rows in frame order: the K-means of 1 and N processes (and of any batch size) is one.
        result = kmeans(feats, k, spherical=True, niter=self.hparams.val_kmeans_iters, seed=0, order=frames)
        self.metric.update(result.assignments.to(self.device), labels.to(self.device))
        names = getattr(self.trainer.datamodule, "class_names", None) if self._trainer else None
        self.last_metrics = log_metric(self, self.metric, "val", names)  # for ValidationMedia's table

    # -- optimisation --------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        """SGD with Nesterov momentum; cosine annealing to ``lr * min_lr_ratio`` over the run's epochs
        (per step when the run is bounded by ``max_steps`` only)."""
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.SGD(
            params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov
        )
        epochs = self.trainer.max_epochs if self._trainer is not None else None
        per_epoch = epochs is not None and epochs > 0
        total = epochs if per_epoch else max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=hp.lr * hp.min_lr_ratio)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "epoch" if per_epoch else "step"},
        }
