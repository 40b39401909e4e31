"""How SVC's clustering pass and one SVC training epoch grow with the dataset: 1x, 4x, 16x scenes.

For each multiplier m a synthetic rooms set of ``--base-scenes`` x m training scenes (plus
``--num-val`` validation scenes, never read here) is generated and prepared, cached under
``--data-root``. Then, in a fresh process, SVCModule and SyntheticRoomsDataModule are built from the
quickstart config (``experiments/quickstart/pointdc_svc.yaml``: 5 cm voxels, half-width Res16UNet,
batch 2, 30 K-means iterations) and fit for one epoch (no validation, no logger, no checkpoints).
Its first clustering pass (run from ``on_fit_start``) and its training epoch are timed apart, each
with its own peak RSS (``benchmarks/_memory.py``). Time should grow about linearly with the points;
the pass's memory should stay about flat apart from its super-voxel means, its int16 labels and the
point features it keeps between its two passes while they fit ``feature_cache_mb`` (SVCModule's
default 512; ``--feature-cache-mb 0`` runs the network twice instead and keeps none).
RGB-D frames are not generated (``--frames-per-scene 0``): SVC never reads them.

The default base is one training scene: 16x is 16 scenes, most of the run (an estimated 10-15
minutes on two quiet CPU cores). With the quickstart's batch of two the
pass's only batch at 1x holds one scene, at 4x and up two: its peak follows the largest batch
(printed), so compare memory from 4x up, or give ``--base-scenes 2``.

Prints a table with growth ratios against the first multiplier and appends one JSON row per
multiplier to benchmarks/results/scale.jsonl. Full run: ``python benchmarks/scale.py``. Quick check:
``--multipliers 1 2``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from benchmarks._memory import MB, PeakMemory, child_result, run_child  # noqa: E402

HERE = Path(__file__).resolve()
QUICKSTART = HERE.parent.parent / "experiments" / "quickstart" / "pointdc_svc.yaml"


def instantiate(node: Any) -> Any:
    """Build ``{class_path, init_args}`` nodes of a LightningCLI config, nested ones first."""
    if isinstance(node, dict) and "class_path" in node:
        module, _, name = node["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return cls(**{k: instantiate(v) for k, v in node.get("init_args", {}).items()})
    if isinstance(node, dict):
        return {k: instantiate(v) for k, v in node.items()}
    if isinstance(node, list):
        return [instantiate(v) for v in node]
    return node


def data_node(spec: dict[str, Any]) -> dict[str, Any]:
    """The config's data module with this run's scene count, frames and data root."""
    cfg = yaml.safe_load(Path(spec["config"]).read_text())
    args = {
        **cfg["data"]["init_args"],
        "num_scenes": spec["scenes"] + spec["num_val"],
        "num_val": spec["num_val"],
        "frames_per_scene": spec["frames_per_scene"],
        "data_root": spec["data_root"],
    }
    return {"class_path": cfg["data"]["class_path"], "init_args": args}


def prepare(spec: dict[str, Any]) -> dict[str, Any]:
    """Generate and prepare the set (cached); count its training points and super-voxels, and the
    points of the pass's largest batch (the pass reads the scenes in order, ``val_batch_size`` a batch)."""
    t0 = time.perf_counter()
    dm = instantiate(data_node(spec))
    dm.prepare_data()
    seconds = time.perf_counter() - t0
    points, superpoints = [], 0
    for d in dm.scene_dirs("train"):
        points.append(np.load(d / "coord.npy", mmap_mode="r").shape[0])
        sp = np.load(d / "superpoint.npy")
        superpoints += len(np.unique(sp[sp >= 0]))
    b = dm.val_batch_size
    largest = max(sum(points[i : i + b]) for i in range(0, len(points), b))
    return {
        "prepare_seconds": seconds,
        "points": sum(points),
        "superpoints": superpoints,
        "pass_batch_size": b,
        "largest_pass_batch_points": largest,
    }


def with_feature_cache(cfg: dict[str, Any], mb: float | None) -> dict[str, Any]:
    """The config with the SVC module's ``feature_cache_mb`` set to ``mb`` (unchanged for None)."""
    if mb is not None:
        cfg["model"].setdefault("init_args", {})["feature_cache_mb"] = mb
    return cfg


# -- child: one SVC fit of one epoch, its clustering pass and training epoch measured apart --------


