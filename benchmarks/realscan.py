"""PointDC's rows on any labelled scene-folder root (real scans as written by ``unsup3d import``).

    python benchmarks/realscan.py --root ROOT [--seeds 3] [--teacher NAME|PATH] [--json PATH]

``ROOT`` holds ``train/<scene>/`` and ``val/<scene>/`` with ``coord.npy``, ``color.npy`` and
``segment.npy`` (class ids, -1 unlabelled; labels are read for the metric only). Super-voxels
(Felzenszwalb-Huttenlocher, on the scans' normals where they have them) and the hand-made
descriptors are added to the scene folders once. Rows, each Hungarian-matched on the val scenes:

- ``kmeans-handcrafted``: K-means of the hand-made descriptors pooled per super-voxel (the
  teacher-free recipe's group weights), fitted on the training super-voxels; no network;
- ``kmeans-regions``: the same K-means over the grown super-voxels (regions) the teacher-free row
  pools over; no network. A diagnostic: what the descriptors and regions reach alone, so that the
  teacher-free row shows what its network adds (on the scan-like rooms: nothing measurable);
- ``random-clustering``: SVC's clustering (Eq. 8) of an untrained network's features, over the
  dataset's super-voxels (the release's units);
- ``svc-scratch``: SVC (Eq. 8-12) from a random network, no CMD: the quickstart SVC recipe with the
  release's units and pooling (the dataset's super-voxels, Eq. 10 on) and the recipe's normalised
  fixed classifier (the release's unnormalised one: ``fixed_normalize: false``, see the README); the
  SVC recipe's own units, the grown regions, are one of the things the teacher-free row adds;
- ``teacher-free``: the teacher-free SVC recipe (``experiments/quickstart/pointdc_geometric_svc.yaml``)
  from a random network: SVC over the grown super-voxels (regions), clustering the network's features
  joined to the hand-made descriptors and evaluated in that joint space (``--teacher-free-cmd``
  distils the descriptors first, as the recipe pair does; it changed nothing measurable here);
- ``teacher-free-untrained``: the teacher-free recipe's clustering and joint-space evaluation of its
  untrained network (validated before any training step). A diagnostic: with ``teacher-free`` it shows
  what SVC's training adds to the joint space (on the scan-like rooms: nothing measurable);
- ``teacher`` (with ``--teacher``): CMD from the 2D teacher on views rendered from the clouds, then the
  SVC recipe (``experiments/quickstart/pointdc_svc.yaml``: over the grown regions).

Every row prepares and reads the descriptor settings of the teacher-free SVC recipe's data module
(:func:`descriptor_settings`), and the teacher-free rows pool over that recipe's units.
``--descriptors JSON`` changes those settings for every row (e.g. the first version's
``'{"outline": "hull", "column_cap": null}'``); they are cached in the scene folders, so two runs
with different settings must not share a root at the same time.

``ceiling-superpoints`` / ``ceiling-regions`` (run only when named in ``--rows``) are DIAGNOSTICS that
read the labels: each val unit labelled with its majority class, the best any row pooling over those
units could score. ``kmeans-merged`` (only when named; needs ``--descriptors '{"merge_regions": G}'``)
is ``kmeans-regions`` over the regions merged per scene into ``G`` groups (the data module's
``units: merged``, which ``--teacher-free-args '--data.init_args.units merged'`` gives the teacher-free
rows).

``--clusters K`` (more than the classes) over-clusters the K-means rows and the teacher-free rows into
``K`` clusters (GrowSP's primitives), merged into the classes by Euclidean K-means of the centroids
before matching (:func:`unsup3d.training.evaluation.merge_clusters`).

``--teacher-free-args '...'`` appends CLI arguments to the two teacher-free rows' SVC recipe (a
diagnostic of one of its settings, e.g. ``'--model.init_args.superpoint_pooling false'``: Eq. 10 off);
the JSON rows record them.

``--first-seed N`` runs seeds ``N .. N + --seeds - 1``: more seeds beside an earlier run's.

``--train-scenes N`` trains and clusters on the first ``N`` training scenes (by name) only, against
the same val scenes: how a row grows with the data.

A root whose scenes are all in ``train/`` (``unsup3d import`` without ``--val-fraction``) is split
here: every ``--val-every``-th scene by name (the 3rd, 6th, ...) is held out as val, through a view of
symlinks under ``--work`` (the scene folders themselves stay where they are and get the caches). A root
that cannot be written (a read-only mount) is read through a view of symlinked files under ``--work``,
where the caches go instead.

Prints mean (std) mIoU / accuracy (%) over the seeds, then each class's IoU per row beside its share
of the labelled val points (``--class-names``); ``--json PATH`` writes one object per line per row and
seed (``row``, ``seed``, ``miou``, ``acc`` as fractions, ``iou`` per class, ``class_share``, with the
settings and seconds), and every row is also appended to ``benchmarks/results/realscan.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import run_cli, val_metrics, write_row  # noqa: E402
from unsup3d.clustering import kmeans  # noqa: E402
from unsup3d.data.formats.s3dis import S3DIS_CLASS_NAMES  # noqa: E402
from unsup3d.data.formats.scannet_labels import SCANNET20_CLASS_NAMES  # noqa: E402
from unsup3d.data.prepare import load_npy  # noqa: E402
from unsup3d.data.scene_folder import list_scenes  # noqa: E402
from unsup3d.metrics import HungarianMIoU  # noqa: E402
from unsup3d.pointdc.datamodules import SceneFolderDataModule  # noqa: E402
from unsup3d.pointdc.geometric import footprint_area, weight_columns  # noqa: E402
from unsup3d.training.evaluation import merge_clusters  # noqa: E402
from unsup3d.vision.projection import superpoint_mean  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "experiments" / "quickstart"
#: diagnostics that read the labels, run only when named in --rows: the units' majority-label ceiling
CEILING_ROWS = {"ceiling-superpoints": "superpoint", "ceiling-regions": "region"}
#: the rows of K-means of the descriptors, and the units each pools over
KMEANS_ROWS = {"kmeans-handcrafted": "superpoint", "kmeans-regions": "region", "kmeans-merged": "merged"}
#: rows run only when named in --rows
NAMED_ONLY = {*CEILING_ROWS, "kmeans-merged"}
ROWS = (
    *CEILING_ROWS,
    *KMEANS_ROWS,
    "random-clustering",
    "teacher-free-untrained",
    "svc-scratch",
    "teacher-free",
    "teacher",
)


def _recipe() -> dict:
    import yaml

    return yaml.safe_load((QUICK / "pointdc_geometric_svc.yaml").read_text())


def recipe_weights() -> dict[str, float]:
    """The teacher-free SVC recipe's descriptor group weights (the handcrafted row uses the same)."""
    return dict(_recipe()["model"]["init_args"]["descriptor_weights"])


