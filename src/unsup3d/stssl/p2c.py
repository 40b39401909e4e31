"""STSSL's first pre-training stage, point-to-cluster (P2C) self-supervision: STSSL Sec. 3.3, Eq. 2.

Two augmented views of one LiDAR frame (the data module's ``pairs`` with ``interval_max: 0``) go
through the online and the momentum target branch (:mod:`unsup3d.stssl.byol`); every voxel of a
DBSCAN cluster present in both views predicts the max-pooled target feature of its cluster in the
other view, under BYOL's ``2 - 2 cos``, symmetrically. Positive pairs only: points are pulled towards
their own cluster, never pushed from the others (the over-segmented clusters of one object may merge).
"""

from __future__ import annotations

from typing import Any

import torch

from unsup3d.stssl.byol import BYOLStage


class P2CModule(BYOLStage):
    """Point-to-cluster BYOL pre-training (see the module docstring).

    Args:
        backbone: the point network (default: STSSL's MinkUNet, 4 inputs: x, y, z, intensity; 96-d out).
        init_checkpoint: a checkpoint of any unsup3d stage to start the backbone from.
        projection_dim / projector_hidden / predictor_hidden: BYOL heads (release: 96 -> 128 -> 128
            projector, 128 -> 256 -> 128 predictor).
        target_momentum: the target branch's moving-average momentum (release: 0.999, constant).
        feature_dropout: dropout on voxel features before the heads (release: 0.4).
        min_cluster_points: a cluster takes part if it has this many voxels in both views (release: 20).
        lr / momentum / weight_decay / nesterov / min_lr_ratio: SGD with cosine annealing to
            ``lr * min_lr_ratio`` (release: 0.18, 0.9, Nesterov, 1/1000; the paper's text: wd 4e-4).
        val_num_classes: classes of the validation labels for the K-means probe (``val/miou``); None
            skips validation.
        val_points: labelled points each validation frame contributes to the probe.
        val_kmeans_iters: Lloyd iterations of the probe.
        seed: seeds the feature-dropout masks, drawn per sample from (seed, epoch, frame), so a resumed
            run draws what an uninterrupted one does.
    """

    def __init__(
        self,
        backbone: torch.nn.Module | None = None,
        init_checkpoint: str | None = None,
        projection_dim: int = 128,
        projector_hidden: int = 128,
        predictor_hidden: int = 256,
        target_momentum: float = 0.999,
        feature_dropout: float = 0.4,
        min_cluster_points: int = 20,
        lr: float = 0.18,
        momentum: float = 0.9,
        weight_decay: float = 4e-4,
        nesterov: bool = True,
        min_lr_ratio: float = 1e-3,
        val_num_classes: int | None = 19,
        val_points: int = 20000,
        val_kmeans_iters: int = 30,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone"])
        self.build(
            backbone, init_checkpoint, projection_dim, projector_hidden, predictor_hidden, val_num_classes
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """STSSL Eq. 2 on the two views of each frame of the batch."""
        interval = batch["interval"]
        if bool((interval != 0).any()):
            raise ValueError(
                "P2CModule needs two views of one frame: set the data module's interval_max to 0 "
                f"(got frame intervals {interval.tolist()})"
            )
        self.update_target()
        views = (batch["view0"], batch["view1"])
        online = tuple(self.online_features(v) for v in views)
        target = tuple(self.target_features(v) for v in views)
        loss, clusters = self.p2c_term(views, online, target)
        bs = len(interval)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)  # the mean over processes
        self.log("train/p2c_clusters", float(clusters), batch_size=bs)
        return loss
