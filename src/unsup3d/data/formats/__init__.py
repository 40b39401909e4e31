"""Readers of each dataset's own files: one module per dataset, numpy arrays out, and a
``ValueError`` (or ``FileNotFoundError``) naming the file on malformed or missing input."""

from unsup3d.data.formats import (
    nuscenes,
    ply,
    s3dis,
    scannet,
    scannet_frames,
    scannet_labels,
    semantic_kitti,
    semantic_poss,
)

__all__ = [
    "nuscenes",
    "ply",
    "s3dis",
    "scannet",
    "scannet_frames",
    "scannet_labels",
    "semantic_kitti",
    "semantic_poss",
]