def recipe_restarts() -> int:
    """The K-means restarts of the teacher-free SVC recipe's clusterings (the K-means rows use them too)."""
    return int(_recipe()["model"]["init_args"].get("kmeans_restarts", 1))


def recipe_units() -> str:
    """The units the teacher-free SVC recipe pools over."""
    return _recipe()["data"]["init_args"]["units"]


def descriptor_settings(override: dict | None = None) -> dict | None:
    """The teacher-free SVC recipe's descriptor-pass settings with ``override``'s keys replacing its
    own (``--descriptors``): what every row prepares and reads, so that the rows, run side by side on
    one root, never ask for different caches. None: the defaults."""
    own = _recipe()["data"]["init_args"].get("descriptors", True)
    return {**(own if isinstance(own, dict) else {}), **(override or {})} or None


def data_module(root: Path, voxel_size: float, descriptors: dict | None = None) -> SceneFolderDataModule:
    """The scene folders under `root` with super-voxels, regions and descriptors (settings
    `descriptors`, None: the defaults), as every row reads them."""
    return SceneFolderDataModule(root=str(root), voxel_size=voxel_size, descriptors=descriptors or True)


def prepare(root: Path, voxel_size: float, descriptors: dict | None = None) -> SceneFolderDataModule:
    """`data_module` with its super-voxels and descriptors computed for every scene (cached in the scene
    folders)."""
    dm = data_module(root, voxel_size, descriptors)
    dm.prepare_data()
    return dm


IGNORE_ID = 255  # the usual uint8 "ignore" label, which `unsup3d import` keeps as it is (it maps only < 0)


