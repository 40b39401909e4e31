"""unsup3d: learning 3D point-cloud semantics without labels (PointDC, STSSL)."""

__version__ = "0.1.0"
