"""ScanNet 2D frames as exported from ``<scene>.sens`` by ScanNet's SensReader.

An export folder holds ``color/<i>.jpg`` (RGB, 1296 x 968), ``depth/<i>.png`` (uint16 millimetres,
640 x 480, 0 where there is no measurement), ``pose/<i>.txt`` (4 x 4 camera-to-world; tracking
failures are written as ``-inf`` / ``nan``) and ``intrinsic/intrinsic_{color,depth}.txt`` (4 x 4).
These feed PointDC's Cross-Modal Distillation: 2D features back-projected onto the points (Eq. 3-5).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from unsup3d.data.formats._checks import PathLike, existing_file, parse_floats

#: SensReader stores depth in millimetres.
DEPTH_SCALE = 1000.0
_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I")


@dataclass(frozen=True)
class Intrinsics:
    """4 x 4 intrinsic matrices of the colour and the depth camera (float64)."""

    color: np.ndarray
    depth: np.ndarray


@dataclass(frozen=True)
class Frame:
    """One RGB-D frame: ``color`` uint8 (H, W, 3), ``depth`` float32 metres (h, w), ``pose`` float64
    4 x 4 camera-to-world, and the scene's intrinsics."""

    index: int
    color: np.ndarray
    depth: np.ndarray
    pose: np.ndarray
    intrinsics: Intrinsics


def _open_image(path: PathLike) -> Image.Image:
    p = existing_file(path)
    try:
        img = Image.open(p)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{p}: unreadable image ({err})") from None
    return img


def read_color(path: PathLike) -> np.ndarray:
    """A colour frame as uint8 ``(H, W, 3)`` RGB."""
    img = _open_image(path)
    return np.asarray(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8)


def read_depth(path: PathLike, scale: float = DEPTH_SCALE) -> np.ndarray:
    """A 16-bit depth PNG as float32 metres ``(H, W)`` (stored value / ``scale``; 0 stays 0: no depth).

    Raises ``ValueError`` naming the file for an image that is not single-channel 16-bit.
    """
    img = _open_image(path)
    if img.mode not in _DEPTH_MODES:
        raise ValueError(f"{path}: depth must be a 16-bit single-channel PNG, found mode {img.mode!r}")
    raw = np.asarray(img)
    if raw.dtype.kind == "i" and raw.size and (raw.min() < 0 or raw.max() > 65535):
        raise ValueError(f"{path}: depth values outside the 16-bit range")
    return (raw.astype(np.float32) / np.float32(scale)).astype(np.float32)


def read_matrix(path: PathLike) -> np.ndarray:
    """A whitespace-separated 4 x 4 matrix (a 3 x 3 one is embedded in the identity) as float64.

    Non-finite entries are kept, so the caller can tell an invalid pose; a wrong shape or a token
    that is not a number raises ``ValueError`` naming the file (and line).
    """
    p = existing_file(path)
    rows = [
        parse_floats(line.split(), p, lineno)
        for lineno, line in enumerate(p.read_text().splitlines(), start=1)
        if line.strip()
    ]
    shape = (len(rows), len(rows[0]) if rows else 0)
    if shape not in ((4, 4), (3, 3)) or any(len(r) != shape[1] for r in rows):
        raise ValueError(
            f"{p}: expected a 4 x 4 (or 3 x 3) matrix, found rows of lengths {[len(r) for r in rows]}"
        )
    m = np.eye(4)
    m[: shape[0], : shape[1]] = np.asarray(rows, dtype=np.float64)
    return m


def read_pose(path: PathLike) -> np.ndarray:
    """A camera-to-world pose, float64 4 x 4 (possibly non-finite: see ``is_valid_pose``)."""
    return read_matrix(path)


def is_valid_pose(pose: np.ndarray) -> bool:
    """Whether a pose is usable: every entry finite (SensReader writes ``-inf`` on tracking loss)."""
    return bool(np.isfinite(pose).all())


def read_intrinsics(frames_dir: PathLike) -> Intrinsics:
    """``intrinsic/intrinsic_color.txt`` and ``intrinsic/intrinsic_depth.txt`` of an export folder."""
    d = Path(frames_dir) / "intrinsic"
    out = {}
    for cam in ("color", "depth"):
        p = d / f"intrinsic_{cam}.txt"
        m = read_matrix(p)
        if not np.isfinite(m).all():
            raise ValueError(f"{p}: intrinsics hold NaN or infinite values")
        out[cam] = m
    return Intrinsics(**out)


def frame_indices(frames_dir: PathLike) -> list[int]:
    """Indices of the exported colour frames (``color/<i>.jpg``), ascending."""
    color_dir = Path(frames_dir) / "color"
    if not color_dir.is_dir():
        raise FileNotFoundError(f"{color_dir}: no colour frames folder")
    indices = []
    for f in color_dir.glob("*.jpg"):
        if not f.stem.isdigit():
            raise ValueError(f"{f}: frame files must be named <index>.jpg")
        indices.append(int(f.stem))
    return sorted(indices)


def read_frames(frames_dir: PathLike, every: int = 1, *, depth_scale: float = DEPTH_SCALE) -> Iterator[Frame]:
    """Yield every ``every``-th exported frame (by position in index order), lazily.

    Frames whose pose is not finite are skipped with a warning naming the pose file. A missing
    depth or pose file raises ``FileNotFoundError`` naming it.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    d = Path(frames_dir)
    intrinsics = read_intrinsics(d)
    for i in frame_indices(d)[::every]:
        pose_path = d / "pose" / f"{i}.txt"
        pose = read_pose(pose_path)
        if not is_valid_pose(pose):
            warnings.warn(f"{pose_path}: pose is not finite (tracking lost); frame {i} skipped", stacklevel=2)
            continue
        yield Frame(
            index=i,
            color=read_color(d / "color" / f"{i}.jpg"),
            depth=read_depth(d / "depth" / f"{i}.png", depth_scale),
            pose=pose,
            intrinsics=intrinsics,
        )
