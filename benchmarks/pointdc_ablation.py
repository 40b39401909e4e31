"""PointDC's Table 4 on the synthetic rooms: each ingredient's share of the final mIoU.

Rows (each the mean of ``--seeds`` seeds, Hungarian-matched on the validation rooms):

1. random clustering: K-means (Eq. 8) on the features of an untrained backbone;
2. multi-view clustering: K-means of the lifted 2D features themselves, no 3D network (Eq. 3-6):
   each super-voxel's mean ``cmd_target`` over its seen points, spherical K-means (K = the classes,
   seeded) of the training super-voxels, each validation super-voxel in its nearest centroid (cosine).
   A validation super-voxel no view saw has no feature: its points count as unmatched (wrong for
   every class), so the row also reports ``seen_points`` (the fraction of labelled validation points
   in super-voxels with a seen point) and ``miou_seen`` / ``acc_seen`` (the metric over those alone);
3. CMD: K-means on the features distilled from the 2D teacher (Eq. 7);
4. + basic SVC: training on super-voxel K-means labels under augmentation (Eq. 8, 12),
   learnable classifier;
5. + non-parametric classifier (Eq. 9);
6. + super-voxel pooling (Eq. 10): the full method.

Runs the quickstart recipes (``experiments/quickstart/pointdc_{cmd,svc}.yaml``) through the CLI with
``--seed_everything`` per seed, CMD trained for 80 epochs instead of the quickstart's 20 (flags set both
stages' epochs), evaluated on ``--val-rooms`` validation rooms (default 6; the recipe has 2) beside the
recipe's 6 training rooms; the feature pass lifts targets onto the validation rooms too (for row 2).
Prints the table, appends one JSON row per configuration and seed (with the teacher and the epochs) to
benchmarks/results/pointdc_ablation.jsonl, and with ``--json PATH`` writes the same rows, one object a
line (``row``, ``seed``, ``miou``, ``acc`` as fractions, plus the settings), to PATH.

The 2D teacher (``--teacher``):

- ``recipe`` (default): the teacher the quickstart runs (:func:`resolve_teacher`): the 2D recipes'
  DINO ViT-S/8 where its weights are on this machine (``2d-recipe``), else the teacher-free path
  (``geometric``), the offline recipe (it says which when it starts);
- ``2d-recipe``: the 2D recipes as they stand: DINO ViT-S/8 from the local Hugging Face cache, else
  the tiny RANDOM ViT they allow (whose targets carry colour and texture, no semantics; a smoke test
  of the 2D path, as ``python -m unsup3d.quickstart random-teacher``);
- a Hugging Face name or a local folder (e.g. a downloaded ``facebook/dino-vits8``): that teacher,
  no random fallback; the paper's comparison;
- ``oracle``: a DIAGNOSTIC, not the method: the lifted targets of the training and validation rooms
  are replaced by noisy embeddings of the ground-truth classes (``benchmarks/_oracle_teacher.py``),
  which shows what the 3D side (distillation, clustering, SVC) makes of a teacher that does carry the
  classes (and row 2, what K-means makes of those targets where the views saw the points);
- ``geometric``: no 2D teacher, the teacher-free path the quickstart runs where no 2D weights are found
  (``experiments/quickstart/pointdc_geometric_{cmd,svc}.yaml``): CMD distils the hand-made
  descriptors (:mod:`unsup3d.pointdc.geometric`), and SVC clusters the joint feature
  ``[network, descriptors]`` and scores points in it. Its rows: random clustering and CMD are the
  network's features alone (no descriptors: what the network learnt), row 2 is K-means of the
  teacher's targets with no network (Euclidean, of the group-weighted descriptors pooled over SVC's
  units, the grown regions unless ``--units`` says otherwise: the same units as every other row),
  and the SVC rows are the recipe's, evaluated in the joint space. The random and CMD rows also carry
  ``joint_miou`` / ``joint_acc``: the same network evaluated in the joint space with no SVC training,
  which tells SVC's training from the descriptors it clusters beside the network.

Each teacher prepares its data under its own root (``data/benchmarks/pointdc_ablation/<teacher>``).

``--kmeans-draws R`` (a DIAGNOSTIC): a row's mIoU is one K-means draw's, and draws differ by several
points on the same features (oracle CMD features, 8 draws: 29.7-37.3). With R > 0 the network of every
row but multi-view (the untrained one, CMD's, each SVC row's after training) is also scored by R more
draws (K-means of the training units with seeds ``DRAW_SEED + r``, the same for every row; each
validation point in its nearest centroid, as the CMD row), reported as ``draws_miou`` / ``draws_acc``
(the mean over draws) beside the row's own number. It tells what a stage did to the features from what
its last draw happened to give. With the geometric teacher the draws score every row's network in the
joint space (beside the descriptors), as its SVC rows are scored.

    python benchmarks/pointdc_ablation.py --seeds 3 --json results.jsonl
    python benchmarks/pointdc_ablation.py --seeds 3 --teacher 2d-recipe
    python benchmarks/pointdc_ablation.py --seeds 3 --teacher ./dino-vits8
    python benchmarks/pointdc_ablation.py --seeds 3 --teacher oracle
    python benchmarks/pointdc_ablation.py --seeds 3 --teacher geometric
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import run_cli, val_metrics, write_row  # noqa: E402
from benchmarks._oracle_teacher import write_oracle_targets  # noqa: E402
from benchmarks.realscan import recipe_weights  # noqa: E402
from unsup3d.cli import preprocess  # noqa: E402
from unsup3d.clustering import kmeans  # noqa: E402
from unsup3d.metrics import HungarianMIoU  # noqa: E402
from unsup3d.pointdc.clustering_pass import descriptor_scale  # noqa: E402
from unsup3d.pointdc.feature_pass import SEEN_KEY, TARGET_KEY  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "experiments" / "quickstart"

#: CMD's epochs here: the quickstart's 20 (its 10-minute budget) are ~60 steps, too few for the point
#: network to take in the targets (with oracle targets, CMD alone reached 11.8 % mIoU after 20 epochs
#: and 27.3 % after 80, seed 0)
CMD_EPOCHS = 80

#: validation rooms by default: the quickstart recipe's 2 are too few to tell rows a point or two apart
#: (CMD alone ranged 12.3 to 23.2 % mIoU over 3 seeds on them, random ViT); the README's tables have 6
VAL_ROOMS = 6

MULTI_VIEW = "multi-view clustering"
#: the teacher-free path as Table 4's teacher: the descriptors instead of a 2D model's features
GEOMETRIC = "geometric"
#: the 2D recipes as they stand (their teacher, else the random ViT they allow)
TWO_D = "2d-recipe"
#: the first K-means seed of ``--kmeans-draws`` (apart from the seeds training uses: 0-2 and epochs)
DRAW_SEED = 100
#: the feature pass lifts targets onto the validation rooms too: the multi-view row clusters them
TARGET_SPLITS = ["--data.init_args.feature_targets.splits", "[train, val]"]

ROWS = [
    ("random clustering", None),
    (MULTI_VIEW, None),
    ("CMD", None),
    ("+ basic SVC", {"nonparametric": "false", "superpoint_pooling": "false"}),
    ("+ non-parametric classifier", {"nonparametric": "true", "superpoint_pooling": "false"}),
    ("+ super-voxel pooling", {"nonparametric": "true", "superpoint_pooling": "true"}),
]


def recipes(teacher: str) -> tuple[Path, Path]:
    """The quickstart recipes (CMD, SVC) that ``teacher``'s rows run: the teacher-free pair for
    ``geometric``, else the 2D pair."""
    if teacher == GEOMETRIC:
        return QUICK / "pointdc_geometric_cmd.yaml", QUICK / "pointdc_geometric_svc.yaml"
    return QUICK / "pointdc_cmd.yaml", QUICK / "pointdc_svc.yaml"


def resolve_teacher(teacher: str) -> tuple[str, str]:
    """The teacher ``--teacher`` runs and why. ``recipe`` is the quickstart's choice
    (:func:`unsup3d.quickstart.pointdc_recipes`): the 2D recipes (``2d-recipe``) where their teacher's
    weights are on this machine, else the teacher-free path (``geometric``); any other value is itself."""
    if teacher != "recipe":
        return teacher, f"{teacher} (as asked)"
    from unsup3d.quickstart import pointdc_recipes

    cmd, _, why = pointdc_recipes(QUICK)
    chosen = GEOMETRIC if cmd == recipes(GEOMETRIC)[0] else TWO_D
    return chosen, f"{chosen}, as the quickstart ({why}; --teacher {TWO_D} runs the 2D recipes regardless)"


def teacher_args(teacher: str, data_root: Path) -> tuple[list[str], list[str]]:
    """Arguments for (CMD, SVC) that put the runs of ``teacher`` on ``data_root`` and, for a named
    teacher, make the feature pass use it with no random fallback. CMD's feature pass lifts targets
    onto the training and validation rooms (the multi-view row clusters the validation rooms' too);
    the geometric teacher has no feature pass (its descriptors are written for every split)."""
    common = ["--data.init_args.data_root", str(data_root)]
    if teacher == GEOMETRIC:
        return common, common
    if teacher in (TWO_D, "oracle"):
        return [*common, *TARGET_SPLITS], common
    named = [
        "--data.init_args.feature_targets.teacher", teacher,
        "--data.init_args.feature_targets.allow_random_teacher", "false",
    ]  # fmt: skip
    return [*common, *named, *TARGET_SPLITS], common


def cmd_checkpoint(
    store: Path | None, tag: str, seed: int, cmd_args: list[str], recipe: Path | None = None
) -> tuple[str, object]:
    """CMD's checkpoint for ``seed`` and its data module: trained with ``cmd_args`` by the CMD
    ``recipe`` (default: the 2D one), or, with a ``store`` that holds ``<tag>-seed<k>-<epochs>ep.ckpt``
    (``tag``: the teacher's, as its data root's) from an earlier run, that one (its data module
    prepared, not trained); a newly trained checkpoint is copied into ``store``."""
    recipe = recipe or QUICK / "pointdc_cmd.yaml"
    epochs = cmd_args[cmd_args.index("--trainer.max_epochs") + 1]
    kept = None if store is None else store / f"{tag}-seed{seed}-{epochs}ep.ckpt"
    if kept is not None and kept.is_file():
        print(f"CMD, seed {seed}: reusing {kept}", flush=True)
        pairs = zip(cmd_args[::2], cmd_args[1::2], strict=True)
        data = [x for key, value in pairs if key.startswith("--data") for x in (key, value)]
        return str(kept), preprocess(["--config", str(recipe), *data])
    cmd = run_cli("fit", recipe, cmd_args)
    ckpt = cmd.trainer.checkpoint_callback.last_model_path
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ckpt, kept)
    return ckpt, cmd.datamodule


def room_args(val_rooms: int | None) -> list[str]:
    """Data arguments for ``val_rooms`` validation rooms beside the recipe's training rooms (None: the
    recipe's split). More validation rooms resolve smaller differences between rows: with the recipe's
    2, CMD alone ranged 12.3 to 23.2 % mIoU across 3 seeds."""
    if val_rooms is None:
        return []
    if val_rooms < 1:
        raise SystemExit(f"--val-rooms must be at least 1, got {val_rooms}")
    cfg = recipe_data()
    train = int(cfg["num_scenes"]) - int(cfg["num_val"])
    return ["--data.init_args.num_scenes", str(train + val_rooms), "--data.init_args.num_val", str(val_rooms)]


def recipe_data(svc: Path | None = None) -> dict:
    """The SVC recipe's (default: the 2D one's) data module arguments."""
    return yaml.safe_load((svc or QUICK / "pointdc_svc.yaml").read_text())["data"]["init_args"]


def recipe_units(svc: Path | None = None) -> str:
    """The units (``superpoint`` or ``region``) the SVC recipe's data module pools over."""
    return recipe_data(svc).get("units", "superpoint")


