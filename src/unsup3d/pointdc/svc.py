"""PointDC's second stage, Super-Voxel Clustering (SVC): PointDC Eq. 8-12.

Every ``recluster_every`` epochs the training scenes are clustered (super-voxel mean features,
spherical K-means, Eq. 8) and turned into pseudo labels (Eq. 8 per super-voxel; Eq. 9 per point;
Eq. 10 pooled per super-voxel). The network is trained with cross-entropy (Eq. 11) on augmented
scenes (Eq. 12: the data module's invariant and equivariant augmentations; labels follow the points)
through a cosine classifier: learnable during ``warmup_epochs`` (the release's warm-up), then the
non-parametric classifier of Eq. 9, fixed to the centroids. Each ingredient can be switched off, so
each row of the paper's Table 4 is a config. State needed to resume (centroids, labels, the epoch of
the last clustering) is in the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn

from unsup3d.metrics import HungarianMIoU
from unsup3d.models import CosineClassifier
from unsup3d.pointdc.clustering_pass import PseudoLabels, cluster_pass, descriptor_scale, point_scores
from unsup3d.training.common import build_backbone, default_pointdc_backbone, rank_share
from unsup3d.training.evaluation import log_metric, merge_clusters, pool_logits
from unsup3d.training.precision import float32, to_float32


def svc_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PointDC Eq. 11 (Eq. 12 when ``logits`` come from the augmented scene): the mean over labelled
    points of the cross-entropy of ``logits`` ``(N, K)`` (the classifier's ``f (x) mu``) against the
    pseudo labels ``target`` ``(N,)`` (``-1``: no label, left out; every point unlabelled gives 0).
    The paper's outer squared norm of a scalar changes no minimiser, so it is left out, as the release
    does."""
    # sum / count rather than a check for labels: no host sync a step, and 0 (graph kept) with none
    labelled = (target >= 0).sum().clamp_min(1)
    return F.cross_entropy(logits, target, ignore_index=-1, reduction="sum") / labelled


