"""SVC's dataset-wide clustering pass (PointDC Eq. 8-10), streamed over the training scenes.

Pass 1 keeps only super-voxel mean features (never every point's features), clusters them with
spherical K-means (all ranks' super-voxels together under DDP). Pass 2 turns the centroids into
pseudo labels: per super-voxel the K-means assignment (Eq. 8, "basic SVC"), or per point the nearest
centroid by cosine (Eq. 9), optionally pooled over each super-voxel as soft assignments (Eq. 10).
Labels are kept per scene, indexed by stored super-voxel id or by stored point row, so they follow
the points through any augmentation or crop.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from unsup3d.clustering import kmeans
from unsup3d.vision.projection import superpoint_mean


@dataclass
class PseudoLabels:
    """Labels of the training scenes: ``by_superpoint[scene]`` is indexed by the stored super-voxel id,
    ``by_point[scene]`` by the stored point row (-1: no label). Either may be empty."""

    by_superpoint: dict[int, Tensor]
    by_point: dict[int, Tensor]

    def lookup(
        self, scene_index: Tensor, point_batch: Tensor, superpoint_id: Tensor, point_index: Tensor
    ) -> Tensor:
        """The label of every point of a batch (``-1`` where there is none)."""
        out = torch.full_like(point_index, -1)
        for b, scene in enumerate(scene_index.tolist()):
            rows = point_batch == b
            if scene in self.by_point:
                out[rows] = self.by_point[scene].to(out.device).long()[point_index[rows]]
            if scene in self.by_superpoint:
                table = self.by_superpoint[scene].to(out.device).long()
                sp = superpoint_id[rows]
                has = (sp >= 0) & (sp < len(table))
                sub = out[rows]
                sub[has] = torch.where(table[sp[has]] >= 0, table[sp[has]], sub[has])
                out[rows] = sub
        return out

    def state(self) -> dict[str, Tensor]:
        """A flat dict of tensors for a checkpoint (loads with ``weights_only=True``)."""
        out = {f"sp/{k}": v.cpu() for k, v in self.by_superpoint.items()}
        out.update({f"pt/{k}": v.cpu() for k, v in self.by_point.items()})
        return out

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> PseudoLabels:
        sp = {int(k[3:]): v for k, v in state.items() if k.startswith("sp/")}
        pt = {int(k[3:]): v for k, v in state.items() if k.startswith("pt/")}
        return cls(sp, pt)


def _features(backbone: torch.nn.Module, batch: dict, device: torch.device) -> Tensor:
    sparse = batch["sparse"].to(device)
    return F.normalize(backbone(sparse, batch["inverse"].to(device)), dim=1)


def _raw_ids(batch: dict) -> Tensor:
    """The stored super-voxel id of each of the batch's consecutive super-voxels."""
    raw = torch.full((batch["num_superpoints"],), -1, dtype=torch.long)
    sp = batch["superpoint"]
    raw[sp[sp >= 0]] = batch["superpoint_id"][sp >= 0]
    return raw


@torch.no_grad()
def superpoint_features(
    backbone: torch.nn.Module, loader: Iterable[dict], device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """PointDC Eq. 8's ``S_vox(f(P))``: the mean (L2-normalised) point feature of every super-voxel.

    Returns ``(S, D)`` features, the scene of each and its stored super-voxel id; ``S`` may be 0 (a
    DDP rank without scenes still takes part in the K-means that follows).
    """
    feats, scenes, ids = [], [], []
    for batch in loader:
        f = _features(backbone, batch, device)
        sp = batch["superpoint"].to(device)
        means, counts = superpoint_mean(f, sp, batch["num_superpoints"])
        keep = (counts > 0).cpu()
        feats.append(means[keep.to(device)].cpu())
        scenes.append(batch["scene_index"][batch["superpoint_batch"]][keep])
        ids.append(_raw_ids(batch)[keep])
    if not feats:
        none = torch.zeros(0, dtype=torch.long)
        return torch.zeros(0, int(backbone.out_channels)), none, none
    return torch.cat(feats), torch.cat(scenes), torch.cat(ids)


@torch.no_grad()
def point_labels(
    backbone: torch.nn.Module,
    loader: Iterable[dict],
    centroids: Tensor,
    device: torch.device,
    superpoint_pooling: bool,
) -> dict[int, Tensor]:
    """PointDC Eq. 9 (and Eq. 10 when ``superpoint_pooling``): per-point pseudo labels of each scene."""
    out: dict[int, Tensor] = {}
    mu = F.normalize(centroids.to(device), dim=1)
    for batch in loader:
        f = _features(backbone, batch, device)
        cos = f @ mu.T
        if superpoint_pooling:
            # Eq. 10: average the soft assignments (Eq. 9, softmax over cosine) of each super-voxel.
            soft = cos.softmax(dim=1)
            sp = batch["superpoint"].to(device)
            pooled, _ = superpoint_mean(soft, sp, batch["num_superpoints"])
            label = torch.where(sp >= 0, pooled.argmax(1)[sp.clamp_min(0)], cos.argmax(1))
        else:
            label = cos.argmax(1)
        label = label.cpu()
        for b, scene in enumerate(batch["scene_index"].tolist()):
            rows = batch["point_batch"] == b
            table = torch.full((int(batch["point_index"][rows].max()) + 1,), -1, dtype=torch.int16)
            table[batch["point_index"][rows]] = label[rows].to(torch.int16)
            out[scene] = table
    return out


def _all_gather_dict(d: dict[int, Tensor]) -> dict[int, Tensor]:
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return d
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {k: v.cpu() for k, v in d.items()})
    merged: dict[int, Tensor] = {}
    for p in parts:
        merged.update(p)
    return merged


def cluster_pass(
    backbone: torch.nn.Module,
    loader_fn,
    num_clusters: int,
    device: torch.device,
    *,
    nonparametric: bool,
    superpoint_pooling: bool,
    niter: int = 80,
    seed: int = 0,
) -> tuple[Tensor, PseudoLabels]:
    """One clustering of the training set; ``loader_fn()`` yields this rank's share of it, unaugmented.

    Returns the ``(num_clusters, D)`` centroids (the same on every rank) and the pseudo labels of all
    training scenes (gathered from every rank).
    """
    was_training = backbone.training
    backbone.eval()
    try:
        feats, scenes, ids = superpoint_features(backbone, loader_fn(), device)
        result = kmeans(feats, num_clusters, niter=niter, spherical=True, seed=seed)
        by_sp: dict[int, Tensor] = {}
        by_pt: dict[int, Tensor] = {}
        if nonparametric or superpoint_pooling:
            by_pt = point_labels(backbone, loader_fn(), result.centroids, device, superpoint_pooling)
        else:  # basic SVC: every point takes its super-voxel's K-means assignment (Eq. 8)
            for scene in scenes.unique().tolist():
                rows = scenes == scene
                table = torch.full((int(ids[rows].max()) + 1,), -1, dtype=torch.int16)
                table[ids[rows]] = result.assignments[rows].to(torch.int16)
                by_sp[scene] = table
        return result.centroids, PseudoLabels(_all_gather_dict(by_sp), _all_gather_dict(by_pt))
    finally:
        backbone.train(was_training)
