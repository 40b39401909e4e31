"""unsup3d.vision: 2D teachers, cameras, projection and rendering (what PointDC's lifting of 2D features
onto points, :mod:`unsup3d.pointdc.lifting`, is built on)."""

from unsup3d.vision.cameras import Cameras, cameras_around, cameras_inside, look_at, pinhole_intrinsics
from unsup3d.vision.projection import (
    aggregate_views,
    depth_consistent,
    pixel_index,
    project,
    sample_features,
    superpoint_mean,
    zbuffer_visible,
)
from unsup3d.vision.render import estimate_point_spacing, render_points
from unsup3d.vision.teacher import (
    DEFAULT_TEACHER,
    KNOWN_CONFIGS,
    TeacherWeightsNotFoundError,
    ViTTeacher,
)

__all__ = [
    "DEFAULT_TEACHER",
    "KNOWN_CONFIGS",
    "Cameras",
    "TeacherWeightsNotFoundError",
    "ViTTeacher",
    "aggregate_views",
    "cameras_around",
    "cameras_inside",
    "depth_consistent",
    "estimate_point_spacing",
    "look_at",
    "pinhole_intrinsics",
    "pixel_index",
    "project",
    "render_points",
    "sample_features",
    "superpoint_mean",
    "zbuffer_visible",
]
