"""Point-cloud scenes drawn to PNG with matplotlib: a top-down view and a perspective view from above.

Figures are bare ``matplotlib.figure.Figure`` objects on an Agg canvas, never pyplot figures, so
nothing here needs a display or touches pyplot's global state, and callers need not close anything
(dropping the last reference frees the figure).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from unsup3d.viz.colors import colorize, to_numpy, value_colors

VIEWS = ("top", "perspective", "both")
_PANEL_INCHES = 6.0


def new_figure(figsize: tuple[float, float], dpi: int = 100) -> Figure:
    """A Figure on its own Agg canvas, outside pyplot (no display, no global figure list)."""
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _settle_layout(fig: Figure) -> None:
    """Run the layout once without painting: constrained layout with equal-aspect axes and colour bars
    moves a few pixels between the first and second draw, and every render should give the same image."""
    fig.draw_without_rendering()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at its own dpi, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _settle_layout(fig)
    fig.savefig(path, dpi=fig.dpi, format="png")
    return path


def figure_to_array(fig: Figure) -> np.ndarray:
    """uint8 ``(H, W, 3)`` RGB pixels of the rendered figure (for ``wandb.Image`` and notebooks).

    Transparent pixels are composited over white.
    """
    _settle_layout(fig)
    if isinstance(fig.canvas, FigureCanvasAgg):
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
    else:
        # A figure of another backend (e.g. pyplot in a GUI session): render through PNG rather than
        # replace its canvas, which would detach it from its window.
        from PIL import Image

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=fig.dpi)
        buf.seek(0)
        rgba = np.asarray(Image.open(buf).convert("RGBA"))
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


def perspective_project(
    coord: np.ndarray, *, elev: float = 35.0, azim: float = 200.0, distance: float = 2.0
) -> tuple[np.ndarray, np.ndarray]:
    """Pinhole projection of ``coord`` (N, 3) seen from above at an angle.

    The camera looks at the centre of the scene's bounding box from the direction ``elev`` degrees
    above the x-y plane and ``azim`` degrees from +x towards +y, at ``distance`` times the box's
    half-diagonal (> 1, so every point is in front of it); z is up on screen. Returns the image-plane
    coordinates ``uv`` (N, 2) (u right, v up, the scene centre at (0, 0)) and the depth (N,) along the
    viewing direction.
    """
    if distance <= 1.0:
        raise ValueError(f"perspective_project: distance must exceed 1 (box half-diagonals), got {distance}")
    xyz = np.asarray(coord, dtype=np.float64)
    if len(xyz) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    lo, hi = xyz.min(axis=0), xyz.max(axis=0)
    centre = (lo + hi) / 2.0
    radius = max(float(np.linalg.norm(hi - lo)) / 2.0, 1e-6)
    e, a = np.deg2rad(elev), np.deg2rad(azim)
    towards_camera = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
    camera = centre + distance * radius * towards_camera
    forward = -towards_camera
    right = np.cross(forward, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:  # looking straight down: z-up is undefined on screen, use +y
        right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    rel = xyz - camera
    depth = rel @ forward
    uv = np.stack([rel @ right, rel @ up], axis=1) / depth[:, None]
    return uv, depth


def _auto_point_size(ax: Axes, n: int) -> float:
    """Marker area in points^2 so that n points roughly fill, but do not smear, the panel."""
    fig = ax.figure
    pos = ax.get_position()
    w_in, h_in = fig.get_size_inches()
    area_pt2 = (pos.width * w_in * 72.0) * (pos.height * h_in * 72.0)
    return float(np.clip(0.6 * area_pt2 / max(n, 1), 0.3, 30.0))


def _scatter(ax: Axes, xy: np.ndarray, rgb: np.ndarray, order: np.ndarray, size: float | None) -> None:
    s = _auto_point_size(ax, len(xy)) if size is None else size
    # Square markers render about twice as fast as circles in Agg and are indistinguishable at this size.
    ax.scatter(xy[order, 0], xy[order, 1], c=rgb[order] / 255.0, s=s, marker="s", linewidths=0)


def _draw_panel(
    ax: Axes,
    coord: np.ndarray,
    rgb: np.ndarray,
    view: str,
    point_size: float | None,
    elev: float,
    azim: float,
    distance: float,
) -> None:
    if view == "top":
        # Painter's order by height: the highest point at an x-y location is drawn last and shows.
        order = np.argsort(coord[:, 2], kind="stable")
        _scatter(ax, coord[:, :2], rgb, order, point_size)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
    else:
        uv, depth = perspective_project(coord, elev=elev, azim=azim, distance=distance)
        order = np.argsort(-depth, kind="stable")  # far to near: nearer points cover farther ones
        _scatter(ax, uv, rgb, order, point_size)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
    if len(coord) == 0:
        ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes)


def _check_inputs(coord: np.ndarray, values_list: Sequence[np.ndarray | None]) -> np.ndarray:
    xyz = to_numpy(coord)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"draw_scene: coord must be (N, 3) metres, got shape {xyz.shape}")
    for i, values in enumerate(values_list):
        if values is not None and len(to_numpy(values)) != len(xyz):
            raise ValueError(
                f"draw_scene: values[{i}] has {len(to_numpy(values))} entries for {len(xyz)} points"
            )
    return xyz[:, :3].astype(np.float64)


def _select(xyz: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Indices of the points drawn: finite ones, a seeded random subset of them above max_points."""
    keep = np.flatnonzero(np.isfinite(xyz).all(axis=1))
    if len(keep) > max_points:
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(keep, size=max_points, replace=False))
    return keep