#: the geometric teacher's random and CMD rows: K-means of the network's features alone (Eq. 8 as
#: written) and evaluation by them, the descriptors left out
NETWORK_ONLY = ["--model.init_args.descriptor_weights", "null", "--model.init_args.eval_descriptors", "false"]


def prepare_oracle(cmd_args: list[str]) -> None:
    """Run the CMD recipe's preparation (scenes, feature pass over training and validation rooms), then
    write oracle targets over it (training rooms first, so theirs are those of a training-only run)."""
    dm = preprocess(["--config", str(QUICK / "pointdc_cmd.yaml"), *cmd_args])
    dirs = [*dm.scene_dirs("train"), *dm.scene_dirs("val")]
    n = write_oracle_targets(dirs, num_classes=len(dm.class_names))
    print(f"oracle targets written over {n} training and validation scenes (a diagnostic, not the method)",
          flush=True)  # fmt: skip


def kmeans_draws(
    backbone: torch.nn.Module, svc_args: list[str], draws: int, work: Path, recipe: Path | None = None
) -> list[tuple[float, float]]:
    """mIoU / accuracy of ``draws`` K-means draws on ``backbone``'s features: the SVC ``recipe``'s
    (default: the 2D one) validation of a network with no clustering yet (as the CMD row), with seeds
    ``DRAW_SEED + r``."""
    recipe = recipe or QUICK / "pointdc_svc.yaml"
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / "draws-backbone.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()}}, ckpt)
    out = []
    for r in range(draws):
        args = [*svc_args, "--model.init_args.init_checkpoint", str(ckpt),
                "--model.init_args.seed", str(DRAW_SEED + r)]  # fmt: skip
        out.append(val_metrics(run_cli("validate", recipe, args)))
    ckpt.unlink()
    return out


