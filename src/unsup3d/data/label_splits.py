"""Label-efficient fine-tuning splits (STSSL Sec. 4.2, Table 2): 0.1 %, 1 %, 10 % or 100 % of the
labelled training scans, drawn by seed and saved to a JSON split file.

Each sequence contributes ``max(1, floor(n * fraction))`` of its ``n`` scans, drawn uniformly without
replacement by a generator seeded with ``(seed, sequence)``. On SemanticKITTI's 19,130 training scans
this gives the release's counts: 17 scans at 0.1 %, 188 at 1 %, 1,912 at 10 %.

A split file is JSON: ``{"fraction", "seed", "num_available", "frames": {sequence: [index, ...]}}``,
indices being positions of scans within their sequence (sorted).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from unsup3d.data.prepare import write_json_atomic

__all__ = ["draw_split", "read_split", "restrict_to_split", "split_size", "write_split"]

Split = dict[str, list[int]]


def split_size(num_scans: int, fraction: float) -> int:
    """Scans a sequence of ``num_scans`` contributes: all for ``fraction >= 1``, else at least one."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label split: fraction must be in (0, 1], got {fraction}")
    if num_scans <= 0:
        return 0
    if fraction >= 1:
        return num_scans
    # The epsilon keeps float products such as 0.01 * 4600 = 45.99999... on the intended side.
    return min(num_scans, max(1, math.floor(num_scans * fraction + 1e-9)))


def draw_split(frames: Mapping[str, Sequence[int]], fraction: float, seed: int = 0) -> Split:
    """The labelled scans of a split: for each sequence, ``split_size`` of its frame indices.

    ``frames`` maps a sequence name to the indices of its available scans. The draw of a sequence
    depends only on ``(seed, sequence name, its indices)``, not on the other sequences.
    """
    out: Split = {}
    for seq in sorted(frames):
        available = np.asarray(sorted(int(i) for i in frames[seq]), dtype=np.int64)
        k = split_size(len(available), fraction)
        if k == 0:
            continue
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(str(seq).encode())]))
        out[seq] = sorted(int(i) for i in rng.choice(available, size=k, replace=False))
    return out


def write_split(path: str | Path, split: Split, fraction: float, seed: int, num_available: int) -> None:
    """Save ``split`` as JSON (atomically)."""
    write_json_atomic(
        Path(path),
        {"fraction": fraction, "seed": seed, "num_available": num_available, "frames": split},
    )


def read_split(path: str | Path) -> Split:
    """The ``{sequence: [index, ...]}`` of a split file; ``ValueError`` naming the file if malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        frames = data["frames"]
        split = {str(seq): sorted(int(i) for i in idx) for seq, idx in frames.items()}
    except FileNotFoundError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a label split file ({type(e).__name__}: {e})") from e
    if any(i < 0 for idx in split.values() for i in idx):
        raise ValueError(f"{path}: negative frame index in the label split")
    return split


def restrict_to_split(
    available: Sequence[tuple[str, int]], path: str | Path, fraction: float | None, seed: int = 0
) -> set[tuple[str, int]]:
    """The ``(sequence, index)`` of ``available`` in the split file ``path``; with ``fraction``, a
    missing file is drawn (:func:`draw_split`) and written first. Every process draws the same split
    and the write is atomic, so concurrent writers are harmless."""
    path = Path(path)
    if path.is_file():
        split = read_split(path)
    elif fraction is None:
        raise FileNotFoundError(f"{path}: label split file not found")
    else:
        frames: dict[str, list[int]] = {}
        for seq, index in available:
            frames.setdefault(seq, []).append(index)
        split = draw_split(frames, fraction, seed)
        write_split(path, split, fraction, seed, len(available))
    wanted = {(seq, i) for seq, idx in split.items() for i in idx}
    missing = sorted(wanted - set(available))
    if missing:
        raise ValueError(f"{path}: the label split names frames that are not available, e.g. {missing[:3]}")
    return wanted
