"""ScanNet label tables and the NYU40 -> ScanNet-20 benchmark map.

ScanNet names objects freely (``segGroups[].label`` in ``*.aggregation.json``, e.g. "office chair");
the release's label table maps each raw name to an NYU40 id, and the 20 benchmark classes are a
subset of NYU40. Two releases of the table exist:

- ``scannetv2-labels.combined.tsv`` (v2): columns ``id  raw_category  category  count  nyu40id ...``;
  ``*_vh_clean_2.labels.ply`` of this release stores NYU40 ids in its ``label`` field.
- ``scannet-labels.combined.tsv`` (older): the raw name is in ``category`` (there is no
  ``raw_category``); that release's ``labels.ply`` stores the table's own ``id``, which must go
  through the table's ``id -> nyu40id`` to reach NYU40.

The release is told by the columns, not the file name, so a renamed table is still read right.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from unsup3d.data.formats._checks import PathLike, existing_file

IGNORE_INDEX = -1

#: The 20 classes of the ScanNet semantic-segmentation benchmark, in benchmark order.
SCANNET20_CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink",
    "bathtub", "otherfurniture",
)  # fmt: skip

#: NYU40 id of each ScanNet-20 class: ScanNet-20 id ``i`` is NYU40 id ``SCANNET20_NYU40_IDS[i]``.
SCANNET20_NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)

#: The NYU40 class names, NYU40 id ``i`` at index ``i - 1`` (id 0 is "unannotated").
NYU40_CLASS_NAMES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refrigerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip

NUM_NYU40 = 40

#: File names of the label table, newest release first.
LABEL_TABLE_NAMES: tuple[str, ...] = ("scannetv2-labels.combined.tsv", "scannet-labels.combined.tsv")

_NYU40_TO_SCANNET20 = np.full(NUM_NYU40 + 1, IGNORE_INDEX, dtype=np.int64)
_NYU40_TO_SCANNET20[list(SCANNET20_NYU40_IDS)] = np.arange(len(SCANNET20_NYU40_IDS))


def nyu40_to_scannet20(nyu40: np.ndarray) -> np.ndarray:
    """Map NYU40 ids to ScanNet-20 ids (int64); ids outside the 20 classes, 0 included, give -1.

    Raises ``ValueError`` on an id outside 0..40.
    """
    ids = np.asarray(nyu40, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > NUM_NYU40):
        raise ValueError(f"NYU40 ids must lie in 0..{NUM_NYU40}; got values in [{ids.min()}, {ids.max()}]")
    return _NYU40_TO_SCANNET20[ids]


@dataclass(frozen=True)
class LabelTable:
    """A parsed ScanNet label table.

    ``name_to_nyu40`` maps a raw object name (as written in ``segGroups[].label``) to its NYU40 id
    (0 where the table gives none); ``id_to_nyu40`` maps the table's own ``id`` column, when it has
    one. ``labels_ply_ids`` says what this release's ``labels.ply`` stores: ``"nyu40"`` (v2) or
    ``"table"`` (older releases: the table's ``id``).
    """

    path: Path
    raw_name_column: str
    name_to_nyu40: dict[str, int]
    id_to_nyu40: dict[int, int] | None
    labels_ply_ids: Literal["nyu40", "table"]

    def names_to_nyu40(self, names: list[str]) -> np.ndarray:
        """NYU40 id of each raw name (int64); a name the table lacks gives 0 (unannotated)."""
        return np.array([self.name_to_nyu40.get(n, 0) for n in names], dtype=np.int64)

    def table_ids_to_nyu40(self, ids: np.ndarray, source: PathLike) -> np.ndarray:
        """Map the table's own ids (as stored by an older ``labels.ply``) to NYU40 (int64).

        Id 0 (unannotated) and ids the table lacks give 0. ``source`` names the file the ids came
        from in the error raised when this table has no ``id`` column.
        """
        if self.id_to_nyu40 is None:
            raise ValueError(
                f"{source}: its labels are label-table ids, but {self.path} has no 'id' column to map them; "
                "use a table with an 'id' column or the scene's aggregation.json + segs.json"
            )
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size == 0:
            return ids
        lut = np.zeros(max(int(ids.max()), max(self.id_to_nyu40, default=0)) + 1, dtype=np.int64)
        for table_id, nyu in self.id_to_nyu40.items():
            if table_id >= 0:
                lut[table_id] = nyu
        nyu = lut[np.clip(ids, 0, None)]
        nyu[ids <= 0] = 0
        return nyu


def read_label_table(path: PathLike) -> LabelTable:
    """Parse a ScanNet label table (tab-separated, one header line), either release.

    Raises ``ValueError`` naming the file and line when the raw-name or ``nyu40id`` column is
    missing, or an id is not an integer or outside NYU40's 0..40.
    """
    p = existing_file(path)
    with p.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows:
        raise ValueError(f"{p}: empty label table")
    header = [h.strip() for h in rows[0]]
    if "raw_category" in header:
        raw_col, release = "raw_category", "nyu40"
    elif "category" in header:
        raw_col, release = "category", "table"
    else:
        raise ValueError(
            f"{p}: label table has neither a 'raw_category' nor a 'category' column (header {header})"
        )
    if "nyu40id" not in header:
        raise ValueError(f"{p}: label table has no 'nyu40id' column (header {header})")
    i_raw, i_nyu = header.index(raw_col), header.index("nyu40id")
    i_id = header.index("id") if "id" in header else None

    name_to_nyu40: dict[str, int] = {}
    id_to_nyu40: dict[int, int] | None = {} if i_id is not None else None
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        nyu = _int_cell(row, i_nyu, p, lineno, "nyu40id", default=0)
        if not 0 <= nyu <= NUM_NYU40:
            raise ValueError(f"{p}:{lineno}: nyu40id {nyu} is outside 0..{NUM_NYU40}")
        name = row[i_raw] if i_raw < len(row) else ""
        # The first row of a repeated name wins, as in Pointcept's lookup.
        name_to_nyu40.setdefault(name, nyu)
        if id_to_nyu40 is not None:
            table_id = _int_cell(row, i_id, p, lineno, "id", default=None)
            if table_id is not None:
                id_to_nyu40.setdefault(table_id, nyu)
    return LabelTable(
        path=p,
        raw_name_column=raw_col,
        name_to_nyu40=name_to_nyu40,
        id_to_nyu40=id_to_nyu40,
        labels_ply_ids=release,
    )


def _int_cell(row: list[str], i: int, p: Path, lineno: int, column: str, default: int | None) -> int | None:
    cell = row[i].strip() if i < len(row) else ""
    if not cell:
        return default  # the older table leaves nyu40id blank for a few names
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"{p}:{lineno}: column {column!r} holds {cell!r}, not an integer") from None


def find_label_table(scene_dir: PathLike) -> Path | None:
    """The label table nearest to a scene: in the scene folder or any parent, v2 name first.

    A ScanNet download keeps it at the dataset root, beside ``scans/``. Returns None when there is
    none.
    """
    d = Path(scene_dir).resolve()
    for folder in (d, *d.parents):
        for name in LABEL_TABLE_NAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None
