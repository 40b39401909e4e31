"""SVC's dataset-wide clustering pass (PointDC Eq. 8-10), streamed over the training scenes.

Pass 1 keeps super-voxel mean features, clusters them with spherical K-means (all ranks' super-voxels
together under DDP). Pass 2 turns the centroids into pseudo labels: per super-voxel the K-means
assignment (Eq. 8, "basic SVC"), or per point the nearest centroid by cosine (Eq. 9), optionally pooled
over each super-voxel as soft assignments (Eq. 10). Per-point labels need every point's feature again:
where this rank's point features fit in ``feature_cache_mb`` pass 1 keeps them and pass 2 reads them
back (one forward pass over the data instead of two); past the budget it drops them and pass 2 runs the
network again, so memory never grows with the dataset beyond the budget.
Labels are kept per scene, indexed by stored super-voxel id or by stored point row, so they follow
the points through any augmentation or crop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from unsup3d.clustering import kmeans
from unsup3d.pointdc.geometric import DESCRIPTOR_GROUPS, descriptor_columns
from unsup3d.training.precision import float32
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


def descriptor_scale(weights: Mapping[str, float]) -> Tensor:
    """Per-column factors of the hand-made descriptors (:mod:`unsup3d.pointdc.geometric`) from group
    weights (groups not named: 0): what joins them to the network's features in the joint clustering."""
    scale = torch.zeros(sum(DESCRIPTOR_GROUPS.values()))
    unknown = set(weights) - set(DESCRIPTOR_GROUPS)
    if unknown:
        known = list(DESCRIPTOR_GROUPS)
        raise ValueError(f"descriptor_weights: unknown groups {sorted(unknown)}; known: {known}")
    for name, sl in descriptor_columns().items():
        scale[sl] = float(weights.get(name, 0.0))
    return scale


def _descriptors(batch: dict, scale: Tensor, device: torch.device) -> Tensor:
    if "descriptor" not in batch:
        raise KeyError(
            "SVC's descriptor_weights need the per-point 'descriptor' in batches: give the data module "
            "descriptors: true"
        )
    return batch["descriptor"].to(device).float() * scale.to(device)


def _raw_ids(batch: dict) -> Tensor:
    """The stored super-voxel id of each of the batch's consecutive super-voxels."""
    raw = torch.full((batch["num_superpoints"],), -1, dtype=torch.long)
    sp = batch["superpoint"]
    raw[sp[sp >= 0]] = batch["superpoint_id"][sp >= 0]
    return raw


#: what pass 2 reads of a batch besides the features (:func:`label_batch`)
_LABEL_KEYS = ("superpoint", "num_superpoints", "scene_index", "point_batch", "point_index", "descriptor")


class FeatureCache:
    """Pass 1's point features and the batch fields pass 2 needs, kept while they fit in ``budget``
    bytes; over it, everything is dropped and :attr:`complete` is False (pass 2 recomputes)."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self.used = 0
        self.entries: list[tuple[dict, Tensor]] | None = []

    def add(self, batch: dict, features: Tensor) -> None:
        if self.entries is None:
            return
        kept = {k: batch[k] for k in _LABEL_KEYS if k in batch}
        tensors = [features, *(v for v in kept.values() if isinstance(v, Tensor))]
        self.used += sum(t.numel() * t.element_size() for t in tensors)
        if self.used > self.budget:
            self.entries = None
            return
        self.entries.append((kept, features))

    @property
    def complete(self) -> bool:
        return self.entries is not None


@torch.no_grad()
def superpoint_features(
    backbone: torch.nn.Module,
    loader: Iterable[dict],
    device: torch.device,
    scale: Tensor | None = None,
    cache: FeatureCache | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """PointDC Eq. 8's ``S_vox(f(P))``: the mean (L2-normalised) point feature of every super-voxel.

    With ``scale`` (:func:`descriptor_scale`; the teacher-free path, after GrowSP), each super-voxel's
    feature is the joint ``[S_vox(f) / |S_vox(f)|, S_vox(d) * scale]`` with ``d`` the points' hand-made
    descriptors. Returns ``(S, D)`` features, the scene of each and its stored super-voxel id; ``S`` may
    be 0 (a DDP rank without scenes still takes part in the K-means that follows). ``cache`` keeps the
    point features for :func:`point_labels` while they fit its budget.
    """
    feats, scenes, ids = [], [], []
    for batch in loader:
        f = _features(backbone, batch, device)
        if cache is not None:
            cache.add(batch, f)
        sp = batch["superpoint"].to(device)
        means, counts = superpoint_mean(f, sp, batch["num_superpoints"])
        if scale is not None:
            d_means, _ = superpoint_mean(_descriptors(batch, scale, device), sp, batch["num_superpoints"])
            means = torch.cat([F.normalize(means, dim=1), d_means], dim=1)
        keep = (counts > 0).cpu()
        feats.append(means[keep.to(device)].cpu())
        scenes.append(batch["scene_index"][batch["superpoint_batch"]][keep])
        ids.append(_raw_ids(batch)[keep])
    if not feats:
        none = torch.zeros(0, dtype=torch.long)
        dim = int(backbone.out_channels) + (0 if scale is None else len(scale))
        return torch.zeros(0, dim), none, none
    return torch.cat(feats), torch.cat(scenes), torch.cat(ids)


def point_scores(f: Tensor, centroids: Tensor, descriptors: Tensor | None = None) -> Tensor:
    """PointDC Eq. 9's scores of points against the centroids: ``cos(f, mu)`` (``f`` unit rows).

    With ``descriptors`` (scaled, the joint clustering of the teacher-free path) the score is the
    negative half squared distance in the joint space ``[f, d]``, up to a per-point constant:
    ``f . mu_f + d . mu_d - |mu|^2 / 2``."""
    if descriptors is None:
        return f @ F.normalize(centroids, dim=1).T
    dim = f.shape[1]
    mu_f, mu_d = centroids[:, :dim], centroids[:, dim:]
    return f @ mu_f.T + descriptors @ mu_d.T - 0.5 * centroids.pow(2).sum(1)


def label_batch(
    batch: dict,
    f: Tensor,
    mu: Tensor,
    device: torch.device,
    superpoint_pooling: bool,
    scale: Tensor | None,
    out: dict[int, Tensor],
) -> None:
    """PointDC Eq. 9 (and Eq. 10 when ``superpoint_pooling``) for one batch of unit point features
    ``f``: each scene's label table, indexed by stored point row, written into ``out``."""
    d = None if scale is None else _descriptors(batch, scale, device)
    cos = point_scores(f, mu, d)
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


