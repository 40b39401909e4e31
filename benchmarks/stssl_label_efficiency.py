"""STSSL label efficiency on the synthetic LiDAR sequences (the shape of STSSL Tables 2 and 5).

P2C pre-training (Eq. 2) on the unlabelled training sequences, then inter-frame pre-training (Eq. 3-4,
tracks re-made with the P2C features) from it; then, for each seed, three fine-tunings of a MinkUNet and
a linear classifier on the same few labelled scans (a label split drawn by the seed, the same
initialisation of the classifier): from scratch, from P2C, and from P2C + inter-frame. Pre-training runs
once (seed of the first), or once a seed with ``--pretrain-per-seed``. Each fine-tuned model is scored
by mIoU and accuracy on the validation sequence (plain, not Hungarian; classes that occur there).
Prints the per-seed rows and the mean over seeds, and appends one JSON row to
benchmarks/results/stssl_label_efficiency.jsonl.

Every size is a flag; the defaults finish in about 15 minutes on a 2-core CPU. A quick check:
``--seeds 0 --p2c-epochs 1 --inter-epochs 1 --finetune-epochs 5``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from unsup3d.models import MinkUNet  # noqa: E402
from unsup3d.stssl.datamodules import SyntheticLidarDataModule  # noqa: E402
from unsup3d.stssl.finetune import FinetuneModule  # noqa: E402
from unsup3d.stssl.interframe import InterFrameModule  # noqa: E402
from unsup3d.stssl.p2c import P2CModule  # noqa: E402

ROWS = ("scratch", "p2c", "p2c+interframe")


def _trainer(epochs: int) -> Trainer:
    return Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=max(epochs, 1),
    )  # fmt: skip


def _data(args: argparse.Namespace, **kw) -> SyntheticLidarDataModule:
    return SyntheticLidarDataModule(
        num_sequences=args.sequences, num_val=1, frames_per_sequence=args.frames,
        azimuth_steps=args.azimuth_steps, generator_seed=args.data_seed, data_root=str(args.data_root),
        voxel_size=args.voxel_size, batch_size=args.batch_size, max_voxels=args.max_voxels, **kw,
    )  # fmt: skip


def pretrain(args: argparse.Namespace, seed: int, out: Path) -> tuple[Path, Path]:
    """P2C, then inter-frame from it; returns the two checkpoints (reused if ``out`` holds them)."""
    p2c_ckpt, inter_ckpt = out / f"p2c-seed{seed}.ckpt", out / f"interframe-seed{seed}.ckpt"
    if args.reuse_pretraining and p2c_ckpt.is_file() and inter_ckpt.is_file():
        return p2c_ckpt, inter_ckpt
    seed_everything(seed, workers=True)
    p2c = P2CModule(
        backbone=MinkUNet(4, width=args.width), lr=args.pretrain_lr, target_momentum=args.target_momentum,
        val_num_classes=None,
    )  # fmt: skip
    trainer = _trainer(args.p2c_epochs)
    trainer.fit(p2c, datamodule=_data(args, pairs=True, interval_max=0, seed=seed))
    trainer.save_checkpoint(p2c_ckpt)

    seed_everything(seed, workers=True)
    inter = InterFrameModule(
        backbone=MinkUNet(4, width=args.width), init_checkpoint=str(p2c_ckpt), lr=args.pretrain_lr,
        target_momentum=args.target_momentum, val_num_classes=None,
    )  # fmt: skip
    data = _data(
        args, pairs=True, p2c_view=True, interval_start=1, interval_max=args.max_interval, interval_every=1,
        tracks=True, track_min_points=args.track_min_points, seed=seed,
    )  # fmt: skip
    trainer = _trainer(args.inter_epochs)
    trainer.fit(inter, datamodule=data)
    trainer.save_checkpoint(inter_ckpt)
    return p2c_ckpt, inter_ckpt


def finetune(args: argparse.Namespace, seed: int, checkpoint: Path | None) -> dict[str, float]:
    """Fine-tune on the seed's label split; mIoU and accuracy (fractions) on the validation sequence."""
    seed_everything(seed, workers=True)
    module = FinetuneModule(
        backbone=MinkUNet(4, width=args.width), init_checkpoint=str(checkpoint) if checkpoint else None,
        num_classes=19, lr=args.finetune_lr,
    )  # fmt: skip
    data = _data(
        args,
        clusters=False,
        train_labels=True,
        label_fraction=args.label_fraction,
        split_seed=seed,
        seed=seed,
        augment=args.finetune_augment,
    )
    trainer = _trainer(args.finetune_epochs)
    trainer.fit(module, datamodule=data)
    m = module.last_metrics
    return {
        "miou": float(m["miou"]),
        "acc": float(m["acc"]),
        "labelled_scans": len(data.split_frames("train")),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sequences", type=int, default=6, help="synthetic sequences; the last validates")
    p.add_argument("--frames", type=int, default=10, help="frames a sequence")
    p.add_argument("--azimuth-steps", type=int, default=512)
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--voxel-size", type=float, default=0.1)
    p.add_argument("--max-voxels", type=int, default=3000, help="voxels a training view")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--width", type=float, default=0.25, help="MinkUNet channel multiplier")
    p.add_argument("--pretrain-per-seed", action="store_true", help="pre-train again for every seed")
    p.add_argument("--p2c-epochs", type=int, default=6)
    p.add_argument("--inter-epochs", type=int, default=4)
    p.add_argument("--max-interval", type=int, default=3)
    p.add_argument("--track-min-points", type=int, default=100)
    p.add_argument("--pretrain-lr", type=float, default=0.05)
    p.add_argument("--target-momentum", type=float, default=0.99)
    p.add_argument("--finetune-epochs", type=int, default=60)
    p.add_argument("--finetune-lr", type=float, default=0.1)
    p.add_argument(
        "--finetune-augment", action="store_true",
        help="augment the labelled scans (rotation, flip, scale, noise): slower to fit in few steps",
    )  # fmt: skip
    p.add_argument("--label-fraction", type=float, default=0.1, help="of each training sequence's scans")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="keep pre-training checkpoints here")
    p.add_argument(
        "--reuse-pretraining", action="store_true", help="reuse the checkpoints in --checkpoint-dir"
    )
    p.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "unsup3d_stssl_bench")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in ROWS}
    with tempfile.TemporaryDirectory() as tmp:
        out = args.checkpoint_dir or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            if args.pretrain_per_seed or seed == args.seeds[0]:
                p2c_ckpt, inter_ckpt = pretrain(args, seed, out)
                print(f"pre-trained with seed {seed} ({(time.perf_counter() - t0) / 60:.1f} min)", flush=True)
            for name, ckpt in zip(ROWS, (None, p2c_ckpt, inter_ckpt)):
                results[name].append(finetune(args, seed, ckpt))
                r = results[name][-1]
                print(
                    f"seed {seed}  {name:>15}: mIoU {100 * r['miou']:5.2f}  acc {100 * r['acc']:5.2f}",
                    flush=True,
                )
    minutes = (time.perf_counter() - t0) / 60

    scans = results["scratch"][0]["labelled_scans"]
    n = len(args.seeds)
    print(f"\nSTSSL label efficiency, synthetic LiDAR: {scans} labelled scans, mean (std) of {n} seeds")
    print(f"{'pre-training':>16} | {'mIoU %':>13} | {'acc %':>13}")
    table = {}
    for name in ROWS:
        miou = np.array([r["miou"] for r in results[name]]) * 100
        acc = np.array([r["acc"] for r in results[name]]) * 100
        table[name] = {
            "miou": round(float(miou.mean()), 2), "miou_std": round(float(miou.std()), 2),
            "acc": round(float(acc.mean()), 2), "acc_std": round(float(acc.std()), 2),
            "per_seed_miou": [round(float(x), 2) for x in miou],
        }  # fmt: skip
        print(f"{name:>16} | {miou.mean():6.2f} ({miou.std():4.2f}) | {acc.mean():6.2f} ({acc.std():4.2f})")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_row(
        "stssl_label_efficiency",
        {"labelled_scans": scans, "minutes": round(minutes, 1), "settings": settings, "table": table},
    )


if __name__ == "__main__":
    main()