def count_classes(dm: SceneFolderDataModule) -> int:
    """One more than the largest class id of the labelled points. Where the labels also hold
    ``IGNORE_ID`` or more beside smaller ids (0-19 and 255, say), those ids are taken as "ignore" (a
    named fallback, said on stdout): the classes are counted below them, and the metric, which scores
    only ids below the class count, leaves their points out. ``--num-classes`` overrides the count."""
    ids = set()
    for split in ("train", "val"):
        for d in dm.scene_dirs(split):
            ids.update(np.unique(load_npy(d / "segment.npy")).tolist())
    ids.discard(-1)
    if not ids:
        raise SystemExit(f"{dm.root}: no labelled point in train or val (segment.npy is -1 everywhere)")
    below = [i for i in ids if i < IGNORE_ID]
    if below and len(below) < len(ids):
        high = sorted(i for i in ids if i >= IGNORE_ID)
        print(
            f"note: {dm.root}'s labels hold ids {high} beside {len(below)} ids up to {max(below)}; they are "
            f"taken as ignore ids (not scored) and {max(below) + 1} classes are scored; pass --num-classes "
            "to count otherwise"
        )
        return max(below) + 1
    return max(ids) + 1


def can_write(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: permissions say nothing of a read-only mount,
    nor of root's rights)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".realscan-probe-"):
            return True
    except OSError:
        return False


def writable_view(root: Path, work: Path) -> Path:
    """``root`` itself where it and its scene folders can be written (the super-voxels, regions and
    descriptors are cached in them); else (a read-only mount, say) a view under ``work`` that mirrors
    ``root``'s ``train/`` and ``val/``: a folder per scene holding symlinks to its files, where the
    caches are written instead (a cache is written by an atomic replace, so a symlinked file the view
    writes again becomes the view's own and the original stays as it is)."""
    scenes = {split: list_scenes(root, split) for split in ("train", "val")}
    if all(can_write(d) for d in [root, *scenes["train"], *scenes["val"]]):
        return root
    view = work / "writable_view"
    shutil.rmtree(view, ignore_errors=True)
    for split, dirs in scenes.items():
        for scene in dirs:
            (view / split / scene.name).mkdir(parents=True)
            for f in scene.iterdir():
                if f.is_file():
                    (view / split / scene.name / f.name).symlink_to(f.resolve())
    n = sum(map(len, scenes.values()))
    print(f"{root}: not writable; its {n} scenes are read through symlinks under {view}, where the caches go")
    return view


def _scene_view(view: Path, splits: dict[str, list[Path]]) -> Path:
    """``view`` made anew to hold, in each split's folder, symlinks to that split's scene folders (whose
    caches are then written in place); returns ``view``."""
    for split, scenes in splits.items():
        shutil.rmtree(view / split, ignore_errors=True)
        (view / split).mkdir(parents=True)
        for scene in scenes:
            (view / split / scene.name).symlink_to(scene.resolve(), target_is_directory=True)
    return view


def held_out_view(root: Path, work: Path, every: int) -> Path:
    """``root`` itself where it has val scenes; else a view under ``work`` whose ``val/`` holds every
    ``every``-th training scene by name (the ``every``-th, ``2 every``-th, ...) and ``train/`` the
    rest, as symlinks to the scene folders (whose caches are then written in place)."""
    scenes = list_scenes(root, "train")
    if list_scenes(root, "val") or len(scenes) < 2:
        return root
    if every < 2:
        raise SystemExit(f"{root}: no val scenes, and --val-every {every} would hold out every scene")
    n_val = len(scenes) // every
    if n_val == 0:
        raise SystemExit(
            f"{root}: no val scenes, and its {len(scenes)} scenes are fewer than --val-every {every}, so "
            "none would be held out: give a root with val/ scenes or a smaller --val-every"
        )
    view = _scene_view(work / "split_view", {
        "train": [s for i, s in enumerate(scenes) if (i + 1) % every != 0],
        "val": [s for i, s in enumerate(scenes) if (i + 1) % every == 0],
    })  # fmt: skip
    suffix = "th" if every % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(every % 10, "th")
    nth = f"{every}{suffix}"
    print(f"{root}: no val scenes; holding out every {nth} scene by name ({n_val} of {len(scenes)}) as val")
    return view


def train_subset_view(root: Path, work: Path, n: int | None) -> Path:
    """``root`` itself where ``n`` is None or ``root`` has at most ``n`` training scenes; else a view under
    ``work`` holding the first ``n`` training scenes by name and every val scene, as symlinks to the scene
    folders (whose caches are then written in place): the same val scenes against fewer training
    scenes, to see how a row grows with the data."""
    if n is not None and n < 1:
        raise SystemExit(f"--train-scenes must be at least 1, got {n}")
    train = list_scenes(root, "train")
    if n is None or len(train) <= n:
        return root
    view = _scene_view(work / f"train{n}_view", {"train": train[:n], "val": list_scenes(root, "val")})
    print(f"{root}: training on the first {n} of its {len(train)} training scenes (by name)")
    return view


def _units(scene_dir: Path, unit: str) -> np.ndarray:
    """Each point's ``unit`` (``superpoint`` or ``region``) id, int64; points without one (-1) form one
    last unit."""
    units = load_npy(scene_dir / f"{unit}.npy").astype(np.int64)
    return np.where(units >= 0, units, units.max(initial=-1) + 1)


def _pooled(
    scene_dir: Path, weights: dict[str, float], unit: str = "superpoint"
) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's (``superpoint`` or ``region``) mean weighted descriptor, and each point's unit."""
    desc = weight_columns(load_npy(scene_dir / "descriptor.npy"), weights).astype(np.float64)
    sp = _units(scene_dir, unit)
    means, _ = superpoint_mean(torch.from_numpy(desc), torch.from_numpy(sp), int(sp.max()) + 1)
    return means.numpy().astype(np.float32), sp


#: one row and seed's scores: mIoU, accuracy (fractions) and each class's IoU (None: not in val)
Scores = tuple[float, float, list]


def metric_scores(out: dict) -> Scores:
    """:class:`HungarianMIoU`'s computed dict as :data:`Scores`."""
    iou = [None if v != v else float(v) for v in out["iou"].tolist()]
    return float(out["miou"]), float(out["acc"]), iou


def cli_scores(cli, num_classes: int) -> Scores:
    """A run's last validation as :data:`Scores`: ``val/miou``, ``val/acc`` and ``val/iou/<c>`` (the
    scene-folder module names its classes by id; a class no val point holds is not logged)."""
    miou, acc = val_metrics(cli)
    m = cli.trainer.callback_metrics
    iou = [float(m[f"val/iou/{c}"]) if f"val/iou/{c}" in m else None for c in range(num_classes)]
    return miou, acc, iou


def class_names(spec: str | None, num_classes: int) -> list[str]:
    """Names for the per-class table: ``spec`` a comma-separated list, ``scannet20``, ``s3dis`` or
    ``ids``; by default ScanNet-20's for 20 classes, S3DIS's for 13, else the ids."""
    known = {"scannet20": SCANNET20_CLASS_NAMES, "s3dis": S3DIS_CLASS_NAMES}
    if spec is None:
        spec = {20: "scannet20", 13: "s3dis"}.get(num_classes, "ids")
    if spec in known:
        names = list(known[spec])
    elif spec == "ids":
        names = [str(c) for c in range(num_classes)]
    else:
        names = [n.strip() for n in spec.split(",")]
    if len(names) != num_classes:
        raise ValueError(f"--class-names: {len(names)} names for {num_classes} classes")
    return names


def print_class_table(
    records: dict, rows: list[str], seeds: range, names: list[str], shares: list[float]
) -> None:
    """IoU % of each class (mean over the seeds where the class is in val) for every row, beside the
    class's share of the labelled val points (:func:`class_share`)."""
    print(f"\nIoU per class, %, mean of {len(seeds)} seeds")
    widths = [max(6, len(row)) for row in rows]
    print(f"{'class':18s} {'val pts':>8s} " + " ".join(f"{r:>{w}s}" for r, w in zip(rows, widths)))
    for c, name in enumerate(names):
        cells = []
        for row, w in zip(rows, widths):
            vals = [records[(row, s)]["iou"][c] for s in seeds]
            vals = [v for v in vals if v is not None]
            cells.append(f"{100 * np.mean(vals):{w}.1f}" if vals else f"{'-':>{w}s}")
        print(f"{name[:18]:18s} {100 * shares[c]:7.1f}% " + " ".join(cells))


def scene_sizes(dm: SceneFolderDataModule) -> np.ndarray:
    """Each train and val scene's point count and footprint area in square metres (``footprint_area``:
    its floor plan with what stands on it, holes filled), ``(scenes, 2)``: how dense the scans are, so
    that a result can be set beside the rehearsals' (a scene cut to 50k points is sparser the larger
    its room)."""
    sizes = []
    for split in ("train", "val"):
        for d in dm.scene_dirs(split):
            coord = load_npy(d / "coord.npy")
            sizes.append((len(coord), footprint_area(coord)))
    return np.array(sizes, dtype=np.float64).reshape(-1, 2)


def describe_sizes(sizes: np.ndarray) -> str:
    """One line: the range and median of the scenes' points, footprints and points a footprint square
    metre."""

    def spread(v: np.ndarray, fmt: str) -> str:
        return f"{np.min(v):{fmt}}-{np.max(v):{fmt}} (median {np.median(v):{fmt}})"

    points, area = sizes[:, 0], sizes[:, 1]
    density = points / np.maximum(area, 1e-9)
    return (
        f"scenes: {spread(points, '.0f')} points, footprints of {spread(area, '.1f')} square metres, "
        f"{spread(density, '.0f')} points a square metre of footprint"
    )


def class_share(dm: SceneFolderDataModule, num_classes: int) -> list[float]:
    """Each class's share of the val points labelled with a scored class (real scans: floors and
    walls about half, many classes under 1 %)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for d in dm.scene_dirs("val"):
        seg = load_npy(d / "segment.npy").astype(np.int64)
        seg = seg[(seg >= 0) & (seg < num_classes)]
        counts += np.bincount(seg, minlength=num_classes)
    return (counts / max(int(counts.sum()), 1)).tolist()


def kmeans_handcrafted(
    dm: SceneFolderDataModule,
    num_classes: int,
    seed: int,
    unit: str = "superpoint",
    clusters: int | None = None,
) -> Scores:
    """K-means of the training units' descriptors (``unit``: the super-voxels, or the grown ``region``),
    the best of the teacher-free recipe's restarts (:func:`recipe_restarts`); each val unit takes its
    nearest centroid. With ``clusters`` > ``num_classes`` the centroids are
    merged into ``num_classes`` groups by Euclidean K-means first."""
    weights = recipe_weights()
    train = [_pooled(d, weights, unit)[0] for d in dm.scene_dirs("train")]
    feats = torch.from_numpy(np.concatenate(train))
    clusters = max(clusters or num_classes, num_classes)
    centroids = kmeans(feats, clusters, niter=80, seed=seed, nredo=recipe_restarts()).centroids
    group = torch.arange(clusters)
    if clusters > num_classes:
        group = merge_clusters(centroids, num_classes, seed=seed, spherical=False)
    metric = HungarianMIoU(num_classes)
    for d in dm.scene_dirs("val"):
        means, sp = _pooled(d, weights, unit)
        assign = group[torch.cdist(torch.from_numpy(means), centroids).argmin(1)]
        metric.update(assign[torch.from_numpy(sp)], torch.from_numpy(load_npy(d / "segment.npy")))
    return metric_scores(metric.compute())


def units_ceiling(dm: SceneFolderDataModule, num_classes: int, unit: str) -> Scores:
    """A DIAGNOSTIC that reads the labels: every val unit (``superpoint`` or ``region``) labelled with
    the majority class of its labelled points, Hungarian-matched as the rows are. The best any row
    pooling over those units could score (a unit with no labelled point takes class 0)."""
    metric = HungarianMIoU(num_classes)
    for d in dm.scene_dirs("val"):
        segment = load_npy(d / "segment.npy").astype(np.int64)
        units = _units(d, unit)
        scored = (segment >= 0) & (segment < num_classes)
        votes = np.zeros((int(units.max(initial=-1)) + 1, num_classes), dtype=np.int64)
        np.add.at(votes, (units[scored], segment[scored]), 1)
        majority = torch.from_numpy(votes.argmax(1)[units])
        metric.update(majority, torch.from_numpy(segment))
    return metric_scores(metric.compute())


def _quiet(seed: int, work: Path) -> list[str]:
    return [
        "--seed_everything", str(seed), "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "false", "--trainer.callbacks", "[]",
        "--trainer.default_root_dir", str(work),  # where LightningCLI saves each run's config.yaml
    ]  # fmt: skip


def _data(root: Path, args: argparse.Namespace, descriptors: bool, units: str = "region") -> list[str]:
    """The scene-folder data module; with ``descriptors`` the SVC recipes' data: descriptors, and
    ``units`` (default the grown regions) as the units SVC pools over; without, the dataset's
    super-voxels (the release's)."""
    out = [
        "--data", "unsup3d.pointdc.datamodules.SceneFolderDataModule",
        "--data.init_args.root", str(root),
        "--data.init_args.voxel_size", str(args.voxel_size),
        "--data.init_args.batch_size", str(args.batch_size),
        "--data.init_args.descriptors", json.dumps(args.descriptors or True) if descriptors else "null",
    ]  # fmt: skip
    return [*out, "--data.init_args.units", units if descriptors else "superpoint"]


def _svc(args: argparse.Namespace, seed: int, num_classes: int) -> list[str]:
    return [
        "--model.init_args.num_classes", str(num_classes), "--model.init_args.seed", str(seed),
        "--model.init_args.class_names", "null", "--trainer.enable_checkpointing", "false",
        "--trainer.max_epochs", str(args.svc_epochs),
        "--trainer.check_val_every_n_epoch", str(args.svc_epochs),
        *(["--model.init_args.lr", str(args.svc_lr)] if args.svc_lr is not None else []),
    ]  # fmt: skip


def _cmd(root: Path, args: argparse.Namespace, seed: int, num_classes: int, out: str) -> list[str]:
    return [
        *_quiet(seed, args.work), "--model.init_args.num_classes", str(num_classes),
        "--model.init_args.class_names", "null", "--trainer.max_epochs", str(args.cmd_epochs),
        "--trainer.check_val_every_n_epoch", str(args.cmd_epochs),
        "--trainer.callbacks", json.dumps([{
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": out, "save_last": True, "save_top_k": 0},
        }]),
    ]  # fmt: skip


def run_row(row: str, root: Path, dm, args: argparse.Namespace, seed: int, k: int) -> Scores:
    """One row for one seed: (mIoU, accuracy, per-class IoU) as fractions."""
    if row in CEILING_ROWS:
        return units_ceiling(dm, k, CEILING_ROWS[row])
    if row in KMEANS_ROWS:
        return kmeans_handcrafted(dm, k, seed, unit=KMEANS_ROWS[row], clusters=args.clusters)
    scratch = ["--model.init_args.init_checkpoint", "null"]
    if row == "random-clustering":
        svc = [*_quiet(seed, args.work), *_data(root, args, False), *_svc(args, seed, k), *scratch]
        return cli_scores(run_cli("validate", QUICK / "pointdc_svc.yaml", svc), k)
    if row == "svc-scratch":  # the release's units and pooling: super-voxels (in _data), Eq. 10 on
        svc = [*_quiet(seed, args.work), *_data(root, args, False), *_svc(args, seed, k), *scratch]
        svc += ["--model.init_args.superpoint_pooling", "true"]
        return cli_scores(run_cli("fit", QUICK / "pointdc_svc.yaml", svc), k)
    out = str(args.work / f"{row}-seed{seed}")
    extra = []  # the teacher-free rows' own arguments: over-clustering, a diagnostic's changes
    if args.clusters and args.clusters > k:
        extra = [
            "--model.init_args.num_clusters",
            str(args.clusters),
            "--model.init_args.merge_clusters",
            "true",
        ]
    extra += args.teacher_free_args or []
    own = _data(root, args, True, recipe_units())  # the teacher-free recipe's units
    if row == "teacher-free-untrained":
        svc = [*_quiet(seed, args.work), *own, *_svc(args, seed, k), *scratch, *extra]
        return cli_scores(run_cli("validate", QUICK / "pointdc_geometric_svc.yaml", svc), k)
    if row == "teacher-free":
        svc = [*_quiet(seed, args.work), *own, *_svc(args, seed, k), *extra]
        init = ["--model.init_args.init_checkpoint", "null"]
        if args.teacher_free_cmd:  # CMD distilling the descriptors first, over the SVC recipe's units
            cmd = [*_cmd(root, args, seed, k, out), *own]
            cli = run_cli("fit", QUICK / "pointdc_geometric_cmd.yaml", cmd)
            init = ["--model.init_args.init_checkpoint", cli.trainer.checkpoint_callback.last_model_path]
        return cli_scores(run_cli("fit", QUICK / "pointdc_geometric_svc.yaml", [*svc, *init]), k)
    if row == "teacher":
        targets = {"teacher": args.teacher, "allow_random_teacher": False, "views": "render"}
        cmd = [*_cmd(root, args, seed, k, out), *_data(root, args, False)]
        cmd += ["--data.init_args.feature_targets", json.dumps(targets)]
        ckpt = run_cli("fit", QUICK / "pointdc_cmd.yaml", cmd).trainer.checkpoint_callback.last_model_path
        svc = [*_quiet(seed, args.work), *_data(root, args, True), *_svc(args, seed, k)]
        svc += ["--model.init_args.init_checkpoint", ckpt]
        return cli_scores(run_cli("fit", QUICK / "pointdc_svc.yaml", svc), k)
    raise ValueError(f"unknown row {row!r}")


def present_miou(iou: list[float | None], class_share: list[float]) -> float:
    """The mean IoU over the classes that hold val points, the same classes for every row.

    The headline ``miou`` (:class:`~unsup3d.metrics.HungarianMIoU`, every other benchmark's) also
    averages in, as 0, each class absent from val to which a non-empty cluster was matched, and leaves
    out one whose matched cluster is empty: a row whose clusters collapse is then averaged over fewer
    classes. (GrowSP's and PointDC's releases, ``eval_ScanNet.py``, average over all classes, absent
    ones as 0: :func:`release_miou`.) Where
    every class holds val points the three are equal."""
    present = [v if v is not None else 0.0 for v, share in zip(iou, class_share, strict=True) if share > 0]
    return float(np.mean(present)) if present else float("nan")


def release_miou(iou: list[float | None]) -> float:
    """The mean IoU over all classes, those with no IoU as 0: the releases' (GrowSP's and PointDC's
    ``eval_ScanNet.py``, IoU = tp / (tp + fp + fn + 1e-8) and its mean over every class)."""
    return float(np.mean([v if v is not None else 0.0 for v in iou])) if iou else float("nan")


def _job(row: str, seed: int, args: argparse.Namespace, k: int) -> dict:
    """One (row, seed) in its own process: torch on one thread (the sparse convolution's best on a CPU)."""
    if not torch.cuda.is_available():
        torch.set_num_threads(1)
    dm = data_module(args.root, args.voxel_size, args.descriptors)  # prepared by main, before the jobs
    t0 = time.perf_counter()
    miou, acc, iou = run_row(row, args.root, dm, args, seed, k)
    return {
        "row": row, "seed": seed, "miou": miou, "acc": acc, "iou": iou, "seconds": time.perf_counter() - t0,
        "miou_present": present_miou(iou, args.class_share), "miou_all": release_miou(iou),
        "root": str(args.root), "num_classes": k, "teacher": args.teacher if row == "teacher" else None,
        "cmd_epochs": args.cmd_epochs, "svc_epochs": args.svc_epochs, "voxel_size": args.voxel_size,
        "clusters": max(args.clusters or k, k), "descriptors": args.descriptors, "svc_lr": args.svc_lr,
        "teacher_free_args": args.teacher_free_args if row.startswith("teacher-free") else None,
        "source_root": str(args.source_root), "train_scenes": args.train_scenes,
        "class_share": args.class_share,
    }  # fmt: skip


def _run_jobs(jobs: list[tuple[str, int]], args: argparse.Namespace, k: int):
    """Yield each job's record as it finishes; ``args.jobs`` processes at a time (1: in this process)."""
    if args.jobs <= 1:
        for row, seed in jobs:
            yield _job(row, seed, args, k)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        futures = [pool.submit(_job, row, seed, args, k) for row, seed in jobs]
        for future in as_completed(futures):
            yield future.result()


def main(argv: list[str] | None = None) -> dict[str, list[tuple[float, float]]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, required=True, help="scene folders: ROOT/{train,val}/<scene>/")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first-seed", type=int, default=0, help="seeds FIRST .. FIRST+SEEDS-1 (more seeds beside a run's)"
    )
    p.add_argument(
        "--teacher", default=None, help="a 2D teacher's name or local folder: adds the teacher row"
    )
    p.add_argument("--json", type=Path, default=None, help="write one JSON object per row and seed here")
    p.add_argument("--rows", nargs="+", default=None, choices=ROWS, help="only these rows")
    p.add_argument("--num-classes", type=int, default=None, help="default: largest class id + 1")
    p.add_argument("--voxel-size", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument(
        "--cmd-epochs", type=int, default=30, help="CMD epochs of the teacher row (and --teacher-free-cmd)"
    )
    p.add_argument(
        "--teacher-free-cmd",
        action="store_true",
        help="teacher-free: CMD distilling the descriptors before SVC (measured: no gain in its mIoU)",
    )
    p.add_argument("--svc-epochs", type=int, default=20)
    p.add_argument(
        "--svc-lr",
        type=float,
        default=None,
        help="SVC's lr for every SVC row (default: the recipes' 0.0075, which is for their batch of 2)",
    )
    p.add_argument(
        "--clusters",
        type=int,
        default=None,
        help="over-cluster the K-means and teacher-free rows into this many (merged into the classes)",
    )
    p.add_argument(
        "--jobs", type=int, default=min(2, os.cpu_count() or 1), help="rows run side by side (default 2)"
    )
    p.add_argument(
        "--descriptors",
        type=json.loads,
        default=None,
        help='settings of the descriptor pass as JSON, e.g. \'{"outline": "hull", "column_cap": null}\' '
        "(a diagnostic; default: the data module's)",
    )
    p.add_argument(
        "--teacher-free-args",
        type=shlex.split,
        default=None,
        help="more CLI arguments for the teacher-free rows' SVC recipe, e.g. "
        "'--model.init_args.superpoint_pooling false' (a diagnostic; recorded in the JSON rows)",
    )
    p.add_argument(
        "--class-names",
        default=None,
        help="names in the per-class table: scannet20, s3dis, ids or a comma-separated list "
        "(default: ScanNet-20's for 20 classes, S3DIS's for 13, else the ids)",
    )
    p.add_argument("--work", type=Path, default=Path("outputs/benchmarks/realscan"), help="checkpoints")
    p.add_argument(
        "--val-every", type=int, default=3, help="a root with no val scenes: hold out every n-th scene"
    )
    p.add_argument(
        "--train-scenes", type=int, default=None, help="train on the first n training scenes only (by name)"
    )
    args = p.parse_args(argv)
    rows = args.rows or [r for r in ROWS if r not in NAMED_ONLY and (r != "teacher" or args.teacher)]
    if "teacher" in rows and not args.teacher:
        p.error("the teacher row needs --teacher NAME|PATH")
    args.descriptors = descriptor_settings(args.descriptors)
    args.source_root = args.root  # the rows run on a view of it where they must (below)
    args.root = held_out_view(writable_view(args.root, args.work), args.work, args.val_every)
    args.root = train_subset_view(args.root, args.work, args.train_scenes)
    dm = prepare(args.root, args.voxel_size, args.descriptors)
    k = args.num_classes or count_classes(dm)
    names = class_names(args.class_names, k)
    args.class_share = class_share(dm, k)
    n_train, n_val = len(dm.scene_dirs("train")), len(dm.scene_dirs("val"))
    print(f"{args.root}: {n_train} train, {n_val} val scenes, {k} classes")
    print(describe_sizes(scene_sizes(dm)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(row, seed) for seed in seeds for row in rows]
    # the longest rows first, so that the last job to finish is a short one
    jobs.sort(key=lambda job: (-ROWS.index(job[0]), job[1]))
    t_all = time.perf_counter()
    records = {}
    for record in _run_jobs(jobs, args, k):
        records[(record["row"], record["seed"])] = record
        write_row("realscan", record)
    print(f"all rows: {time.perf_counter() - t_all:.0f} s with {args.jobs} process(es)")
    results: dict[str, list[tuple[float, float]]] = {r: [] for r in rows}
    present: dict[str, list[float]] = {r: [] for r in rows}
    for seed in seeds:
        for row in rows:
            record = records[(row, seed)]
            results[row].append((record["miou"], record["acc"]))
            present[row].append(record["miou_present"])
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(record) + "\n")
    absent = sum(share == 0 for share in args.class_share)
    print(f"\nPointDC on {args.root}, mean (std) of {args.seeds} seeds, Hungarian-matched on val, %")
    print(f"{'':22s} {'mIoU':>14s} {'Acc':>14s} {'mIoU, classes in val':>22s}")
    for row in rows:
        miou, acc = (np.array(results[row]) * 100).T
        mp = np.array(present[row]) * 100
        print(
            f"{row:22s} {miou.mean():6.2f} ({miou.std():4.2f}) {acc.mean():6.2f} ({acc.std():4.2f})"
            f" {mp.mean():14.2f} ({mp.std():4.2f})"
        )
    if absent:
        print(
            f"{absent} of the {k} classes hold no val points: mIoU counts each as 0 where a non-empty "
            "cluster was matched to it, so the classes it averages over differ between rows; the last "
            "column averages over the classes in val only, the same for every row"
        )
    print_class_table(records, rows, seeds, names, args.class_share)
    return results


if __name__ == "__main__":
    main()
