"""PointDC (Chen et al., ICCV 2023) and its teacher-free path.

- :mod:`.lifting`: 2D features lifted onto points and super-voxels (Eq. 3-6); :mod:`.feature_pass`:
  that lifting run over a data module's scenes, cached as CMD's targets.
- :mod:`.cmd`: Cross-Modal Distillation (Eq. 7); :mod:`.clustering_pass`: the dataset-wide K-means and
  pseudo labels (Eq. 8-10); :mod:`.svc`: Super-Voxel Clustering; :mod:`.linear_probe`: the linear probe.
- :mod:`.geometric`, :mod:`.descriptor_pass`: the teacher-free path's hand-made descriptors and their
  preparation.
"""

from unsup3d.pointdc.geometric import DESCRIPTOR_GROUPS, point_descriptors, weight_columns

__all__ = ["DESCRIPTOR_GROUPS", "point_descriptors", "weight_columns"]
