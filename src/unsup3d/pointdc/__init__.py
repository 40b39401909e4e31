"""PointDC (Chen et al., ICCV 2023) and its teacher-free path.

Today this package holds the teacher-free path (hand-made descriptors, :mod:`.geometric`, and their
preparation, :mod:`.descriptor_pass`); the stages still live in :mod:`unsup3d.stages` and the 2D
feature pass in :mod:`unsup3d.data` until the layout issue moves them here.
"""

from unsup3d.pointdc.geometric import DESCRIPTOR_GROUPS, point_descriptors, weight_columns

__all__ = ["DESCRIPTOR_GROUPS", "point_descriptors", "weight_columns"]
