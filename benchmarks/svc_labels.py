"""What Table 4's SVC rows train on: PointDC's pseudo labels (Eq. 8, Eq. 9, Eq. 9 + 10) from the SAME
centroids, each against the ground truth and against each other, on the training rooms.

One clustering pass of a network (``--init-checkpoint``, e.g. CMD's; default an untrained one) over
the training scenes of the quickstart SVC recipe's data (``--data-root``): spherical K-means of the
units' mean features (Eq. 8), then

- ``eq8``: every point takes its unit's K-means assignment ("+ basic SVC"),
- ``eq9``: every point its nearest centroid by cosine ("+ non-parametric classifier"),
- ``eq9+10``: Eq. 9's soft assignments averaged over each unit, then the arg-max (the full method),

for each kind of unit (``--units``: the dataset's super-voxels and the grown regions). Prints each
labelling's Hungarian mIoU / accuracy on the training rooms, how often Eq. 9 and Eq. 9 + 10 agree
with Eq. 8 point for point, and the share of labelled points not of their unit's majority class (the
units' impurity: the accuracy a per-unit labelling loses whatever it does).

The finding it documents (README, Table 4): with softmax temperature 1 over cosines in [-1, 1] the
soft assignments are nearly linear in the cosine, so their average over a unit ranks the centroids as
the unit's mean feature does, and Eq. 9 + 10 gives back Eq. 8's labels (99.5 % of points on the
quickstart rooms). The last two rows of Table 4 then differ from "+ basic SVC" by the classifier
(fixed to the centroids, Eq. 9) and not by the labels.

    python benchmarks/svc_labels.py --init-checkpoint outputs/quickstart/cmd/checkpoints/last.ckpt \\
        --data-root data/quickstart --json labels.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from unsup3d.clustering import kmeans  # noqa: E402
from unsup3d.data.superpoints import superpoint_purity  # noqa: E402
from unsup3d.metrics import HungarianMIoU  # noqa: E402
from unsup3d.pointdc.clustering_pass import (  # noqa: E402
    PseudoLabels,
    point_labels,
    superpoint_features,
    superpoint_tables,
)

RECIPE = Path(__file__).resolve().parent.parent / "experiments" / "quickstart" / "pointdc_svc.yaml"
UNIT_FILES = {"superpoint": "superpoint.npy", "region": "region.npy"}


def label_table(labels: torch.Tensor, num_points: int) -> torch.Tensor:
    """A scene's label table (indexed by stored point row) padded with -1 to ``num_points``."""
    out = torch.full((num_points,), -1, dtype=torch.long)
    n = min(num_points, len(labels))
    out[:n] = labels[:n].long()
    return out


def compare(cli_args: list[str], units: str, seed: int) -> dict[str, dict]:
    """The three labellings of one clustering pass over ``units``: their scores and agreements."""
    from unsup3d.cli import Unsup3DCLI

    args = ["--config", str(RECIPE), *cli_args, "--data.init_args.units", units]
    cli = Unsup3DCLI(args=args, run=False)
    dm, model = cli.datamodule, cli.model
    dm.prepare_data()
    dm.setup("fit")
    device = torch.device("cpu")
    model.backbone.eval()
    feats, scenes, ids = superpoint_features(model.backbone, dm.cluster_dataloader(), device)
    num_clusters = model.num_clusters  # the recipe's K and Lloyd iterations
    result = kmeans(feats, num_clusters, niter=model.hparams.kmeans_iters, spherical=True, seed=seed)
    per_point = point_labels(model.backbone, dm.cluster_dataloader(), result.centroids, device, False)
    pooled = point_labels(model.backbone, dm.cluster_dataloader(), result.centroids, device, True)
    num_classes = int(model.hparams.num_classes)
    metrics = {name: HungarianMIoU(num_classes, num_clusters) for name in ("eq8", "eq9", "eq9+10")}
    agree = {"eq9": [0, 0], "eq9+10": [0, 0]}
    impure = [0.0, 0]  # points outside their unit's majority class, labelled points in a unit
    # Eq. 8 as training reads it: the super-voxel tables of basic SVC, looked up per point
    eq8_labels = PseudoLabels(superpoint_tables(scenes, ids, result.assignments), {})
    for i, scene_dir in enumerate(dm.scene_dirs("train")):
        segment = torch.from_numpy(np.load(Path(scene_dir) / "segment.npy").astype(np.int64))
        unit = torch.from_numpy(np.load(Path(scene_dir) / UNIT_FILES[units]).astype(np.int64))
        n = len(segment)
        zeros, rows = torch.zeros(n, dtype=torch.long), torch.arange(n)
        eq8 = eq8_labels.lookup(torch.tensor([i]), zeros, unit, rows)
        labels = {
            "eq8": eq8,
            "eq9": label_table(per_point[i], len(segment)),
            "eq9+10": label_table(pooled[i], len(segment)),
        }
        for name, lab in labels.items():
            ok = (lab >= 0) & (segment >= 0) & (segment < num_classes)
            metrics[name].update(lab[ok], segment[ok])
        has = eq8 >= 0
        for name in agree:
            agree[name][0] += int((labels[name][has] == eq8[has]).sum())
            agree[name][1] += int(has.sum())
        counted = int(((unit >= 0) & (segment >= 0)).sum())
        if counted:
            impure[0] += (1.0 - superpoint_purity(unit.numpy(), segment.numpy())) * counted
            impure[1] += counted
    out = {}
    for name, metric in metrics.items():
        r = metric.compute()
        row = {"miou": float(r["miou"]), "acc": float(r["acc"]), "units": units,
               "unit_impurity": impure[0] / max(impure[1], 1)}  # fmt: skip
        if name in agree:
            row["agreement_with_eq8"] = agree[name][0] / max(agree[name][1], 1)
        out[name] = row
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--init-checkpoint", default="null", help="the network (default: untrained)")
    p.add_argument("--data-root", default="data/quickstart", help="the SVC recipe's data_root")
    p.add_argument("--units", nargs="+", default=["superpoint", "region"], choices=sorted(UNIT_FILES))
    p.add_argument("--seeds", type=int, default=1, help="K-means seeds")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    cli_args = [
        "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--data.init_args.data_root", args.data_root,
        "--model.init_args.init_checkpoint", args.init_checkpoint,
    ]  # fmt: skip
    rows = []
    for units in args.units:
        for seed in range(args.seeds):
            for name, row in compare(cli_args, units, seed).items():
                full = {"row": f"{name} ({units})", "seed": seed, **row, "checkpoint": args.init_checkpoint}
                write_row("svc_labels", full)
                rows.append(full)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"\n{'labels (units)':24s} {'mIoU %':>7s} {'Acc %':>7s} {'= Eq. 8 %':>10s} {'impure %':>9s}")
    for r in rows:
        same = f"{100 * r['agreement_with_eq8']:10.2f}" if "agreement_with_eq8" in r else f"{'-':>10s}"
        impure = 100 * r["unit_impurity"]
        print(f"{r['row']:24s} {100 * r['miou']:7.2f} {100 * r['acc']:7.2f} {same} {impure:9.2f}")


if __name__ == "__main__":
    main()