class SVCModule(LightningModule):
    """Super-Voxel Clustering (see the module docstring).

    Args:
        backbone: the point network (default: PointDC's Res16UNet, 6 input channels).
        init_checkpoint: a CMD (or any stage's) checkpoint to start the backbone from; None trains from
            the random initialisation (the paper's "random clustering" baseline when not trained).
        num_classes: classes of the evaluation labels (ScanNet 20, S3DIS 13).
        num_clusters: K-means clusters (default ``num_classes``); more is over-clustering.
        merge_clusters: at evaluation, merge the clusters into ``num_classes`` groups (over-clustering).
        recluster_every: epochs between clusterings (release: 5).
        warmup_epochs: epochs with a learnable cosine classifier before the non-parametric one (release: 30).
        nonparametric: Eq. 9: per-point labels from the centroids and a classifier fixed to them.
        superpoint_pooling: Eq. 10: pool the soft labels over each super-voxel.
        test_superpoint_pooling: pool logits over super-voxels at evaluation (the release does).
        lr / momentum / weight_decay / lr_step / lr_gamma: SGD with StepLR (release: 3e-2, 0.9, 1e-4, 5, 0.8).
        kmeans_iters: Lloyd iterations (release: 80).
        kmeans_restarts: K-means runs per clustering, from different initialisations; the one of
            lowest inertia is kept (release: faiss's default, 1).
        fixed_normalize: after warm-up, L2-normalise the point features before the fixed classifier
            (logits ``cos(f, mu) / temperature``). The release does not (``get_fixclassifier``: logits
            ``|f| cos(f, mu)``), the default; with normalised features and ``temperature`` 1 a 20-way
            softmax cannot exceed 0.28, so the loss never falls under 1.27.
        temperature: tau of both classifiers (release: 1).
        descriptor_weights: the teacher-free path (after GrowSP): Eq. 8 clusters the joint features
            ``[S_vox(f) / |S_vox(f)|, S_vox(d) * w]`` of the network's features and the points'
            hand-made descriptors (the data module's ``descriptors``), weighted per group
            (:data:`unsup3d.pointdc.geometric.DESCRIPTOR_GROUPS`, e.g. ``{color: 0.5, height: 1}``),
            by Euclidean K-means; Eq. 9 scores points in that space. The classifier takes the network
            part of the centroids, so evaluation needs only the network. None: Eq. 8 as written.
        eval_descriptors: with ``descriptor_weights``, evaluate by the joint scores (the scene's own
            descriptors beside the network's features, against the joint centroids) instead of the
            classifier; the data module must give the validation scenes descriptors too.
        class_names: names for per-class IoU logs (else the data module's ``class_names``, or ids).
        feature_cache_mb: the clustering pass keeps this rank's point features between its two passes
            where they fit in this many MB (one forward pass over the training set instead of two); 0
            always recomputes them (:mod:`unsup3d.pointdc.clustering_pass`).
    """

    def __init__(
        self,
        backbone: torch.nn.Module | None = None,
        init_checkpoint: str | None = None,
        num_classes: int = 20,
        num_clusters: int | None = None,
        merge_clusters: bool = False,
        recluster_every: int = 5,
        warmup_epochs: int = 30,
        nonparametric: bool = True,
        superpoint_pooling: bool = True,
        test_superpoint_pooling: bool = True,
        lr: float = 3e-2,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        lr_step: int = 5,
        lr_gamma: float = 0.8,
        kmeans_iters: int = 80,
        kmeans_restarts: int = 1,
        fixed_normalize: bool = False,
        temperature: float = 1.0,
        descriptor_weights: dict[str, float] | None = None,
        eval_descriptors: bool = False,
        seed: int = 0,
        class_names: list[str] | None = None,
        feature_cache_mb: float = 512.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = build_backbone(backbone, init_checkpoint, default_pointdc_backbone)
        self.num_clusters = num_clusters or num_classes
        dim = self.backbone.out_channels
        self.classifier = CosineClassifier(dim, self.num_clusters, learnable=True, temperature=temperature)
        self.scale = None if not descriptor_weights else descriptor_scale(descriptor_weights)
        joint = dim + (0 if self.scale is None else len(self.scale))
        self.register_buffer("centroids", torch.zeros(self.num_clusters, joint))
        self.register_buffer("last_cluster_epoch", torch.tensor(-1))
        self.labels = PseudoLabels({}, {})
        self._checkpoint_epoch: int | None = None  # the loaded checkpoint's epoch, for scoring outside fit
        self._groups: torch.Tensor | None = None  # cluster -> class group when merging over-clusters
        self.metric = HungarianMIoU(num_classes, self._eval_clusters())

    def _eval_clusters(self) -> int:
        return self.hparams.num_classes if self.hparams.merge_clusters else self.num_clusters

    # -- clustering ----------------------------------------------------------------------------------

    def _due(self, epoch: int) -> bool:
        last = int(self.last_cluster_epoch)
        return last < 0 or (epoch > last and epoch % self.hparams.recluster_every == 0)

    def recluster(self, epoch: int) -> None:
        """Cluster the training set with the current network; reset the classifier to the centroids."""
        centroids, labels = cluster_pass(
            self.backbone,
            lambda: rank_share(self),
            self.num_clusters,
            self.device,
            nonparametric=self.hparams.nonparametric,
            superpoint_pooling=self.hparams.superpoint_pooling,
            niter=self.hparams.kmeans_iters,
            seed=self.hparams.seed + epoch,
            scale=self.scale,
            feature_cache_mb=self.hparams.feature_cache_mb,
            restarts=self.hparams.kmeans_restarts,
        )
        self.centroids.copy_(centroids.to(self.centroids))
        self.labels = labels
        self._groups = None
        self.last_cluster_epoch.fill_(epoch)
        self._set_classifier(epoch)

    def _set_classifier(self, epoch: int, reset: bool = True) -> None:
        """Learnable during warm-up (or always, without Eq. 9); afterwards fixed to the centroids."""
        fixed = self._fixed(epoch)
        if reset or fixed:
            self.classifier.set_centroids(self.centroids[:, : self.backbone.out_channels])
        self.classifier.weight.requires_grad_(not fixed)

    def on_fit_start(self) -> None:
        if self._due(self.current_epoch):
            self.recluster(self.current_epoch)
        else:  # resumed: the weights came from the checkpoint, only the frozen flag must be restored
            self._set_classifier(self.current_epoch, reset=False)

    def on_validation_start(self) -> None:
        if int(self.last_cluster_epoch) < 0:  # evaluation alone (e.g. the CMD-only row): cluster first
            self.recluster(self.current_epoch)

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        if self._due(epoch):
            self.recluster(epoch)
        else:  # at the end of warm-up the classifier becomes the fixed centroids
            self._set_classifier(epoch, reset=False)

    # -- training ------------------------------------------------------------------------------------

    def _fixed(self, epoch: int) -> bool:
        """Whether the classifier is the fixed, non-parametric one (Eq. 9) in ``epoch``."""
        return self.hparams.nonparametric and epoch >= self.hparams.warmup_epochs

    def scoring_epoch(self) -> int:
        """The epoch the classifier scores as: the fit's own; outside fit (``validate``, ``test``,
        ``predict``, ``unsup3d evaluate``, where Lightning restores no fit loop and ``current_epoch`` reads
        0), the loaded checkpoint's, so that a checkpoint past warm-up is scored as its own validation
        in training scored it (with none loaded, ``current_epoch``)."""
        fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
        if fitting or self._checkpoint_epoch is None:
            return self.current_epoch
        return self._checkpoint_epoch

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Per-point logits against the clusters."""
        # the release's fixed classifier scores unnormalised features (|f| cos), the warm-up's a cosine;
        # a function of the epoch alone, so a run resumed mid-epoch scores as the uninterrupted one
        fixed = self._fixed(self.scoring_epoch())
        self.classifier.normalize_input = not fixed or self.hparams.fixed_normalize
        feats = self.backbone(batch["sparse"], batch["inverse"])
        with float32(feats.device):  # logits feed cross-entropy, argmax and pooling: float32 under bf16
            return self.classifier(to_float32(feats))

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """PointDC Eq. 11-12: cross-entropy of the augmented scene against the clean-scene labels."""
        target = self.labels.lookup(
            batch["scene_index"], batch["point_batch"], batch["superpoint_id"], batch["point_index"]
        ).long()
        logits = self(batch)
        loss = svc_loss(logits, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["scene_index"]), sync_dist=True)
        self.log("train/labelled", (target >= 0).float().mean(), batch_size=len(batch["scene_index"]))
        return loss

    # -- evaluation ----------------------------------------------------------------------------------

    def eval_logits(self, batch: dict[str, Any]) -> torch.Tensor:
        """Per-point scores at evaluation: the classifier's, or with ``eval_descriptors`` the joint
        scores of Eq. 9 (network features and the scene's own descriptors against the centroids)."""
        if self.scale is None or not self.hparams.eval_descriptors:
            return self(batch)
        feats = self.backbone(batch["sparse"], batch["inverse"])
        with float32(feats.device):  # joint scores differ by little: float32 under bf16
            f = F.normalize(to_float32(feats), dim=1)
            d = batch["descriptor"].float() * self.scale.to(f.device)
            return point_scores(f, self.centroids.float(), d)

    def predict_clusters(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cluster id of every point (super-voxel pooled and merged as configured)."""
        logits = self.eval_logits(batch)
        if self.hparams.test_superpoint_pooling and "superpoint" in batch:
            logits = pool_logits(logits, batch["superpoint"], batch["num_superpoints"])
        pred = logits.argmax(1)
        if self.hparams.merge_clusters and self.num_clusters > self.hparams.num_classes:
            if self._groups is None:  # one K-means of the centroids per evaluation, not per batch
                # joint centroids (teacher-free path) carry the descriptors too and were made by
                # Euclidean K-means, so they merge by it; else the classifier's, by cosine
                joint = self.scale is not None
                weights = self.centroids if joint else self.classifier.weight.detach()
                self._groups = merge_clusters(weights, self.hparams.num_classes, spherical=not joint)
            pred = self._groups.to(pred.device)[pred]
        return pred

    def on_validation_epoch_start(self) -> None:
        self._groups = None  # the classifier may have moved since the last evaluation

    def on_test_epoch_start(self) -> None:
        self._groups = None

    def _class_names(self) -> list[str] | None:
        return self.hparams.class_names or getattr(self.trainer.datamodule, "class_names", None)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        """Scores the batch; returns ``{"pred": cluster id per point}`` for media callbacks."""
        pred = self.predict_clusters(batch)
        self.metric.update(pred, batch["segment"])
        return {"pred": pred.detach()}

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = log_metric(self, self.metric, "val", self._class_names())

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        return self.validation_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self.last_metrics = log_metric(self, self.metric, "test", self._class_names())

    # -- optimisation and checkpoints ----------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(
            self.parameters(),
            lr=self.hparams.lr,
            momentum=self.hparams.momentum,
            weight_decay=self.hparams.weight_decay,
        )
        sched = torch.optim.lr_scheduler.StepLR(
            opt, step_size=self.hparams.lr_step, gamma=self.hparams.lr_gamma
        )
        return {"optimizer": opt, "lr_scheduler": sched}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["svc_pseudo_labels"] = self.labels.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.labels = PseudoLabels.from_state(checkpoint.get("svc_pseudo_labels", {}))
        self._checkpoint_epoch = int(checkpoint.get("epoch", 0))
