"""Per-point colours: a fixed palette for integer ids, a colormap for floats, RGB passed through."""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import Colormap, hsv_to_rgb

IGNORE_COLOR: tuple[int, int, int] = (128, 128, 128)

# Greedy max-min distance in CIELAB over an sRGB grid, seeded with red, blue, green, kept away from
# grey (the ignore colour) and white (the background): ids 0-19 are at least 56 apart in RGB.
PALETTE: np.ndarray = np.array(
    [
        (230, 25, 75), (60, 120, 230), (60, 180, 75), (255, 180, 0), (255, 0, 255),
        (0, 0, 255), (105, 0, 75), (0, 255, 0), (255, 150, 225), (120, 60, 0),
        (0, 240, 225), (0, 60, 0), (60, 0, 150), (195, 225, 0), (15, 195, 255),
        (255, 165, 135), (255, 90, 0), (135, 135, 15), (255, 0, 165), (0, 60, 105),
        (195, 225, 150), (180, 105, 255), (0, 135, 105), (75, 45, 45), (180, 90, 105),
        (195, 195, 255), (135, 105, 165), (165, 15, 150), (0, 75, 255), (240, 195, 105),
        (0, 60, 60), (210, 120, 30),
    ],
    dtype=np.uint8,
)
PALETTE.setflags(write=False)

_GOLDEN = 0.6180339887498949


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array-like; torch tensors (any device) are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _hashed_colors(ids: np.ndarray) -> np.ndarray:
    """Colours for ids beyond the palette: golden-ratio hue steps, with saturation and value cycling
    on other periods so that ids whose hues come close still differ."""
    k = ids.astype(np.float64)
    hue = np.mod(k * _GOLDEN + 0.11, 1.0)
    sat = 0.55 + 0.45 * np.mod(k * 0.381966 + 0.3, 1.0)
    val = 0.60 + 0.35 * np.mod(k * 0.7548777 + 0.5, 1.0)
    rgb = hsv_to_rgb(np.stack([hue, sat, val], axis=-1))
    return np.round(rgb * 255.0).astype(np.uint8)


def label_colors(ids: np.ndarray, *, ignore_index: int = -1, num_colors: int | None = None) -> np.ndarray:
    """uint8 ``ids.shape + (3,)`` colours, the same for the same id in every call.

    Ids ``0 .. 31`` take the fixed ``PALETTE``; other ids (larger or negative) take golden-ratio hues;
    ``ignore_index`` is grey ``(128, 128, 128)``. ``num_colors``, when given, states that the ids lie in
    ``[0, num_colors)`` (plus ``ignore_index``) and any other id raises ``ValueError``.
    """
    arr = to_numpy(ids)
    if arr.dtype.kind not in "biu":
        raise ValueError(f"label_colors: ids must be integers, got dtype {arr.dtype}")
    k = arr.astype(np.int64)
    ignore = k == ignore_index
    if num_colors is not None:
        bad = ~ignore & ((k < 0) | (k >= num_colors))
        if bad.any():
            raise ValueError(
                f"label_colors: {int(bad.sum())} ids outside [0, {num_colors}) and not ignore_index "
                f"{ignore_index} (e.g. {int(k[bad].flat[0])})"
            )
    out = np.empty(k.shape + (3,), dtype=np.uint8)
    in_palette = (k >= 0) & (k < len(PALETTE))
    out[in_palette] = PALETTE[k[in_palette]]
    rest = ~in_palette
    if rest.any():
        out[rest] = _hashed_colors(k[rest])
    out[ignore] = IGNORE_COLOR
    return out


def value_colors(
    values: np.ndarray,
    *,
    cmap: str | Colormap = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """uint8 ``values.shape + (3,)`` colours of a float array along a matplotlib colormap.

    ``vmin`` / ``vmax`` default to the finite minimum and maximum; values outside are clipped to the
    colormap's ends; NaN is grey; a constant array takes the colormap's middle.
    """
    v = to_numpy(values).astype(np.float64)
    finite = np.isfinite(v)
    lo = float(np.min(v[finite])) if vmin is None and finite.any() else vmin
    hi = float(np.max(v[finite])) if vmax is None and finite.any() else vmax
    lo = 0.0 if lo is None else float(lo)
    hi = 1.0 if hi is None else float(hi)
    if hi > lo:
        t = (v - lo) / (hi - lo)
    else:
        t = np.full_like(v, 0.5)
    t = np.clip(np.nan_to_num(t, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    colormap = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    out = np.round(colormap(t)[..., :3] * 255.0).astype(np.uint8)
    out[np.isnan(v)] = IGNORE_COLOR
    return out


def colorize(values: np.ndarray, *, ignore_index: int = -1) -> np.ndarray:
    """uint8 ``(N, 3)`` colours for any per-point array.

    Integer or bool ``(N,)`` -> ``label_colors``; float ``(N,)`` -> ``value_colors``; ``(N, 3)`` or
    ``(N, 4)`` is RGB(A), returned as uint8 colours as they are: floats with a maximum of at most 1 are
    read as ``[0, 1]``, anything else as 0-255; alpha is dropped.
    """
    v = to_numpy(values)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim == 1:
        if v.dtype.kind in "biu":
            return label_colors(v, ignore_index=ignore_index)
        if v.dtype.kind == "f":
            return value_colors(v)
        raise ValueError(f"colorize: cannot colour values of dtype {v.dtype}")
    if v.ndim == 2 and v.shape[1] in (3, 4):
        rgb = v[:, :3]
        if rgb.dtype == np.uint8:
            return np.ascontiguousarray(rgb)
        if rgb.dtype.kind not in "biuf":
            raise ValueError(f"colorize: cannot read RGB values of dtype {rgb.dtype}")
        is_unit = v.dtype.kind == "f" and rgb.size > 0 and np.nanmax(rgb) <= 1.0
        rgb = rgb.astype(np.float64) * (255.0 if is_unit else 1.0)
        return np.round(np.clip(np.nan_to_num(rgb, nan=128.0), 0.0, 255.0)).astype(np.uint8)
    raise ValueError(f"colorize: expected (N,) ids/values or (N, 3) RGB, got shape {v.shape}")
