"""Pictures of point clouds and confusion matrices with matplotlib, without W&B or a display.

Every function returns a ``matplotlib.figure.Figure`` on its own Agg canvas (not a pyplot figure), so
callers need not close anything; ``figure_to_array`` gives its pixels for ``wandb.Image``.
"""

from unsup3d.viz.colors import IGNORE_COLOR, PALETTE, colorize, label_colors, value_colors
from unsup3d.viz.confusion import draw_confusion, row_normalize
from unsup3d.viz.scene import draw_scene, draw_scenes, figure_to_array, perspective_project

__all__ = [
    "IGNORE_COLOR",
    "PALETTE",
    "colorize",
    "draw_confusion",
    "draw_scene",
    "draw_scenes",
    "figure_to_array",
    "label_colors",
    "perspective_project",
    "row_normalize",
    "value_colors",
]