def child_fit(spec: dict[str, Any]) -> dict[str, Any]:
    from lightning.pytorch import Callback, Trainer, seed_everything

    cfg = with_feature_cache(yaml.safe_load(Path(spec["config"]).read_text()), spec["feature_cache_mb"])
    seed_everything(cfg.get("seed_everything", 0), verbose=False)
    model = instantiate(cfg["model"])
    dm = instantiate(data_node(spec))
    passes: list[dict[str, Any]] = []
    epoch: dict[str, Any] = {}

    recluster = model.recluster

    def measured_recluster(ep: int) -> None:
        with PeakMemory() as mem:
            t0 = time.perf_counter()
            recluster(ep)
            seconds = time.perf_counter() - t0
        passes.append({"seconds": seconds, "memory": mem.as_dict()})

    model.recluster = measured_recluster

    class EpochProbe(Callback):
        def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
            self.mem = PeakMemory().__enter__()
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
            epoch["seconds"] = time.perf_counter() - self.t0
            self.mem.__exit__(None, None, None)
            epoch["memory"] = self.mem.as_dict()
            epoch["steps"] = trainer.global_step

    trainer = Trainer(
        max_epochs=1,
        accelerator=spec["device"],
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[EpochProbe()],
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    fit_seconds = time.perf_counter() - t0
    if len(passes) != 1 or not epoch:
        raise RuntimeError(f"expected one clustering pass and one epoch, got {len(passes)} and {epoch}")
    labels = model.labels.state().values()
    return {
        "fit_seconds": fit_seconds,
        "pass": passes[0],
        "epoch": epoch,
        "label_bytes": sum(t.numel() * t.element_size() for t in labels),
        "dim": int(model.centroids.shape[1]),
    }


# -- parent ----------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'mult':>4} {'scenes':>6} {'points':>10} {'max batch':>9} {'prep s':>7} {'pass s':>7} "
        f"{'pass MB':>16} {'epoch s':>8} {'epoch MB':>16} | {'x pts':>6} {'x pass s':>8} {'x epoch s':>9} "
        f"{'x pass +MB':>10} {'x epoch +MB':>11}"
    )
    print(
        "\nMB: peak RSS (+ growth over the phase's start); max batch: points of the pass's largest batch, "
        "which sets its peak\n" + head + "\n" + "-" * len(head)
    )
    for r in rows:
        p, e, g = r["pass"], r["epoch"], r["growth_vs_first"]
        print(
            f"{r['multiplier']:>4} {r['scenes']:>6} {r['points']:>10,} {r['largest_pass_batch_points']:>9,} "
            f"{r['prepare_seconds']:>7.1f} "
            f"{p['seconds']:>7.1f} {p['memory']['peak_mb']:>7.0f} (+{p['memory']['growth_mb']:>5.0f}) "
            f"{e['seconds']:>8.1f} {e['memory']['peak_mb']:>7.0f} (+{e['memory']['growth_mb']:>5.0f}) | "
            f"{g['points']:>6.2f} {g['pass_seconds']:>8.2f} {g['epoch_seconds']:>9.2f} "
            f"{g['pass_growth_mb']:>10.2f} {g['epoch_growth_mb']:>11.2f}"
        )
    last = rows[-1]
    print(
        f"\nat {last['multiplier']}x: super-voxel means {last['superpoint_means_mb']:.1f} MB, pseudo labels "
        f"{last['pseudo_labels_mb']:.1f} MB, every point's features would be "
        f"{last['every_point_features_mb']:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--multipliers", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--base-scenes", type=int, default=1, help="training scenes at 1x")
    parser.add_argument("--num-val", type=int, default=1, help="validation scenes (generated, not read)")
    parser.add_argument("--frames-per-scene", type=int, default=0, help="RGB-D frames (SVC reads none)")
    parser.add_argument("--config", default=str(QUICKSTART), help="SVC config for model and data")
    parser.add_argument("--data-root", default="data/benchmarks")
    parser.add_argument(
        "--feature-cache-mb",
        type=float,
        default=None,
        help="SVCModule's feature_cache_mb (default: the config's, else the module's 512); 0 keeps none",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child_result(child_fit(json.loads(args.child)))
        return

    rows: list[dict[str, Any]] = []
    for m in args.multipliers:
        spec = {
            "scenes": args.base_scenes * m,
            "num_val": args.num_val,
            "frames_per_scene": args.frames_per_scene,
            "config": str(Path(args.config).resolve()),
            "data_root": str(Path(args.data_root).resolve()),
            "device": args.device,
            "feature_cache_mb": args.feature_cache_mb,
        }
        data = prepare(spec)
        print(f"{m}x: {spec['scenes']} scenes, {data['points']:,} points, fitting one epoch ...", flush=True)
        fit = run_child(HERE, ["--child", json.dumps(spec)])
        d = fit["dim"]
        row = {
            "multiplier": m,
            "base_scenes": args.base_scenes,
            "scenes": spec["scenes"],
            "device": args.device,
            "config": os.path.relpath(spec["config"], HERE.parent.parent),
            "feature_cache_mb": args.feature_cache_mb,
            **data,
            **fit,
            "superpoint_means_mb": data["superpoints"] * d * 4 / MB,
            "pseudo_labels_mb": fit["label_bytes"] / MB,
            "every_point_features_mb": data["points"] * d * 4 / MB,
        }
        first = rows[0] if rows else row
        row["growth_vs_first"] = {
            "points": ratio(row["points"], first["points"]),
            "pass_seconds": ratio(row["pass"]["seconds"], first["pass"]["seconds"]),
            "epoch_seconds": ratio(row["epoch"]["seconds"], first["epoch"]["seconds"]),
            "pass_growth_mb": ratio(
                row["pass"]["memory"]["growth_mb"], first["pass"]["memory"]["growth_mb"]
            ),
            "epoch_growth_mb": ratio(
                row["epoch"]["memory"]["growth_mb"], first["epoch"]["memory"]["growth_mb"]
            ),
        }
        # Shared machines: the 1-minute load average says how far the timings can be trusted.
        row["load_average_1min"] = os.getloadavg()[0]
        write_row("scale", row)
        rows.append(row)
    print_table(rows)


if __name__ == "__main__":
    main()
