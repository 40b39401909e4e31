"""``unsup3d import``: a folder of PLY / NPY scans into the scene-folder layout, from the shell.

    unsup3d import my_scans data/my_scenes --val-fraction 0.2 --seed 0
    unsup3d import my_scans data/my_scenes --label-map classes.json --label-field class

is :func:`unsup3d.data.import_scenes.import_scenes` (its docstring lists the accepted files). It
prints what it wrote, a line a split, and the command that trains on it. A malformed scene or
argument is one line on stderr naming it, exit 2; nothing is written for two sources with one name.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

PROG = "unsup3d import"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Write PLY / NPY scans as scene folders (<root>/<split>/<scene>/*.npy) that "
        "SceneFolderDataModule trains on.",
    )
    p.add_argument(
        "src", type=Path, help="a folder of scenes (PLY files, NPY files or scene folders), or one file"
    )
    p.add_argument("root", type=Path, help="the scene-folder root to write into")
    p.add_argument("--split", default="train", help="the split of every scene (default: train)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="share of the scenes moved to 'val' (drawn with --seed)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the validation draw (default: 0)")
    p.add_argument("--label-field", default=None, help="the PLY vertex property holding the label")
    p.add_argument(
        "--label-map",
        type=Path,
        default=None,
        help='JSON file {"raw id": class id, ...}; raw ids not in it become -1 (unlabelled)',
    )
    return p


def read_label_map(path: Path) -> dict[int, int]:
    """``{raw id: class id}`` from a JSON object of integers (keys may be strings, as JSON's are)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"--label-map {path}: {e.strerror or e}") from e
    except ValueError as e:
        raise ValueError(f"--label-map {path}: not JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(
            f'--label-map {path}: expected a JSON object {{"raw id": class id}}, got {type(data).__name__}'
        )
    try:
        return {int(k): int(v) for k, v in data.items()}
    except (TypeError, ValueError) as e:
        raise ValueError(f"--label-map {path}: keys and values must be integers ({e})") from e


def run_import(argv: Sequence[str]) -> list[Path]:
    """``unsup3d import``: parse ``argv``, import, print a summary; returns the scene folders written."""
    from unsup3d.data.import_scenes import import_scenes

    parser = _parser()
    args = parser.parse_args(list(argv))
    try:
        label_map = read_label_map(args.label_map) if args.label_map is not None else None
        written = import_scenes(
            args.src,
            args.root,
            split=args.split,
            val_fraction=args.val_fraction,
            seed=args.seed,
            label_field=args.label_field,
            label_map=label_map,
        )
    except (ValueError, FileNotFoundError) as e:
        parser.exit(2, f"{PROG}: error: {str(e).splitlines()[0]}\n")
    per_split = Counter(p.parent.name for p in written)
    print(f"imported {len(written)} scenes into {args.root}")
    for split in sorted(per_split):
        print(f"  {split:6s} {per_split[split]} scenes")
    print(
        "train on them: unsup3d fit --config experiments/pointdc_svc.yaml "
        f"--data unsup3d.pointdc.datamodules.SceneFolderDataModule --data.init_args.root {args.root} "
        "--model.init_args.init_checkpoint null --model.init_args.num_classes K"
    )
    sys.stdout.flush()
    return written
