"""STSSL's second pre-training stage, cluster-level inter-frame self-supervision: STSSL Sec. 3.3, Eq. 3-4.

Starts from a P2C checkpoint (backbone only; the heads are fresh, as the release re-initialises them).
Each sample is frame ``t`` and frame ``t + k`` of one sequence, ``k`` drawn from an interval that
grows 0 -> 5 (+1 every 7 epochs, the data module's schedule), plus a second view of frame ``t``.
Clusters linked by unsupervised tracking (Eq. 1; the data module's track cache) are positive pairs:
the max-pooled online prediction of a track's cluster in one frame is pulled towards the pooled target
feature of the same track in the other frame (Eq. 3), symmetrically, and the total (Eq. 4) adds the
point-to-cluster term of Eq. 2 on the two views of frame ``t``:
``loss = w_inter(epoch) * L_inter + w_p2c * L_p2c`` (release: 0.8 and 0.2, i.e. the paper's lambda = 4
on L_inter with both scaled by 0.2; ``inter_warmup_epochs`` holds ``w_inter`` at 0 first, the paper's
"lambda = 0 in the early stages").

Tracking with features (``track_features``): at the start of the stage the training frames are
re-tracked with the backbone's features (Eq. 1, ``alpha`` of the data module), i.e. the P2C model's,
as the release's ``track_model.py`` does; ``retrack_every`` repeats it. Without it the location-only
tracks of ``prepare_data`` are used (the paper's STSSL-n). The track version in use is in the
checkpoint, so a resumed run trains on the same pairs. The data module's ``track_cluster_features``
picks the cluster features of ``D_feat``: mean point features, or the release's max-pooled features
through the projection head, which is P2C's (from ``init_checkpoint``) for the first tracking, as
the release's ``track_model.py`` loads it, and this stage's own afterwards.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch

from unsup3d.stssl.byol import BYOLStage
from unsup3d.training.common import load_backbone


class InterFrameModule(BYOLStage):
    """Inter-frame BYOL pre-training on tracked clusters (see the module docstring).

    Args:
        backbone / init_checkpoint / projection_dim / projector_hidden / predictor_hidden /
        target_momentum / feature_dropout / min_cluster_points / lr / momentum / weight_decay /
        nesterov / min_lr_ratio / val_num_classes / val_points / val_kmeans_iters / seed: as
            :class:`~unsup3d.stssl.p2c.P2CModule`; ``init_checkpoint`` is normally P2C's.
        inter_weight / p2c_weight: the weights of Eq. 4's terms (release: 0.8, 0.2).
        inter_warmup_epochs: epochs with ``inter_weight`` 0 (the lambda schedule; release: 0).
        track_features: re-track with the backbone's features at the start (Eq. 1 with alpha).
        retrack_every: also re-track every this many epochs (0: only at the start).
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
        inter_weight: float = 0.8,
        p2c_weight: float = 0.2,
        inter_warmup_epochs: int = 0,
        track_features: bool = True,
        retrack_every: int = 0,
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
        self.register_buffer("last_track_epoch", torch.tensor(-1))
        self.track_version: str | None = None  # the digest of the weights the tracks were made with

    def inter_weight_at(self, epoch: int) -> float:
        """The weight of the inter-frame term at ``epoch`` (Eq. 4's lambda schedule)."""
        return self.hparams.inter_weight if epoch >= self.hparams.inter_warmup_epochs else 0.0

    # -- tracking ------------------------------------------------------------------------------------

    def _retrack_due(self, epoch: int) -> bool:
        if not self.hparams.track_features:
            return False
        last = int(self.last_track_epoch)
        every = self.hparams.retrack_every
        return last < 0 or (every > 0 and epoch > last and (epoch - last) % every == 0)

    def refresh_tracks(self) -> str:
        """Re-track the training frames with the current backbone's features, on every rank."""
        dm = self.trainer.datamodule
        if not getattr(dm, "tracks", False):
            raise ValueError(
                "InterFrameModule with track_features needs a LiDAR data module with tracks: true"
            )
        settings = getattr(dm, "track_settings", None)
        release = getattr(settings, "cluster_features", "mean") == "max_projection"
        tag = dm.refresh_tracks(
            self.backbone,
            self.device,
            self.global_rank,
            self.trainer.world_size,
            self.trainer.strategy.barrier,
            projector=self.tracking_projector() if release else None,
        )
        self.track_version = tag
        self.last_track_epoch.fill_(self.current_epoch)
        return tag

    def tracking_projector(self) -> torch.nn.Module:
        """The projection head of the release's cluster features: before this stage has tracked, the
        ``projector.*`` weights of ``init_checkpoint`` (P2C's head, matching the P2C backbone the stage
        starts from; this stage's own head starts afresh); afterwards, this stage's head."""
        if int(self.last_track_epoch) >= 0 or not self.hparams.init_checkpoint:
            return self.projector
        head = copy.deepcopy(self.projector)
        load_backbone(head, self.hparams.init_checkpoint, prefix="projector.")
        return head

    def on_train_start(self) -> None:
        """A resumed run serves the tracks it was trained on (re-made if their cache is gone); this runs
        after the checkpoint is restored and before any data-loader worker starts."""
        if self.track_version is None or int(self.last_track_epoch) < 0:
            return
        try:
            self.trainer.datamodule.use_tracks(self.track_version)
        except FileNotFoundError as e:
            warnings.warn(f"{e}; re-tracking with the restored backbone", stacklevel=2)
            self.refresh_tracks()

    def on_train_epoch_start(self) -> None:
        if self._retrack_due(self.current_epoch):
            self.refresh_tracks()

    # -- training ------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        """STSSL Eq. 4: ``w_inter * L_inter(view0, view1) + w_p2c * L_p2c(view0, view2)``."""
        v0, v1 = batch["view0"], batch["view1"]
        if "track" not in v0:
            raise ValueError("InterFrameModule needs per-point tracks: set the data module's tracks: true")
        w_p2c = self.hparams.p2c_weight
        if w_p2c > 0 and "view2" not in batch:
            raise ValueError("InterFrameModule's P2C term needs a second view of frame t: set p2c_view: true")
        self.update_target()
        views = [v0, v1] + ([batch["view2"]] if w_p2c > 0 else [])
        online = [self.online_features(v) for v in views]
        target = [self.target_features(v) for v in views]
        inter, tracks = self.cluster_term((v0, v1), (online[0], online[1]), (target[0], target[1]), "track")
        loss = self.inter_weight_at(self.current_epoch) * inter
        bs = len(batch["interval"])
        if w_p2c > 0:
            p2c, clusters = self.p2c_term((v0, views[2]), (online[0], online[2]), (target[0], target[2]))
            loss = loss + w_p2c * p2c
            self.log("train/p2c_loss", p2c, batch_size=bs)
            self.log("train/p2c_clusters", float(clusters), batch_size=bs)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)  # the mean over processes
        self.log("train/inter_loss", inter, batch_size=bs)
        self.log("train/tracked_pairs", float(tracks), batch_size=bs)
        self.log("train/interval", batch["interval"].float().mean(), batch_size=bs)
        return loss

    # -- checkpoints ---------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["stssl_track_version"] = self.track_version

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.track_version = checkpoint.get("stssl_track_version")
