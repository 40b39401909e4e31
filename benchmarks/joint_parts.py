"""What each half of the teacher-free joint space decides: a diagnostic of ``realscan.py``'s
``teacher-free`` row.

    python benchmarks/joint_parts.py --root ROOT [--seeds 3] [--svc-epochs 20] [--json PATH]

Trains the teacher-free SVC recipe (``experiments/quickstart/pointdc_geometric_svc.yaml``) from a random
network on ROOT's training scenes as ``realscan.py`` does (``--svc-epochs 0``: no training, the
``teacher-free-untrained`` row), then scores every validation point against the final joint centroids
``mu = [mu_f, mu_d]`` three ways (PointDC Eq. 9 in the joint space, split in its two halves):

- ``joint``: ``f . mu_f + d . mu_d - |mu|^2 / 2``, the recipe's own evaluation (checked equal to it);
- ``descriptors``: ``d . mu_d - |mu_d|^2 / 2``, the hand-made descriptors' half alone;
- ``network``: ``f . mu_f - |mu_f|^2 / 2``, the network's half alone;

each pooled over the regions and Hungarian-matched, as the recipe evaluates. It prints their mIoU /
accuracy, how often each half's argmax is the joint one, and the mean over points of the spread (std)
of each half's scores across the clusters: a half whose scores hardly differ between clusters leaves
the decision to the other. Rows go to ``benchmarks/results/joint_parts.jsonl`` (and ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import realscan  # noqa: E402
from benchmarks._common import run_cli, val_metrics, write_row  # noqa: E402
from unsup3d.metrics import HungarianMIoU  # noqa: E402
from unsup3d.pointdc.clustering_pass import point_scores  # noqa: E402
from unsup3d.training.evaluation import pool_logits  # noqa: E402

PARTS = ("joint", "descriptors", "network")


def part_scores(f: torch.Tensor, d: torch.Tensor, centroids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The joint Eq. 9 scores of unit network features ``f`` ``(N, D)`` and scaled descriptors ``d``
    ``(N, E)`` against ``centroids`` ``(K, D + E)`` (the recipe's own, :func:`point_scores`), and each
    half's own, which sum to it."""
    dim = f.shape[1]
    mu_f, mu_d = centroids[:, :dim], centroids[:, dim:]
    net = f @ mu_f.T - 0.5 * mu_f.pow(2).sum(1)
    desc = d @ mu_d.T - 0.5 * mu_d.pow(2).sum(1)
    return {"joint": point_scores(f, centroids, d), "descriptors": desc, "network": net}


@torch.no_grad()
def decompose(model, loader, num_classes: int) -> dict[str, float]:
    """mIoU / accuracy of each part's region-pooled argmax, agreement with the joint argmax, and the mean
    per-point std of each half's scores across the clusters, over ``loader``'s scenes."""
    model.eval()
    metrics = {p: HungarianMIoU(num_classes, model.num_clusters) for p in PARTS}
    agree = {p: 0 for p in PARTS[1:]}
    spread = {p: 0.0 for p in PARTS[1:]}
    points = 0
    centroids = model.centroids.float()
    for batch in loader:
        f = F.normalize(model.backbone(batch["sparse"], batch["inverse"]).float(), dim=1)
        d = batch["descriptor"].float() * model.scale
        scores = part_scores(f, d, centroids)
        pred = {}
        for part, s in scores.items():
            pooled = pool_logits(s, batch["superpoint"], batch["num_superpoints"])
            pred[part] = pooled.argmax(1)
            metrics[part].update(pred[part], batch["segment"])
        for part in PARTS[1:]:
            agree[part] += int((pred[part] == pred["joint"]).sum())
            spread[part] += float(scores[part].std(1).sum())
        points += len(pred["joint"])
    out = {}
    for part, m in metrics.items():
        r = m.compute()
        out[f"{part}_miou"], out[f"{part}_acc"] = float(r["miou"]), float(r["acc"])
    for part in PARTS[1:]:
        out[f"{part}_agreement"] = agree[part] / points
        out[f"{part}_spread"] = spread[part] / points
    return out


def run_seed(root: Path, args: argparse.Namespace, seed: int, k: int) -> dict:
    """Train (or, with 0 epochs, only cluster) the teacher-free recipe for ``seed`` and decompose it."""
    ns = SimpleNamespace(voxel_size=args.voxel_size, batch_size=args.batch_size, descriptors=None,
                         svc_epochs=max(args.svc_epochs, 1), svc_lr=None, work=args.work)  # fmt: skip
    cli_args = [*realscan._quiet(seed, args.work), *realscan._data(root, ns, True)]
    cli_args += [*realscan._svc(ns, seed, k), "--model.init_args.init_checkpoint", "null"]
    t0 = time.perf_counter()
    cli = run_cli("fit" if args.svc_epochs > 0 else "validate", realscan.QUICK / "pointdc_geometric_svc.yaml",
                  cli_args)  # fmt: skip
    own = val_metrics(cli)
    parts = decompose(cli.model, cli.datamodule.val_dataloader(), k)
    return {"seed": seed, "svc_epochs": args.svc_epochs, "root": str(root), "source_root": str(args.root),
            "train_scenes": args.train_scenes, "num_classes": k,
            "recipe_miou": own[0], "recipe_acc": own[1], **parts,
            "seconds": time.perf_counter() - t0}  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="scene folders: ROOT/{train,val}/<scene>/")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--svc-epochs", type=int, default=20, help="0: the untrained network (no training)")
    p.add_argument("--num-classes", type=int, default=None, help="default: as realscan.py counts them")
    p.add_argument("--voxel-size", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--json", type=Path, default=None, help="write one JSON object per seed here")
    p.add_argument("--work", type=Path, default=Path("outputs/benchmarks/joint_parts"))
    p.add_argument("--val-every", type=int, default=3, help="a root with no val scenes: hold out every n-th")
    p.add_argument("--train-scenes", type=int, default=None, help="the first n training scenes only")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    root = realscan.held_out_view(realscan.writable_view(args.root, args.work), args.work, args.val_every)
    root = realscan.train_subset_view(root, args.work, args.train_scenes)
    dm = realscan.prepare(root, args.voxel_size)
    k = args.num_classes or realscan.count_classes(dm)
    rows = []
    for seed in range(args.seeds):
        row = run_seed(root, args, seed, k)
        write_row("joint_parts", row)
        rows.append(row)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    head = (
        f"teacher-free joint space on {root}, {args.svc_epochs} SVC epochs, mean (std) of {args.seeds} seeds"
    )
    print(f"\n{head}")
    print(f"{'scored by':14s} {'mIoU %':>14s} {'Acc %':>14s} {'same argmax':>12s} {'score spread':>13s}")
    for part in PARTS:
        miou = np.array([r[f"{part}_miou"] for r in rows]) * 100
        acc = np.array([r[f"{part}_acc"] for r in rows]) * 100
        line = f"{part:14s} {miou.mean():6.2f} ({miou.std():4.2f}) {acc.mean():6.2f} ({acc.std():4.2f})"
        if part != "joint":
            agree = np.mean([r[f"{part}_agreement"] for r in rows])
            spread = np.mean([r[f"{part}_spread"] for r in rows])
            line += f" {agree:12.3f} {spread:13.3f}"
        print(line)
    return rows


if __name__ == "__main__":
    main()