# -- Table 4's second row: K-means of the lifted 2D features, no 3D network ---------------------------


def unit_features(
    target: np.ndarray, seen: np.ndarray, superpoint: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """PointDC Eq. 6's second half over a scene: the mean of the lifted targets over the seen points of
    each unit, a unit being a super-voxel (a point with none, ``-1``, is a unit of its own). Returns the
    ``(U, D)`` float32 means (zeros where no point is seen), whether each unit has a seen point, and each
    point's unit."""
    unit = np.asarray(superpoint, dtype=np.int64).copy()
    alone = unit < 0
    unit[alone] = (unit.max(initial=-1) + 1) + np.arange(int(alone.sum()))
    _, unit = np.unique(unit, return_inverse=True)
    unit = unit.reshape(-1)
    num = int(unit.max(initial=-1)) + 1
    seen = np.asarray(seen, dtype=bool)
    t = torch.from_numpy(np.asarray(target, dtype=np.float32)[seen])
    u = torch.from_numpy(unit[seen])
    sums = torch.zeros(num, t.shape[1]).index_add_(0, u, t)
    counts = torch.bincount(u, minlength=num)
    return sums / counts.clamp_min(1)[:, None].float(), counts > 0, unit


def _load(scene_dir: Path, name: str) -> np.ndarray:
    return np.load(scene_dir / f"{name}.npy", allow_pickle=False)


def unseen_unmatched(seen_result: dict, unseen_counts: torch.Tensor) -> tuple[float, float]:
    """mIoU and accuracy when points no view saw count as unmatched: ``seen_result`` is
    ``HungarianMIoU.compute()`` over the seen points (its matching is that of all points, since unseen
    points are in no cluster), ``unseen_counts`` ``(C,)`` the unseen points of each class, each a false
    negative of its class (the metric's rule for points of unmatched clusters)."""
    confusion = seen_result["confusion"].detach().cpu().double()
    assignment = seen_result["assignment"].cpu()
    matched = torch.nonzero(assignment >= 0).flatten()
    classes = assignment[matched]
    tp = torch.zeros(confusion.shape[1], dtype=torch.float64)
    predicted = torch.zeros_like(tp)
    tp[classes] = confusion[matched, classes]
    predicted[classes] = confusion[matched].sum(1)
    actual = confusion.sum(0) + unseen_counts.double()
    union = actual + predicted - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()), float(tp.sum() / actual.sum())


