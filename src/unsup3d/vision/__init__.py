"""unsup3d.vision: 2D teachers, cameras, projection, rendering and CMD's multi-view feature targets
(PointDC Sec. 3.3, Eq. 3-6)."""

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
from unsup3d.vision.targets import Views, compute_targets, views_from_frames, views_from_render
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
    "Views",
    "aggregate_views",
    "cameras_around",
    "cameras_inside",
    "compute_targets",
    "depth_consistent",
    "estimate_point_spacing",
    "look_at",
    "pinhole_intrinsics",
    "pixel_index",
    "project",
    "render_points",
    "sample_features",
    "superpoint_mean",
    "views_from_frames",
    "views_from_render",
    "zbuffer_visible",
]
