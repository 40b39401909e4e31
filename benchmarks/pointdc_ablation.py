"""PointDC's Table 4 on the synthetic rooms: each ingredient's share of the final mIoU.

Rows (each the mean of ``--seeds`` seeds, Hungarian-matched on the validation rooms):

1. random clustering: K-means (Eq. 8) on the features of an untrained backbone;
2. CMD: K-means on the features distilled from the 2D teacher (Eq. 7);
3. + basic SVC: training on super-voxel K-means labels under augmentation (Eq. 8, 12),
   learnable classifier;
4. + non-parametric classifier (Eq. 9);
5. + super-voxel pooling (Eq. 10): the full method.

Runs the quickstart recipes (``experiments/quickstart/pointdc_{cmd,svc}.yaml``) through the CLI with
``--seed_everything`` per seed; sizes and epochs are flags. Prints the table and appends one JSON row
per configuration and seed to benchmarks/results/pointdc_ablation.jsonl.

    python benchmarks/pointdc_ablation.py --seeds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from unsup3d.cli import Unsup3DCLI  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "experiments" / "quickstart"

ROWS = [
    ("random clustering", None),
    ("CMD", None),
    ("+ basic SVC", {"nonparametric": "false", "superpoint_pooling": "false"}),
    ("+ non-parametric classifier", {"nonparametric": "true", "superpoint_pooling": "false"}),
    ("+ super-voxel pooling", {"nonparametric": "true", "superpoint_pooling": "true"}),
]


def _run(subcommand: str, config: Path, args: list[str]) -> Unsup3DCLI:
    print(f"--- unsup3d {subcommand} --config {config.name} {' '.join(args)}", flush=True)
    return Unsup3DCLI(args=[subcommand, "--config", str(config), *args])


def _val(cli: Unsup3DCLI) -> tuple[float, float]:
    m = cli.trainer.callback_metrics
    return float(m["val/miou"]), float(m["val/acc"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--cmd-epochs", type=int, default=None, help="override the quickstart CMD epochs")
    p.add_argument("--svc-epochs", type=int, default=None, help="override the quickstart SVC epochs")
    args = p.parse_args()

    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in ROWS}
    for seed in range(args.seeds):
        common = ["--seed_everything", str(seed), "--trainer.enable_progress_bar", "false"]
        cmd_args = [*common, "--trainer.logger", "false"]
        if args.cmd_epochs is not None:
            cmd_args += ["--trainer.max_epochs", str(args.cmd_epochs)]
        svc_common = [*common, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
                      "--trainer.callbacks", "[]", "--model.init_args.seed", str(seed)]  # fmt: skip
        if args.svc_epochs is not None:
            svc_common += ["--trainer.max_epochs", str(args.svc_epochs)]
        t0 = time.perf_counter()
        random_row = _run(
            "validate", QUICK / "pointdc_svc.yaml", [*svc_common, "--model.init_args.init_checkpoint", "null"]
        )
        results["random clustering"].append(_val(random_row))
        cmd = _run("fit", QUICK / "pointdc_cmd.yaml", cmd_args)
        ckpt = cmd.trainer.checkpoint_callback.last_model_path
        with_cmd = [*svc_common, "--model.init_args.init_checkpoint", ckpt]
        results["CMD"].append(_val(_run("validate", QUICK / "pointdc_svc.yaml", with_cmd)))
        for name, switches in ROWS[2:]:
            extra = [a for k, v in switches.items() for a in (f"--model.init_args.{k}", v)]
            results[name].append(_val(_run("fit", QUICK / "pointdc_svc.yaml", [*with_cmd, *extra])))
        del cmd
        for name, _ in ROWS:
            miou, acc = results[name][-1]
            write_row("pointdc_ablation", {"row": name, "seed": seed, "miou": miou, "acc": acc,
                                           "seconds_all_rows": time.perf_counter() - t0})  # fmt: skip

    print(f"\nPointDC Table 4 on the synthetic rooms, mean (std) over {args.seeds} seeds, %")
    print(f"{'':32s} {'mIoU':>14s} {'Acc':>14s}")
    for name, _ in ROWS:
        miou, acc = (np.array(results[name]) * 100).T
        print(f"{name:32s} {miou.mean():6.2f} ({miou.std():4.2f}) {acc.mean():6.2f} ({acc.std():4.2f})")


if __name__ == "__main__":
    main()
