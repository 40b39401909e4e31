"""fp32 against bf16-mixed on two quickstarts: time and final mIoU / accuracy, side by side.

    python benchmarks/precision.py [--seeds 2] [--rows pointdc-quickstart stssl-p2c] [--json PATH]

Rows:

- ``pointdc-quickstart``: PointDC's quickstart as ``python -m unsup3d.quickstart`` runs it where no 2D
  teacher's weights are found (the teacher-free path: ``experiments/quickstart/pointdc_geometric_cmd.yaml``
  then ``pointdc_geometric_svc.yaml`` from its checkpoint); mIoU / accuracy of SVC on the validation
  rooms, the time of both stages.
- ``stssl-p2c``: ``experiments/quickstart/stssl_p2c.yaml``; mIoU / accuracy of its K-means probe on the
  validation sequence.

Each row runs with ``--trainer.precision 32-true`` and ``bf16-mixed`` back to back for every seed
(``--seed_everything``), alternating which goes first from seed to seed, in this process, each in its
own empty working folder (own checkpoints; W&B off) on data prepared once beforehand (not timed).
Prints a table of mean time and mean (std) mIoU / accuracy per row and precision; ``--json PATH``
writes one object per run (``row``, ``seed``, ``precision``, ``miou`` and ``acc`` as fractions,
``seconds``), and every run is appended to ``benchmarks/results/precision.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "src"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from benchmarks._common import run_cli, val_metrics, write_row  # noqa: E402

QUICKSTART = ROOT / "experiments/quickstart"
ROWS = ("pointdc-quickstart", "stssl-p2c")
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}


def _common(data_root: Path, precision: str, seed: int) -> list[str]:
    return [
        "--data.init_args.data_root", str(data_root), "--trainer.precision", PRECISIONS[precision],
        "--seed_everything", str(seed), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


def _without_media(config: Path) -> list[str]:
    """The recipe's checkpoint callback alone (its media callbacks need a logger)."""
    return [
        "--trainer.callbacks", json.dumps([{
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": "checkpoints/" + config.stem, "save_last": True},
        }]),
    ]  # fmt: skip


def run_row(row: str, precision: str, seed: int, data_root: Path) -> tuple[float, float, float]:
    """One run in the current (empty) folder; returns (seconds, mIoU, accuracy)."""
    common = _common(data_root, precision, seed)
    t0 = time.perf_counter()
    if row == "pointdc-quickstart":
        cmd_cfg, svc_cfg = (
            QUICKSTART / "pointdc_geometric_cmd.yaml",
            QUICKSTART / "pointdc_geometric_svc.yaml",
        )
        cmd = run_cli("fit", cmd_cfg, [*common, *_without_media(cmd_cfg)])
        ckpt = cmd.trainer.checkpoint_callback.last_model_path
        cli = run_cli(
            "fit", svc_cfg, [*common, *_without_media(svc_cfg), "--model.init_args.init_checkpoint", ckpt]
        )
    elif row == "stssl-p2c":
        cfg = QUICKSTART / "stssl_p2c.yaml"
        cli = run_cli("fit", cfg, [*common, *_without_media(cfg)])
    else:
        raise ValueError(f"unknown row {row!r}; known: {ROWS}")
    seconds = time.perf_counter() - t0
    miou, acc = val_metrics(cli)
    return seconds, miou, acc


def prepare(rows: list[str], data_root: Path) -> None:
    """Generate the rows' data (and descriptors) once, before anything is timed."""
    configs = {"pointdc-quickstart": "pointdc_geometric_svc.yaml", "stssl-p2c": "stssl_p2c.yaml"}
    from unsup3d.cli import preprocess

    for row in rows:
        preprocess(["--config", str(QUICKSTART / configs[row]), "--data.init_args.data_root", str(data_root)])


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--json", type=Path, default=None, help="write one JSON object per run here")
    p.add_argument("--data-root", type=Path, default=ROOT / "data/benchmarks/precision")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from unsup3d.cli import set_cpu_threads

    set_cpu_threads()
    data_root = args.data_root.resolve()
    prepare(args.rows, data_root)
    records: list[dict] = []
    home = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="precision_") as tmp:
        for seed in range(args.seeds):
            for row in args.rows:
                order = ["fp32", "bf16"] if seed % 2 == 0 else ["bf16", "fp32"]
                for precision in order:
                    work = Path(tmp) / f"{row}_{precision}_{seed}"
                    work.mkdir()
                    os.chdir(work)
                    try:
                        seconds, miou, acc = run_row(row, precision, seed, data_root)
                    finally:
                        os.chdir(home)
                    record = {"row": row, "seed": seed, "precision": precision, "miou": miou, "acc": acc,
                              "seconds": round(seconds, 1)}  # fmt: skip
                    print(f"=== {row} {precision} seed {seed}: {seconds:.0f} s, mIoU {miou * 100:.2f}, "
                          f"acc {acc * 100:.2f}", flush=True)  # fmt: skip
                    records.append(record)
                    write_row("precision", record)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"\nfp32 against bf16-mixed, {args.seeds} seed(s), mean (std); time summed over the run's stages")
    print(f"{'row':20s} {'precision':>9s} {'seconds':>8s} {'mIoU %':>14s} {'acc %':>14s}")
    for row in args.rows:
        for precision in PRECISIONS:
            rs = [r for r in records if r["row"] == row and r["precision"] == precision]
            sec = np.mean([r["seconds"] for r in rs])
            miou = np.array([r["miou"] for r in rs]) * 100
            acc = np.array([r["acc"] for r in rs]) * 100
            print(f"{row:20s} {precision:>9s} {sec:8.0f} {miou.mean():7.2f} ({miou.std():4.2f}) "
                  f"{acc.mean():7.2f} ({acc.std():4.2f})")  # fmt: skip
    return records


if __name__ == "__main__":
    main()
