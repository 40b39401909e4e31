"""S3DIS rooms (``Stanford3dDataset_v1.2``) from their per-object annotation files.

A room ``Area_<n>/<room>/`` has ``Annotations/<class>_<k>.txt``, one file an object, each line
``x y z r g b`` (metres, 0..255). The 13 classes are those of the benchmark; the raw ``stairs``
objects count as clutter, as in Pointcept. Instance ids number the annotation files of a room in
sorted file-name order (Pointcept's numbering). Area 5 is the validation area. Points carry no
normals: PointDC's S3DIS super-voxels are built from the bare points.

One real file is malformed: ``Area_5/hallway_6/Annotations/ceiling_1.txt`` has a stray character
on line 180389. By default a bad line raises ``ValueError`` naming the file and line; with
``skip_bad_lines=True`` such lines are dropped with a warning that names them.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from unsup3d.data.formats._checks import PathLike, check_finite, existing_file

IGNORE_INDEX = -1

#: The 13 S3DIS classes, in benchmark order.
S3DIS_CLASS_NAMES: tuple[str, ...] = (
    "ceiling", "floor", "wall", "beam", "column", "window", "door", "table", "chair", "sofa",
    "bookcase", "board", "clutter",
)  # fmt: skip
CLUTTER = S3DIS_CLASS_NAMES.index("clutter")
#: Raw annotation names outside the 13 classes, and the class each counts as.
_RAW_ALIASES = {"stairs": "clutter"}

#: The standard protocol: train on areas 1-4 and 6, validate on area 5.
S3DIS_AREAS = {"train": (1, 2, 3, 4, 6), "val": (5,)}
VALIDATION_AREA = 5

_ANNOTATION_NAME = re.compile(r"^(?P<cls>[A-Za-z]+)_(?P<k>\d+)$")


def read_annotation(path: PathLike, *, skip_bad_lines: bool = False) -> np.ndarray:
    """One annotation file as float64 ``(N, 6)``: ``x y z r g b``; an empty file gives ``(0, 6)``.

    Raises ``ValueError`` naming the file and line on a line that is not six numbers (unless
    ``skip_bad_lines``), and naming the file on non-finite coordinates or colours outside 0..255.
    """
    p = existing_file(path)
    if p.stat().st_size == 0:
        return np.zeros((0, 6))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # loadtxt's "input contained no data"
            data = np.loadtxt(p, dtype=np.float64, ndmin=2, comments=None)
        if data.shape[1] != 6 and data.size:
            raise ValueError
    except ValueError:
        # The C parser says little about where; find the bad lines in Python (rare, so slow is fine).
        data = _parse_lines(p, skip_bad_lines)
    if data.size == 0:
        return np.zeros((0, 6))
    check_finite(data, p, "points")
    rgb = data[:, 3:6]
    if rgb.min() < 0 or rgb.max() > 255:
        raise ValueError(f"{p}: colours span [{rgb.min()}, {rgb.max()}], outside 0..255")
    return data


def _parse_lines(p: Path, skip_bad_lines: bool) -> np.ndarray:
    rows, bad = [], []
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            tokens = raw.split()
            if not tokens:
                continue
            try:
                if len(tokens) != 6:
                    raise ValueError(f"expected 6 numbers, found {len(tokens)}")
                rows.append([float(t) for t in tokens])
            except ValueError as err:
                if not skip_bad_lines:
                    raise ValueError(f"{p}:{lineno}: malformed line {raw.strip()[:80]!r} ({err})") from None
                bad.append(lineno)
    if bad:
        warnings.warn(
            f"{p}: skipped {len(bad)} malformed line(s): {bad[:10]}{' ...' if len(bad) > 10 else ''}",
            stacklevel=3,
        )
    return np.asarray(rows, dtype=np.float64).reshape(-1, 6)


def class_of_annotation(path: PathLike) -> int:
    """The class id of an annotation file from its name ``<class>_<k>.txt``.

    Raises ``ValueError`` naming the file for a name of another form or an unknown class.
    """
    p = Path(path)
    m = _ANNOTATION_NAME.match(p.stem)
    if m is None:
        raise ValueError(f"{p}: annotation file names must be <class>_<k>.txt")
    name = _RAW_ALIASES.get(m["cls"], m["cls"])
    if name not in S3DIS_CLASS_NAMES:
        raise ValueError(f"{p}: unknown S3DIS class {m['cls']!r} (known: {S3DIS_CLASS_NAMES} and 'stairs')")
    return S3DIS_CLASS_NAMES.index(name)


def read_room(
    room_dir: PathLike, *, ignore_clutter: bool = False, skip_bad_lines: bool = False
) -> dict[str, np.ndarray]:
    """Read a room's annotation files into ``coord`` float32 (N, 3), ``color`` uint8 (N, 3),
    ``segment`` int64 (0..12, clutter -> -1 when ``ignore_clutter``: the 12-class protocol) and
    ``instance`` int64 (index of the annotation file in sorted order).

    Raises ``FileNotFoundError`` naming the ``Annotations`` folder when it is absent and
    ``ValueError`` naming the room when it holds no points.
    """
    ann_dir = Path(room_dir) / "Annotations"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{ann_dir}: no Annotations folder")
    files = sorted(ann_dir.glob("*.txt"), key=lambda f: f.name)
    coords, colors, segments, instances = [], [], [], []
    for object_id, f in enumerate(files):
        cls = class_of_annotation(f)
        pts = read_annotation(f, skip_bad_lines=skip_bad_lines)
        coords.append(pts[:, :3])
        colors.append(pts[:, 3:6])
        if ignore_clutter and cls == CLUTTER:
            cls = IGNORE_INDEX
        segments.append(np.full(len(pts), cls, np.int64))
        instances.append(np.full(len(pts), object_id, np.int64))
    if not files or sum(len(c) for c in coords) == 0:
        raise ValueError(f"{Path(room_dir)}: empty room: no points in {ann_dir}")
    return {
        "coord": np.concatenate(coords).astype(np.float32),
        "color": np.rint(np.concatenate(colors)).astype(np.uint8),
        "segment": np.concatenate(segments),
        "instance": np.concatenate(instances),
    }


def list_rooms(root: PathLike, areas: Iterable[int] = (1, 2, 3, 4, 5, 6)) -> list[Path]:
    """Room folders (those with an ``Annotations`` folder) of the given areas under the S3DIS root,
    sorted by area then room name. Raises ``FileNotFoundError`` naming a missing ``Area_<n>``."""
    rooms = []
    for a in areas:
        area_dir = Path(root) / f"Area_{int(a)}"
        if not area_dir.is_dir():
            raise FileNotFoundError(f"{area_dir}: S3DIS area folder not found")
        rooms += sorted((d for d in area_dir.iterdir() if (d / "Annotations").is_dir()), key=lambda d: d.name)
    return rooms