def _unit_inputs(
    d: Path, target_key: str, seen_key: str | None, unit_key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target = _load(d, target_key)
    seen = np.ones(len(target), dtype=bool) if seen_key is None else _load(d, seen_key)
    return target, seen, _load(d, unit_key)


def multiview_clustering(
    train_dirs: Sequence[Path],
    val_dirs: Sequence[Path],
    num_classes: int,
    *,
    niter: int,
    seed: int,
    restarts: int = 1,
    target_key: str = TARGET_KEY,
    seen_key: str | None = SEEN_KEY,
    scale: torch.Tensor | None = None,
    unit_key: str = "superpoint",
) -> dict[str, float]:
    """Table 4's *multi-view clustering*: spherical K-means (``num_classes`` clusters, ``seed``, the
    best of ``restarts`` runs as SVC's clustering keeps) of the
    training rooms' units with a seen point (:func:`unit_features`); each validation unit with a seen
    point takes its nearest centroid by cosine, and its labelled points enter the Hungarian metric;
    units no view saw count as unmatched (:func:`unseen_unmatched`). Returns ``miou`` / ``acc`` (all
    labelled validation points), ``miou_seen`` / ``acc_seen`` (the seen units' points alone) and
    ``seen_points`` (their fraction).

    The geometric teacher's row: ``target_key="descriptor"``, ``seen_key=None`` (every point has its
    descriptors) and ``scale`` (per-column weights, :func:`descriptor_scale`): Euclidean K-means of
    the weighted unit means and the nearest centroid by distance, as SVC's joint clustering treats the
    descriptors; ``unit_key="region"`` pools over the grown regions (``region.npy``) instead of the
    super-voxels."""
    feats = []
    for d in train_dirs:
        means, has, _ = unit_features(*_unit_inputs(d, target_key, seen_key, unit_key))
        feats.append(means[has])
    x = torch.cat(feats)
    if scale is not None:
        centroids = kmeans(x * scale, num_classes, niter=niter, seed=seed, nredo=restarts).centroids.float()
    else:
        centroids = kmeans(x, num_classes, niter=niter, spherical=True, seed=seed, nredo=restarts).centroids
        centroids = F.normalize(centroids.float(), dim=1)
    metric = HungarianMIoU(num_classes)
    unseen = torch.zeros(num_classes, dtype=torch.int64)
    for d in val_dirs:
        means, has, unit = unit_features(*_unit_inputs(d, target_key, seen_key, unit_key))
        if scale is not None:
            cluster = torch.cdist(means * scale, centroids).argmin(1)
        else:
            cluster = (F.normalize(means, dim=1) @ centroids.T).argmax(1)
        segment = torch.from_numpy(_load(d, "segment").astype(np.int64))
        unit_t = torch.from_numpy(unit)
        point_seen = has[unit_t]
        metric.update(cluster[unit_t[point_seen]], segment[point_seen])
        labelled = segment[~point_seen]
        labelled = labelled[(labelled >= 0) & (labelled < num_classes)]
        unseen += torch.bincount(labelled, minlength=num_classes)
    seen_result = metric.compute()
    miou, acc = unseen_unmatched(seen_result, unseen)
    seen_points = float(seen_result["confusion"].sum())
    return {
        "miou": miou,
        "acc": acc,
        "miou_seen": float(seen_result["miou"]),
        "acc_seen": float(seen_result["acc"]),
        "seen_points": seen_points / (seen_points + float(unseen.sum())),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--cmd-epochs",
        type=int,
        default=CMD_EPOCHS,
        help=f"CMD epochs (default {CMD_EPOCHS}; the quickstart's: 20)",
    )
    p.add_argument("--svc-epochs", type=int, default=None, help="override the quickstart SVC epochs")
    p.add_argument(
        "--teacher",
        default="recipe",
        help="recipe (the quickstart's: 2d-recipe where its weights are here, else geometric), 2d-recipe, "
        "oracle, geometric, or a teacher's name / local folder",
    )
    p.add_argument(
        "--data-root", type=Path, default=None, help="default: data/benchmarks/pointdc_ablation/<teacher>"
    )
    p.add_argument("--json", type=Path, default=None, help="write one JSON object per row and seed here")
    p.add_argument(
        "--cmd-checkpoints",
        type=Path,
        default=None,
        help="keep each seed's CMD checkpoint here (<teacher>-seed<k>-<epochs>ep.ckpt) and reuse one that "
        "exists instead of training CMD again (CMD does not depend on the SVC settings)",
    )
    p.add_argument(
        "--units",
        choices=["recipe", "region", "superpoint"],
        default="recipe",
        help="the segments SVC clusters and evaluation pools over: the SVC recipe's (grown regions), or "
        "forced; superpoint is the release's (the dataset's super-voxels)",
    )
    p.add_argument(
        "--val-rooms",
        type=int,
        default=VAL_ROOMS,
        help=f"validation rooms beside the recipe's 6 training rooms (default {VAL_ROOMS}; 2 is the recipe's "
        "split, whose rows swing by several points from seed to seed)",
    )
    p.add_argument(
        "--kmeans-draws",
        type=int,
        default=0,
        help="also score each row's network by this many K-means draws (a diagnostic; see the docstring)",
    )
    p.add_argument(
        "--svc-args",
        type=shlex.split,
        default=[],
        help="more CLI arguments for every run of the SVC recipe (the random, CMD and SVC rows), e.g. "
        "'--model.init_args.kmeans_restarts 5' (a diagnostic; recorded in the JSON rows)",
    )
    args = p.parse_args()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text("")
    teacher, why = resolve_teacher(args.teacher)
    print(f"Table 4's teacher: {why}", flush=True)
    tag = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(teacher).name or teacher)
    data_root = args.data_root or Path("data/benchmarks/pointdc_ablation") / tag
    cmd_teacher, svc_teacher = teacher_args(teacher, data_root)
    cmd_teacher += room_args(args.val_rooms)
    svc_teacher += room_args(args.val_rooms)
    tag = f"{tag}-val{args.val_rooms}"  # other rooms: a kept CMD checkpoint of another split must not match
    if args.units != "recipe":
        svc_teacher += ["--data.init_args.units", args.units]
    if teacher == "oracle":
        prepare_oracle(cmd_teacher)

    cmd_recipe, svc_recipe = recipes(teacher)
    geometric = teacher == GEOMETRIC
    units = args.units if args.units != "recipe" else recipe_units(svc_recipe)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in ROWS}
    extras: dict[str, dict] = {}  # the multi-view row's coverage, per seed
    draws: dict[str, list[tuple[float, float]]] = {}  # --kmeans-draws: per row, each seed's mean
    joints: dict[str, list[tuple[float, float]]] = {}  # geometric: random / CMD in the joint space
    targets = {}  # row 2's: the lifted 2D features, or the geometric teacher's descriptors
    if geometric:  # weighted as SVC joins them, pooled over the rows' units
        scale = descriptor_scale(recipe_weights())
        targets = {"target_key": "descriptor", "seen_key": None, "scale": scale, "unit_key": units}
    nets: dict[str, torch.nn.Module] = {}
    for seed in range(args.seeds):
        common = ["--seed_everything", str(seed), "--trainer.enable_progress_bar", "false"]
        cmd_args = [*common, "--trainer.logger", "false", *cmd_teacher]
        cmd_args += ["--trainer.max_epochs", str(args.cmd_epochs)]
        svc_common = [*common, "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
                      "--trainer.callbacks", "[]", "--model.init_args.seed", str(seed),
                      *svc_teacher, *args.svc_args]  # fmt: skip
        if args.svc_epochs is not None:  # validated once, after the last epoch (the rows' numbers)
            svc_common += ["--trainer.max_epochs", str(args.svc_epochs),
                           "--trainer.check_val_every_n_epoch", str(args.svc_epochs)]  # fmt: skip
        t0 = time.perf_counter()
        untrained = [*svc_common, "--model.init_args.init_checkpoint", "null"]
        random_row = run_cli("validate", svc_recipe, untrained + (NETWORK_ONLY if geometric else []))
        results["random clustering"].append(val_metrics(random_row))
        nets["random clustering"] = random_row.model.backbone
        ckpt, cmd_dm = cmd_checkpoint(args.cmd_checkpoints, tag, seed, cmd_args, cmd_recipe)
        svc_hp = random_row.model.hparams  # K and the K-means iterations of the SVC recipe's evaluation
        mv = multiview_clustering(
            cmd_dm.scene_dirs("train"), cmd_dm.scene_dirs("val"), svc_hp.num_classes,
            niter=svc_hp.kmeans_iters, seed=seed, restarts=svc_hp.kmeans_restarts, **targets,
        )  # fmt: skip
        results[MULTI_VIEW].append((mv.pop("miou"), mv.pop("acc")))
        extras[MULTI_VIEW] = {**mv, "unseen_superpoints": "unmatched"}
        with_cmd = [*svc_common, "--model.init_args.init_checkpoint", ckpt]
        cmd_row = run_cli("validate", svc_recipe, with_cmd + (NETWORK_ONLY if geometric else []))
        results["CMD"].append(val_metrics(cmd_row))
        nets["CMD"] = cmd_row.model.backbone
        if geometric:  # the same networks in the joint space, no SVC training: what the training adds
            for name, start in (("random clustering", untrained), ("CMD", with_cmd)):
                joint = val_metrics(run_cli("validate", svc_recipe, start))
                joints.setdefault(name, []).append(joint)
                extras.setdefault(name, {}).update(joint_miou=joint[0], joint_acc=joint[1])
        for name, switches in ROWS[3:]:  # the SVC rows
            extra = [a for k, v in switches.items() for a in (f"--model.init_args.{k}", v)]
            svc_row = run_cli("fit", svc_recipe, [*with_cmd, *extra])
            results[name].append(val_metrics(svc_row))
            nets[name] = svc_row.model.backbone
        del cmd_dm
        if args.kmeans_draws > 0:
            for name, net in nets.items():
                got = kmeans_draws(net, svc_common, args.kmeans_draws, data_root / "draws", svc_recipe)
                got = np.array(got)
                draws.setdefault(name, []).append(tuple(got.mean(0)))
                extras.setdefault(name, {}).update(
                    draws_miou=float(got[:, 0].mean()), draws_acc=float(got[:, 1].mean()),
                    draws=args.kmeans_draws, draws_miou_each=got[:, 0].tolist())  # fmt: skip
        nets.clear()
        for name, _ in ROWS:
            miou, acc = results[name][-1]
            row = {"row": name, "seed": seed, "miou": miou, "acc": acc, "teacher": teacher,
                   "teacher_asked": args.teacher,
                   "units": units, "cmd_epochs": args.cmd_epochs, "svc_epochs": args.svc_epochs,
                   "val_rooms": args.val_rooms, "svc_args": args.svc_args or None,
                   "seconds_all_rows": time.perf_counter() - t0, **extras.get(name, {})}  # fmt: skip
            write_row("pointdc_ablation", row)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")

    print(f"\nPointDC Table 4, synthetic rooms, teacher {teacher}, SVC units {units}, "
          f"mean (std) of {args.seeds} seeds, %")  # fmt: skip
    head = f"{'':32s} {'mIoU':>14s} {'Acc':>14s}"
    print(head + (f" {f'mIoU, {args.kmeans_draws} draws':>20s}" if draws else ""))
    for name, _ in ROWS:
        miou, acc = (np.array(results[name]) * 100).T
        line = f"{name:32s} {miou.mean():6.2f} ({miou.std():4.2f}) {acc.mean():6.2f} ({acc.std():4.2f})"
        if name in draws:
            d = np.array(draws[name])[:, 0] * 100
            line += f" {d.mean():13.2f} ({d.std():4.2f})"
        print(line)
    if geometric:
        for name in ("random clustering", "CMD"):
            j = np.array(joints[name]) * 100
            print(f"{name}, the same network evaluated beside the descriptors (joint space, no SVC "
                  f"training): {j[:, 0].mean():.2f} ({j[:, 0].std():.2f}) mIoU, "
                  f"{j[:, 1].mean():.2f} ({j[:, 1].std():.2f}) Acc")  # fmt: skip
    elif MULTI_VIEW in extras:
        e = extras[MULTI_VIEW]
        print(f"{MULTI_VIEW}: points of super-voxels no view saw count as unmatched; the views saw "
              f"{100 * e['seen_points']:.1f} % of the labelled validation points, on which it scores "
              f"{100 * e['miou_seen']:.2f} mIoU / {100 * e['acc_seen']:.2f} Acc (last seed)")  # fmt: skip


if __name__ == "__main__":
    main()