def _colours(
    values: np.ndarray | None, xyz: np.ndarray, idx: np.ndarray, ignore_index: int, cmap: str
) -> tuple[np.ndarray, Normalize | None, str | None]:
    """Colours of the drawn points, and the colour scale when they come from a float array."""
    if values is None:
        z = xyz[idx, 2]
        # Percentiles, not extremes: one stray LiDAR return metres below the road would wash out the rest.
        lo, hi = (float(q) for q in np.percentile(z, [1.0, 99.0])) if len(z) else (0.0, 1.0)
        return value_colors(z, cmap=cmap, vmin=lo, vmax=hi), Normalize(lo, hi), "z [m]"
    v = to_numpy(values)[idx]
    if v.ndim == 1 and v.dtype.kind == "f":
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        return value_colors(v, cmap=cmap, vmin=lo, vmax=hi), Normalize(lo, hi), ""
    return colorize(v, ignore_index=ignore_index), None, None


def _render(
    coord: np.ndarray,
    values_list: Sequence[np.ndarray | None],
    titles: Sequence[str | None],
    views: Sequence[str],
    *,
    views_along_rows: bool,
    title: str | None,
    point_size: float | None,
    max_points: int,
    seed: int,
    ignore_index: int,
    figsize: tuple[float, float] | None,
    dpi: int,
    cmap: str,
    elev: float,
    azim: float,
    distance: float,
) -> Figure:
    for view in views:
        if view not in VIEWS:
            raise ValueError(f"draw_scene: view must be one of {VIEWS}, got {view!r}")
    xyz = _check_inputs(coord, values_list)
    idx = _select(xyz, max_points, seed)
    pts = xyz[idx]
    nrows, ncols = (len(views), len(values_list)) if views_along_rows else (1, len(views))
    fig = new_figure(figsize or (_PANEL_INCHES * ncols, _PANEL_INCHES * nrows), dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for j, (values, panel_title) in enumerate(zip(values_list, titles)):
        rgb, norm, label = _colours(values, xyz, idx, ignore_index, cmap)
        for i, view in enumerate(views):
            ax = axes[i, j] if views_along_rows else axes[0, i]
            _draw_panel(ax, pts, rgb, view, point_size, elev, azim, distance)
            parts = [panel_title] if panel_title else []
            if len(views) > 1:
                parts.append(f"{view} view" if view == "top" else view)
            ax.set_title(" | ".join(parts))
            if norm is not None and i == len(views) - 1:
                fig.colorbar(ScalarMappable(norm, matplotlib.colormaps[cmap]), ax=ax, shrink=0.8, label=label)
    if title:
        fig.suptitle(title)
    return fig


def draw_scene(
    coord: np.ndarray,
    values: np.ndarray | None = None,
    path: str | Path | None = None,
    *,
    view: str = "both",
    title: str | None = None,
    point_size: float | None = None,
    max_points: int = 200_000,
    seed: int = 0,
    ignore_index: int = -1,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    cmap: str = "viridis",
    elev: float = 35.0,
    azim: float = 200.0,
    distance: float = 2.0,
) -> Figure:
    """Draw a point cloud coloured by a per-point array; write a PNG when ``path`` is given.

    ``coord`` (N, 3) metres; ``values`` ids, floats or RGB (see ``colorize``), or None to colour by
    height (1st to 99th percentile of z). ``view``: ``"top"`` (x right, y up, equal aspect, highest
    point on top), ``"perspective"`` (``perspective_project`` with ``elev``, ``azim``, ``distance``,
    drawn far to near) or ``"both"`` (two panels side by side, in that order in ``fig.axes`` before
    any colour bar). Float values get a colour bar. Points with non-finite
    coordinates are left out; above ``max_points`` a random subset (seeded by ``seed``) is drawn.
    ``point_size`` is the marker area in points^2 (default: from the point count and panel size).
    Returns a ``Figure`` on an Agg canvas, outside pyplot: nothing to close.
    """
    views = ["top", "perspective"] if view == "both" else [view]
    fig = _render(
        coord, [values], [None], views, views_along_rows=False, title=None, point_size=point_size,
        max_points=max_points, seed=seed, ignore_index=ignore_index, figsize=figsize, dpi=dpi,
        cmap=cmap, elev=elev, azim=azim, distance=distance,
    )
    if title:
        if len(views) == 1:
            fig.axes[0].set_title(title)
        else:
            fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def draw_scenes(
    coord: np.ndarray,
    values_list: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: str | Path | None = None,
    *,
    view: str = "top",
    title: str | None = None,
    point_size: float | None = None,
    max_points: int = 200_000,
    seed: int = 0,
    ignore_index: int = -1,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    cmap: str = "viridis",
    elev: float = 35.0,
    azim: float = 200.0,
    distance: float = 2.0,
) -> Figure:
    """Several colourings of one scene side by side (e.g. ground truth | aligned clusters | super-voxels).

    One column a colouring, titled by ``titles``; ``view="both"`` gives a row of top views over a row of
    perspective views. Every panel draws the same subset of points. Other arguments as ``draw_scene``.
    """
    if len(values_list) != len(titles):
        raise ValueError(f"draw_scenes: {len(values_list)} colourings but {len(titles)} titles")
    if len(values_list) == 0:
        raise ValueError("draw_scenes: no colourings given")
    views = ["top", "perspective"] if view == "both" else [view]
    fig = _render(
        coord, list(values_list), list(titles), views, views_along_rows=True, title=title,
        point_size=point_size, max_points=max_points, seed=seed, ignore_index=ignore_index,
        figsize=figsize, dpi=dpi, cmap=cmap, elev=elev, azim=azim, distance=distance,
    )
    if path is not None:
        save_figure(fig, path)
    return fig
