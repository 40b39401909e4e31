"""Peak memory of SVC's clustering pass against the size of every point's features.

The pass (``unsup3d.pointdc.clustering_pass.cluster_pass``, PointDC Eq. 8-10) streams the training
scenes through the backbone and keeps only super-voxel mean features, then K-means, then a second
stream for per-point labels (int16). Its peak should be about one batch's forward plus the means and
labels, never ``points x D x 4`` bytes. Synthetic rooms are generated (cached under ``--data-root``)
with the requested size; each measurement runs in a fresh process (peak RSS, see
``benchmarks/_memory.py``): the whole pass, and for comparison one forward of the pass's largest
batch. Prints a table and appends one JSON row per scene count to
benchmarks/results/clustering_memory.jsonl. Full run: the defaults (4 and 16 scenes). Quick run:
--scenes 2 --room-side 3 4.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import write_row  # noqa: E402
from benchmarks._memory import MB, PeakMemory, child_result, run_child  # noqa: E402
from unsup3d.data.scene_folder import settings_key  # noqa: E402
from unsup3d.pointdc.datamodules import ScanNetDataModule  # noqa: E402
from unsup3d.synthetic.rooms import SyntheticRoomsConfig, generate_rooms  # noqa: E402

HERE = Path(__file__).resolve()


def rooms_config(spec: dict[str, Any]) -> SyntheticRoomsConfig:
    """Synthetic rooms without RGB-D frames (the clustering pass reads only the points)."""
    return SyntheticRoomsConfig(
        num_scenes=spec["scenes"] + 1,  # one validation scene: ``setup("fit")`` wants a val split
        num_val=1,
        frames_per_scene=0,
        points_per_m2=spec["points_per_m2"],
        room_side=tuple(spec["room_side"]),
    )


def rooms_datamodule(spec: dict[str, Any], prepare: bool) -> ScanNetDataModule:
    """The data module over the rooms of ``spec``, laid out as ``SyntheticRoomsDataModule`` does (its
    raw folder name too, so both share a cache) but with the mesh density and room size of ``spec``."""
    config = rooms_config(spec)
    raw = Path(spec["data_root"]) / f"synthetic_rooms-raw-{settings_key(vars(config))}"
    if prepare:
        generate_rooms(raw, config)
    dm = ScanNetDataModule(
        raw_root=str(raw),
        train_list=str(raw / "scannetv2_train.txt"),
        val_list=str(raw / "scannetv2_val.txt"),
        data_root=spec["data_root"],
        voxel_size=spec["voxel_size"],
        batch_size=spec["batch_size"],
    )
    if prepare:
        dm.prepare_data()
    return dm


def backbone(spec: dict[str, Any], device: torch.device) -> torch.nn.Module:
    from unsup3d.models import Res16UNet

    torch.manual_seed(0)
    return Res16UNet(in_channels=6, width=spec["width"]).to(device).eval()


# -- children: one measurement each, in a fresh process --------------------------------------------


def child_pass(spec: dict[str, Any]) -> dict[str, Any]:
    from unsup3d.pointdc.clustering_pass import cluster_pass

    device = torch.device(spec["device"])
    dm = rooms_datamodule(spec, prepare=False)
    dm.setup("fit")
    net = backbone(spec, device)
    batches: list[dict[str, int]] = []
    streams = 0

    def loader_fn():
        nonlocal streams
        streams += 1
        for batch in dm.cluster_dataloader():
            if streams == 1:  # the same scenes stream twice; count them once
                batches.append(
                    {
                        "points": len(batch["inverse"]),
                        "voxels": len(batch["sparse"].C),
                        "superpoints": int(batch["num_superpoints"]),
                    }
                )
            yield batch

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        centroids, labels = cluster_pass(
            net,
            loader_fn,
            spec["num_clusters"],
            device,
            nonparametric=spec["mode"] != "basic",
            superpoint_pooling=spec["mode"] == "pooled",
            niter=spec["niter"],
        )
        seconds = time.perf_counter() - t0
    tables = [*labels.by_point.values(), *labels.by_superpoint.values()]
    return {
        "seconds": seconds,
        "memory": mem.as_dict(),
        "batches": batches,
        "dim": int(centroids.shape[1]),
        "label_bytes": sum(t.numel() * t.element_size() for t in tables),
        "model_bytes": sum(p.numel() * p.element_size() for p in net.parameters()),
    }


@torch.no_grad()
def child_forward(spec: dict[str, Any]) -> dict[str, Any]:
    """One forward (and normalisation, as the pass does) of batch ``spec["batch"]`` of the pass."""
    device = torch.device(spec["device"])
    dm = rooms_datamodule(spec, prepare=False)
    net = backbone(spec, device)
    loader = iter(dm.cluster_dataloader())
    for _ in range(spec["batch"]):
        next(loader)  # loaded but never run: only the chosen batch's forward is measured
    batch = next(loader)
    with PeakMemory() as mem:
        f = F.normalize(net(batch["sparse"].to(device), batch["inverse"].to(device)), dim=1)
    return {"memory": mem.as_dict(), "points": int(f.shape[0])}


# -- parent ----------------------------------------------------------------------------------------


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    rooms_datamodule(spec, prepare=True)
    prepare_s = time.perf_counter() - t0
    run = run_child(HERE, ["--child", "pass", json.dumps(spec)])
    sizes = run["batches"]
    largest = max(range(len(sizes)), key=lambda i: sizes[i]["points"])
    fwd = run_child(HERE, ["--child", "forward", json.dumps({**spec, "batch": largest})])
    d = run["dim"]
    points = sum(b["points"] for b in sizes)
    superpoints = sum(b["superpoints"] for b in sizes)
    means = superpoints * d * 4
    every_point = points * d * 4
    predicted = fwd["memory"]["growth_mb"] * MB + means + run["label_bytes"]
    return {
        "scenes": spec["scenes"],
        "points": points,
        "voxels": sum(b["voxels"] for b in sizes),
        "superpoints": superpoints,
        "batches": len(sizes),
        "largest_batch_points": sizes[largest]["points"],
        "dim": d,
        "prepare_seconds": prepare_s,
        "pass_seconds": run["seconds"],
        "pass_memory": run["memory"],
        "largest_forward_memory": fwd["memory"],
        "model_mb": run["model_bytes"] / MB,
        "superpoint_means_mb": means / MB,
        "pseudo_labels_mb": run["label_bytes"] / MB,
        "every_point_features_mb": every_point / MB,
        "forward_plus_means_plus_labels_mb": predicted / MB,
        "every_point_features_over_pass_growth": every_point / max(run["memory"]["growth_mb"] * MB, 1.0),
    }


def print_table(r: dict[str, Any]) -> None:
    print(
        f"\n{r['scenes']} scenes: {r['points']:,} points, {r['voxels']:,} voxels, "
        f"{r['superpoints']:,} super-voxels, {r['batches']} batches, D = {r['dim']}; "
        f"pass {r['pass_seconds']:.1f} s"
    )
    rows = [
        ("model parameters (before the pass)", r["model_mb"]),
        ("one forward, largest batch (peak growth)", r["largest_forward_memory"]["growth_mb"]),
        ("super-voxel means kept (S x D x 4)", r["superpoint_means_mb"]),
        ("pseudo labels (int16 per point)", r["pseudo_labels_mb"]),
        ("  forward + means + labels", r["forward_plus_means_plus_labels_mb"]),
        ("clustering pass (peak growth, measured)", r["pass_memory"]["growth_mb"]),
        ("every point's features (P x D x 4)", r["every_point_features_mb"]),
    ]
    for name, mb in rows:
        print(f"  {name:<44} {mb:10.1f} MB")
    print(
        f"  every point's features / pass growth: {r['every_point_features_over_pass_growth']:.1f}x "
        f"(RSS by {r['pass_memory']['method']}; pass started at {r['pass_memory']['baseline_mb']:.0f} MB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenes", type=int, nargs="+", default=[4, 16], help="training scenes (one row each)"
    )
    parser.add_argument("--points-per-m2", type=float, default=250.0, help="mesh density of the rooms")
    parser.add_argument("--room-side", type=float, nargs=2, default=(3.0, 8.0), metavar=("MIN", "MAX"))
    parser.add_argument("--voxel-size", type=float, default=0.05)
    parser.add_argument("--width", type=float, default=0.5, help="Res16UNet width (quickstart: 0.5)")
    parser.add_argument("--batch-size", type=int, default=2, help="scenes per batch of the pass")
    parser.add_argument("--num-clusters", type=int, default=20)
    parser.add_argument("--niter", type=int, default=30, help="K-means iterations (quickstart: 30)")
    parser.add_argument("--mode", choices=("basic", "nonparametric", "pooled"), default="pooled")
    parser.add_argument("--data-root", default="data/benchmarks")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, spec = args.child[0], json.loads(args.child[1])
        child_result(child_pass(spec) if kind == "pass" else child_forward(spec))
        return

    base = {
        "points_per_m2": args.points_per_m2,
        "room_side": list(args.room_side),
        "voxel_size": args.voxel_size,
        "width": args.width,
        "batch_size": args.batch_size,
        "num_clusters": args.num_clusters,
        "niter": args.niter,
        "mode": args.mode,
        "data_root": str(Path(args.data_root).resolve()),
        "device": args.device,
    }
    results = []
    for scenes in args.scenes:
        result = measure({**base, "scenes": scenes})
        results.append(result)
        print_table(result)
        settings = {k: v for k, v in base.items() if k != "data_root"}
        # Shared machines: the 1-minute load average says how far the timings can be trusted.
        write_row(
            "clustering_memory", {**settings, **result, "load_average_1min": os.getloadavg()[0]}
        )
    if len(results) > 1:
        a, b = results[0], results[-1]
        grew = b["pass_memory"]["growth_mb"] / max(a["pass_memory"]["growth_mb"], 1e-9)
        print(
            f"\nfrom {a['scenes']} to {b['scenes']} scenes: points x{b['points'] / a['points']:.2f}, "
            f"pass peak growth x{grew:.2f}, "
            f"largest batch x{b['largest_batch_points'] / a['largest_batch_points']:.2f}"
        )


if __name__ == "__main__":
    main()
