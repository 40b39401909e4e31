"""STSSL (Wu et al., CVPR 2023): spatio-temporal self-supervised pre-training on LiDAR sequences.

- :mod:`.ground_clusters`: RANSAC ground removal and DBSCAN clusters of a scan (Sec. 3.1).
- :mod:`.tracking`, :mod:`.tracking_stats`: tracking clusters across scans (Eq. 1) and what the tracks
  give; :mod:`.track_cache`: the tracks of a data module's training frames, cached.
- :mod:`.byol`, :mod:`.p2c`, :mod:`.interframe`: point-to-cluster and inter-frame BYOL pre-training
  (Eq. 2-4); :mod:`.finetune`: fine-tuning on labelled scans.
- :mod:`.track_media`: W&B clouds of the training frames coloured by track.
"""

from unsup3d.stssl.ground_clusters import cluster_points, remove_ground
from unsup3d.stssl.tracking import track_sequence

__all__ = ["cluster_points", "remove_ground", "track_sequence"]