@torch.no_grad()
def point_labels(
    backbone: torch.nn.Module,
    loader: Iterable[dict],
    centroids: Tensor,
    device: torch.device,
    superpoint_pooling: bool,
    scale: Tensor | None = None,
    cache: FeatureCache | None = None,
) -> dict[int, Tensor]:
    """PointDC Eq. 9 (and Eq. 10 when ``superpoint_pooling``): per-point pseudo labels of each scene
    (in the joint space of :func:`superpoint_features` when ``scale`` is given). From the features of a
    complete ``cache`` when given one (``loader`` is then not read), else from the network."""
    out: dict[int, Tensor] = {}
    mu = centroids.to(device).float()
    if cache is not None and cache.complete:
        for batch, f in cache.entries or []:
            label_batch(batch, f, mu, device, superpoint_pooling, scale, out)
        return out
    for batch in loader:
        label_batch(batch, _features(backbone, batch, device), mu, device, superpoint_pooling, scale, out)
    return out


def superpoint_tables(scenes: Tensor, ids: Tensor, assignments: Tensor) -> dict[int, Tensor]:
    """Basic SVC's labels (Eq. 8): for each scene, a table indexed by stored super-voxel id holding its
    K-means assignment (-1 for ids with none); ``scenes`` / ``ids`` as :func:`superpoint_features`."""
    out: dict[int, Tensor] = {}
    for scene in scenes.unique().tolist():
        rows = scenes == scene
        table = torch.full((int(ids[rows].max()) + 1,), -1, dtype=torch.int16)
        table[ids[rows]] = assignments[rows].to(torch.int16)
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
    scale: Tensor | None = None,
    feature_cache_mb: float = 0.0,
    restarts: int = 1,
) -> tuple[Tensor, PseudoLabels]:
    """One clustering of the training set; ``loader_fn()`` yields this rank's share of it, unaugmented.

    Spherical K-means of the super-voxel features; with ``scale`` (the teacher-free path's joint
    features, see :func:`superpoint_features`) Euclidean K-means of the joint features. Returns the
    ``(num_clusters, D)`` centroids (``D`` the joint width with ``scale``; the same on every rank) and
    the pseudo labels of all training scenes (gathered from every rank). It runs in float32 even when
    called under mixed precision: K-means and the labels depend on small differences of cosines.
    Per-point labels reuse pass 1's features where this rank's fit in ``feature_cache_mb`` (module
    docstring); 0 always runs the network twice. ``restarts`` K-means runs from different
    initialisations keep the one of lowest inertia (the release's faiss call: 1).
    """
    was_training = backbone.training
    backbone.eval()
    try:
        with float32(device):
            per_point = nonparametric or superpoint_pooling
            cache = FeatureCache(feature_cache_mb * 2**20) if per_point and feature_cache_mb > 0 else None
            feats, scenes, ids = superpoint_features(backbone, loader_fn(), device, scale, cache)
            result = kmeans(
                feats, num_clusters, niter=niter, spherical=scale is None, seed=seed, nredo=restarts
            )
            by_sp: dict[int, Tensor] = {}
            by_pt: dict[int, Tensor] = {}
            if per_point:  # the loader (a lazy generator) is read only where the cache is incomplete
                by_pt = point_labels(
                    backbone, loader_fn(), result.centroids, device, superpoint_pooling, scale, cache
                )
        if not per_point:  # basic SVC: each point its super-voxel's (Eq. 8)
            by_sp = superpoint_tables(scenes, ids, result.assignments)
        return result.centroids, PseudoLabels(_all_gather_dict(by_sp), _all_gather_dict(by_pt))
    finally:
        backbone.train(was_training)
