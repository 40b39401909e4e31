"""The track cache of LiDAR training frames: per point, the id of its cluster's track (STSSL Sec. 3.1,
Eq. 1), which gives the inter-frame pairs of Eq. 3.

Tracks are computed once per sequence from the cached DBSCAN clusters and written to
``<prepared_root>/tracks/<key>/<sequence>/<index:06d>.npy`` (int32, -1 where a point's cluster takes no
part), each file atomically; ``<key>/<sequence>.done.json`` marks a finished sequence and
``<key>/tracks.json`` a finished version. ``key`` hashes the tracking settings and the features used:
location only (``features=None``, what ``prepare_data`` computes), or a backbone's features (Eq. 1
with ``alpha``), named by a digest of its weights, so re-tracking with other weights makes a new
version and the same weights reuse theirs.

By default clusters are matched in each scan's own sensor frame, as the paper does (STSSL tracks
"without requiring any pose sensor"): a static object then moves by the ego-motion, about 1 m a scan at
10 Hz, well inside the 5 m gate. ``TrackSettings(use_poses=True)`` tracks in the world frame instead
when every frame of the sequence has a pose (KITTI's ``poses.txt``, nuScenes' ego poses), so static
clusters stand still; ``benchmarks/tracking.py`` compares the two on the real KITTI scans.
Sequences are tracked frame by frame (:class:`unsup3d.stssl.tracking.StreamingTracker`, the one tracker,
which keeps only cluster centres and features), so a 4,500-frame KITTI sequence never sits in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from unsup3d.data.collate import collate_scenes, voxelize
from unsup3d.data.datasets import xyz_intensity_features
from unsup3d.data.lidar_frames import FrameRef, read_frame
from unsup3d.data.prepare import Job, load_npy, save_npy_atomic, write_json_atomic
from unsup3d.data.scene_folder import settings_key
from unsup3d.stssl.tracking import StreamingTracker

__all__ = [
    "StreamingTracker",
    "TrackSettings",
    "backbone_features",
    "feature_tracks",
    "by_sequence",
    "location_jobs",
    "projection",
    "sequence_done",
    "track_dir",
    "track_frames",
    "weights_digest",
]

FeatureFn = Callable[[FrameRef], np.ndarray]


@dataclass(frozen=True)
class TrackSettings:
    """Tracking settings (STSSL Sec. 4.1 and the release): Eq. 1's ``alpha``, the 5 m gate, clusters
    of 200-20,000 points, tracks ending when unmatched (``max_gap=0``), each scan in its own sensor
    frame (``use_poses=False``, the paper; True: the world frame through the sequence's poses, where
    every frame has one).

    ``cluster_features``: the cluster features of Eq. 1's ``D_feat`` when tracking with a backbone:
    ``"mean"``, the L2-normalised mean of the points' backbone features, by cosine distance; or
    ``"max_projection"``, the release's (``track_model.py``): the backbone features max-pooled per
    cluster, through the BYOL projection head, by Euclidean distance."""

    alpha: float = 0.5
    gate: float = 5.0
    min_points: int = 200
    max_points: int = 20000
    max_gap: int = 0
    use_poses: bool = False
    cluster_features: str = "mean"

    def __post_init__(self) -> None:
        if self.cluster_features not in CLUSTER_FEATURES:
            raise ValueError(
                f"TrackSettings: cluster_features must be one of {CLUSTER_FEATURES}, "
                f"got {self.cluster_features!r}"
            )

    def tracker(self, project: Callable[[np.ndarray], np.ndarray] | None = None) -> StreamingTracker:
        """A fresh tracker with these settings; ``project`` maps pooled cluster features
        (``cluster_features="max_projection"``)."""
        release = self.cluster_features == "max_projection"
        return StreamingTracker(
            self.alpha, self.gate, self.min_points, self.max_points, self.max_gap,
            pooling="max" if release else "mean", feature_distance="euclidean" if release else "cosine",
            project=project if release else None,
        )  # fmt: skip


CLUSTER_FEATURES = ("mean", "max_projection")


def track_dir(prepared_root: Path, settings: TrackSettings, features: str | None = None) -> Path:
    """The folder of one track version: the settings and the features (None: location only, which
    ``cluster_features`` does not change)."""
    key = asdict(settings)
    if features is None:
        key.pop("cluster_features")
    return Path(prepared_root) / "tracks" / settings_key({**key, "features": features})


def by_sequence(frames: Sequence[FrameRef]) -> dict[str, list[FrameRef]]:
    """Frames grouped by sequence, each group in time order."""
    out: dict[str, list[FrameRef]] = {}
    for ref in frames:
        out.setdefault(ref.sequence, []).append(ref)
    return {seq: sorted(refs, key=lambda r: r.index) for seq, refs in out.items()}


def _marker(out_root: Path, sequence: str) -> Path:
    return out_root / f"{sequence}.done.json"


def track_frames(
    refs: Sequence[FrameRef],
    cluster_root: Path,
    out_root: Path,
    settings: TrackSettings,
    features: FeatureFn | None = None,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
) -> None:
    """Track the frames of one sequence (in time order) and write each frame's track ids, then the
    sequence's marker. ``features(ref)`` gives a frame's per-point features for Eq. 1's ``D_feat``;
    ``project`` maps pooled cluster features (``settings.cluster_features="max_projection"``)."""
    world = settings.use_poses and all(r.pose is not None for r in refs)
    tracker = settings.tracker(project)
    for ref in refs:
        xyz = read_frame(ref)["coord"].astype(np.float64)
        cluster_file = cluster_root / ref.sequence / f"{ref.index:06d}.npy"
        clusters = load_npy(cluster_file)
        if clusters.shape != (len(xyz),):
            raise ValueError(
                f"{cluster_file}: {clusters.shape} cluster ids for the {len(xyz)} points of {ref.scan}"
            )
        if world:
            xyz = xyz @ ref.pose[:3, :3].T + ref.pose[:3, 3]
        ids = tracker.update(xyz, clusters, None if features is None else features(ref))
        save_npy_atomic(out_root / ref.sequence / f"{ref.index:06d}.npy", ids.astype(np.int32))
    write_json_atomic(_marker(out_root, refs[0].sequence), {"frames": len(refs), "world_frame": world})


def location_jobs(
    frames: Sequence[FrameRef], cluster_root: Path, out_root: Path, settings: TrackSettings
) -> list[Job]:
    """One preparation job per sequence: location-only tracks (``D = D_loc``), skipped when done."""
    return [
        Job(
            f"tracks of sequence {seq}",
            _marker(out_root, seq),
            track_frames,
            (refs, cluster_root, out_root, settings),
        )
        for seq, refs in by_sequence(frames).items()
    ]


def sequence_done(out_root: Path, sequence: str) -> bool:
    return _marker(out_root, sequence).is_file()


def weights_digest(module: torch.nn.Module, *more: torch.nn.Module) -> str:
    """A short digest of the parameters and buffers of one module (or several, in order): the name of
    the features they give."""
    h = hashlib.sha1()
    for i, m in enumerate((module, *more)):
        prefix = f"{i}." if i else ""  # one module: the digest of its state alone
        for name, tensor in sorted(m.state_dict().items()):
            h.update((prefix + name).encode())
            t = tensor.detach().cpu().contiguous()
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def backbone_features(
    backbone: torch.nn.Module, voxel_size: float, device: torch.device | str = "cpu"
) -> FeatureFn:
    """Per-point features of a whole (unaugmented) frame from ``backbone``, as numpy float32.

    The caller puts the backbone in eval mode (BatchNorm running statistics) for the pass.
    """

    def features(ref: FrameRef) -> np.ndarray:
        frame = read_frame(ref)
        sample = voxelize({**frame, "scene_index": np.array(0)}, voxel_size, xyz_intensity_features(frame))
        batch = collate_scenes([sample])
        with torch.no_grad():
            out = backbone(batch["sparse"].to(device), batch["inverse"].to(device))
        return out.float().cpu().numpy()

    return features


def projection(
    head: torch.nn.Module, device: torch.device | str = "cpu"
) -> Callable[[np.ndarray], np.ndarray]:
    """``head`` (e.g. the BYOL projection head) as a numpy map of pooled cluster features ``(K, D)``.

    The caller puts the head in eval mode (BatchNorm running statistics) for the pass.
    """

    def project(pooled: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = head(torch.as_tensor(pooled, dtype=torch.float32, device=device))
        return out.double().cpu().numpy()

    return project


def feature_tracks(
    frames: Sequence[FrameRef],
    prepared_root: Path,
    settings: TrackSettings,
    backbone: torch.nn.Module,
    voxel_size: float,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    projector: torch.nn.Module | None = None,
) -> str:
    """Track ``frames`` with ``backbone``'s features (STSSL Eq. 1) into the version named by the weights'
    digest, unless it is finished already; returns the digest.

    With ``settings.cluster_features="max_projection"`` the pooled cluster features go through
    ``projector`` (required), and the digest covers its weights too.
    With several processes each tracks the sequences ``i % world_size == rank``; all ranks must call
    it, and ``barrier`` (e.g. the Lightning strategy's) lets rank 0 mark the version finished only
    once every sequence is written. The networks run in eval mode and are put back as they were.
    """
    nets = [backbone]
    if settings.cluster_features == "max_projection":
        if projector is None:
            raise ValueError("feature_tracks: cluster_features='max_projection' needs the projection head")
        nets.append(projector)
    tag = weights_digest(*nets)
    root = track_dir(prepared_root, settings, tag)
    if (root / "tracks.json").is_file():
        return tag
    was_training = [net.training for net in nets]
    for net in nets:
        net.eval()
    features = backbone_features(backbone, voxel_size, device)
    project = projection(projector, device) if len(nets) > 1 else None
    try:
        for i, (seq, refs) in enumerate(sorted(by_sequence(frames).items())):
            if i % world_size == rank and not sequence_done(root, seq):
                track_frames(refs, Path(prepared_root) / "clusters", root, settings, features, project)
    finally:
        for net, mode in zip(nets, was_training, strict=True):
            net.train(mode)
    if barrier is not None:
        barrier()
    if rank == 0:
        write_json_atomic(root / "tracks.json", {"settings": asdict(settings), "features": tag})
    if barrier is not None:
        barrier()
    return tag
