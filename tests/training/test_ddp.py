"""The quickstart SVC and P2C under ``--trainer.strategy=ddp --trainer.devices=2`` (gloo, CPU) against one
process: the CLI runs as a subprocess, as a user runs it (Lightning relaunches the command for rank 1).

What is identical, what is close, and why:
- SVC clusters at the start of epoch 0 from the seeded initial weights, so the checkpoint's centroids
  and pseudo labels are identical bit for bit: K-means runs once, on rank 0, on the rows of both ranks
  in one process's order (``training.common.rank_share``), and the labels are gathered.
- Validation of one checkpoint on 2 processes gives the very metrics of 1 process (SVC: the Hungarian
  metric's confusion matrix is summed, each validation scene is on exactly one rank; P2C: the K-means
  probe clusters the same points of every frame in frame order).
- Training 2 processes x batch 1 is not 1 process x batch 2. SVC with ``sync_batchnorm``: BatchNorm
  statistics are those of the whole batch, and the run equals, to float rounding, one process
  whose loss is the mean of the scenes' mean losses, which is what DDP's gradient averaging
  computes; the one-process loss is the mean over all points (the scenes' point counts differ).
  P2C cannot sync its BatchNorms on CPU (torch's SyncBatchNorm, which its dense heads would become,
  refuses CPU tensors), so each rank normalises its own frame: its weights are close, not equal.
- Data preparation runs once (Lightning calls ``prepare_data`` on local rank 0 only) and feature
  re-tracking splits the sequences over the ranks: the track files and their statistics are those of
  one process.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from tests._dist import run_distributed
from unsup3d.models import MinkUNet, Res16UNet
from unsup3d.pointdc.clustering_pass import PseudoLabels, cluster_pass
from unsup3d.pointdc.datamodules import SyntheticRoomsDataModule
from unsup3d.pointdc.svc import SVCModule
from unsup3d.stssl.datamodules import SyntheticLidarDataModule
from unsup3d.stssl.track_cache import track_dir
from unsup3d.stssl.tracking import tracking_stats
from unsup3d.training.common import rank_share

# the modules, not the functions the packages export under the same names
kmeans_module = importlib.import_module("unsup3d.clustering.kmeans")
lidar_tracks = importlib.import_module("unsup3d.stssl.track_cache")

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "experiments" / "quickstart"

pytestmark = pytest.mark.distributed


# -- instrumentation, imported by the CLI's processes through the configs' class paths ---------------


class CountedRooms(SyntheticRoomsDataModule):
    """The synthetic rooms, counting this process's ``prepare_data`` calls."""

    prepare_calls = 0

    def prepare_data(self) -> None:
        self.prepare_calls += 1
        super().prepare_data()


class CountedLidar(SyntheticLidarDataModule):
    """The synthetic LiDAR sequences, counting this process's ``prepare_data`` calls."""

    prepare_calls = 0

    def prepare_data(self) -> None:
        self.prepare_calls += 1
        super().prepare_data()


class Record(Callback):
    """Test instrumentation in each of the CLI's processes: counts this process's K-means runs (faiss
    training, not calls of the collective wrapper), keeps the initial weights (rank 0), and at the end
    writes the counts, the final logged metrics and a digest of the parameters to ``rank<r>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.kmeans_runs = 0
        inner = kmeans_module._cluster

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.kmeans_runs += 1
            return inner(*args, **kwargs)

        kmeans_module._cluster = counted

    def on_sanity_check_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.sanity = {k: float(v) for k, v in trainer.callback_metrics.items()}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            torch.save(pl_module.state_dict(), self.out_dir / "initial.pt")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        digest = hashlib.sha1()
        for p in pl_module.parameters():  # trainable and frozen (BYOL's target branch)
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
        record = {
            "kmeans_runs": self.kmeans_runs,
            "prepare_calls": getattr(trainer.datamodule, "prepare_calls", None),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "sanity": getattr(self, "sanity", None),
            "parameters": digest.hexdigest(),
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


# -- running the CLI -------------------------------------------------------------------------------


def _config(recipe: str, run_dir: Path, data_class: str, data: dict, model: dict, trainer: dict) -> Path:
    """The quickstart ``recipe`` at a tiny size, with this module's instrumentation and no logger."""
    cfg = yaml.safe_load((QUICKSTART / recipe).read_text())
    cfg["data"]["class_path"] = f"{__name__}.{data_class}"
    cfg["data"]["init_args"].update(data)
    cfg["model"]["init_args"]["backbone"]["init_args"]["width"] = 0.25
    cfg["model"]["init_args"].update(model)
    t = cfg["trainer"]
    t.update(logger=False, enable_progress_bar=False, enable_model_summary=False)
    t.update(max_epochs=1, check_val_every_n_epoch=1, num_sanity_val_steps=0)
    t.update(trainer)
    t["default_root_dir"] = str(run_dir)
    t["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(run_dir / "checkpoints"), "save_last": True},
        },
        {"class_path": f"{__name__}.Record", "init_args": {"out_dir": str(run_dir / "record")}},
    ]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(cfg)))
    return path


def _cli(command: str, config: Path, devices: int, *extra: str) -> list[dict]:
    """``python -m unsup3d.cli <command> --config <config>`` on ``devices`` CPU processes (ddp when 2);
    returns each rank's record."""
    args = [sys.executable, "-m", "unsup3d.cli", command, "--config", str(config)]
    args += ["--trainer.accelerator=cpu", f"--trainer.devices={devices}", *extra]
    if devices > 1:
        args.append("--trainer.strategy=ddp")
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]),
        UNSUP3D_CPU_THREADS="1",
        WANDB_MODE="offline",
        WANDB_DIR=str(config.parent),
        PYTHONWARNINGS="ignore",
    )
    done = subprocess.run(args, cwd=config.parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    records = sorted((config.parent / "record").glob("rank*.json"))
    assert len(records) == devices, f"expected {devices} records, got {[p.name for p in records]}"
    return [json.loads(p.read_text()) for p in records]


def _runs(
    recipe: str, base: Path, data_class: str, data: dict, model: dict, trainer: dict, validate: bool,
    *flags: str,
) -> dict[str, Any]:  # fmt: skip
    """Fit on 1 process (batch 2), fit on 2 (batch 1 each, ``flags`` added), and with ``validate``,
    validate the 1-process checkpoint on 2 processes; the records, checkpoints and initial weights."""
    def config(name: str, batch: int) -> Path:
        return _config(recipe, base / name, data_class, dict(data, batch_size=batch), model, trainer)

    out = {"one": _cli("fit", config("one", 2), 1), "two": _cli("fit", config("two", 1), 2, *flags)}
    if validate:
        ckpt = base / "one" / "checkpoints" / "last.ckpt"
        out["validate"] = _cli("validate", config("validate", 1), 2, f"--ckpt_path={ckpt}")
    for name in ("one", "two"):
        out[f"ckpt_{name}"] = torch.load(base / name / "checkpoints" / "last.ckpt", weights_only=True)
        out[f"initial_{name}"] = torch.load(base / name / "record" / "initial.pt", weights_only=True)
    return out


def _updates(runs: dict[str, Any], keys: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The change of the ``keys`` over training on 1 and on 2 processes, flattened (float64)."""
    init = runs["initial_one"]
    for k in keys:  # both runs start from the same seeded weights
        assert torch.equal(init[k], runs["initial_two"][k]), k
    one, two = runs["ckpt_one"]["state_dict"], runs["ckpt_two"]["state_dict"]
    return tuple(torch.cat([(run[k] - init[k]).double().flatten() for k in keys]) for run in (one, two))


def _gap(update: torch.Tensor, reference: torch.Tensor) -> float:
    """``|update - reference| / |reference|``."""
    return float((update - reference).norm() / reference.norm())


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def _checked_equal(runs: dict[str, Any], keys: list[str]) -> dict[str, float]:
    """The validation metrics of the 1-process fit, equal on both ranks of the 2-process validation."""
    fit_one = runs["one"][0]["metrics"]
    val_keys = [k for k in fit_one if k.startswith("val/")]
    assert set(keys) <= set(val_keys)
    for rank in runs["validate"]:
        assert {k: rank["metrics"][k] for k in val_keys} == {k: fit_one[k] for k in val_keys}
    return fit_one


# -- PointDC SVC -----------------------------------------------------------------------------------

# 2 training scenes (one a rank at batch 1) and 3 validation scenes (2 on rank 0, 1 on rank 1). Lightning
# refuses a rank without validation batches, so there are at least as many validation scenes as ranks.
ROOMS = {"num_scenes": 5, "num_val": 3, "frames_per_scene": 1}
SVC_DATA = {"voxel_size": 0.1, "val_batch_size": 1}
SVC_MODEL = {"kmeans_iters": 20}


@pytest.fixture(scope="module")
def rooms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rooms")
    SyntheticRoomsDataModule(**ROOMS, data_root=str(root)).prepare_data()
    return root


@pytest.fixture(scope="module")
def svc_runs(rooms: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = dict(ROOMS, **SVC_DATA, data_root=str(rooms))
    base = tmp_path_factory.mktemp("svc_ddp")
    return _runs(
        "pointdc_svc.yaml", base, "CountedRooms", data, SVC_MODEL, {}, True, "--trainer.sync_batchnorm=true"
    )


def test_svc_clusters_once_on_rank_zero_and_prepares_once(svc_runs: dict[str, Any]) -> None:
    assert [r["kmeans_runs"] for r in svc_runs["one"]] == [1]
    assert [r["kmeans_runs"] for r in svc_runs["two"]] == [1, 0]  # rank 0 only, for both ranks' rows
    assert [r["prepare_calls"] for r in svc_runs["two"]] == [1, 0]
    # validating a checkpoint does not cluster again: its centroids and labels are in it
    assert [r["kmeans_runs"] for r in svc_runs["validate"]] == [0, 0]
    assert svc_runs["two"][0]["parameters"] == svc_runs["two"][1]["parameters"]


def test_svc_centroids_and_pseudo_labels_identical_on_one_and_two_processes(svc_runs: dict[str, Any]) -> None:
    one, two = svc_runs["ckpt_one"], svc_runs["ckpt_two"]
    assert torch.equal(one["state_dict"]["centroids"], two["state_dict"]["centroids"])
    assert int(one["state_dict"]["last_cluster_epoch"]) == int(two["state_dict"]["last_cluster_epoch"]) == 0
    labels_one, labels_two = one["svc_pseudo_labels"], two["svc_pseudo_labels"]
    assert len(labels_one) == 2 and sorted(labels_one) == sorted(labels_two)  # both training scenes
    for key in labels_one:
        assert torch.equal(labels_one[key], labels_two[key]), key


def test_svc_validation_of_a_checkpoint_identical_on_one_and_two_processes(svc_runs: dict[str, Any]) -> None:
    metrics = _checked_equal(svc_runs, ["val/miou", "val/acc"])
    assert 0 < metrics["val/acc"] <= 1


def _svc_step_per_scene_mean(rooms: Path, runs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """One process, one SGD step of SVC on the batch of both training scenes with the loss DDP optimises:
    the mean over scenes of each scene's mean cross-entropy (BatchNorm over the whole batch)."""
    cfg = yaml.safe_load((QUICKSTART / "pointdc_svc.yaml").read_text())["model"]["init_args"]
    backbone = Res16UNet(**dict(cfg.pop("backbone")["init_args"], width=0.25))
    module = SVCModule(backbone=backbone, **dict(cfg, **SVC_MODEL))
    ckpt = runs["ckpt_one"]
    module.load_state_dict(runs["initial_one"])
    module.centroids.copy_(ckpt["state_dict"]["centroids"])
    module.classifier.set_centroids(module.centroids)  # as the clustering at the start of epoch 0 does
    module.labels = PseudoLabels.from_state(ckpt["svc_pseudo_labels"])
    dm = SyntheticRoomsDataModule(**ROOMS, **SVC_DATA, data_root=str(rooms), batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    target = module.labels.lookup(
        batch["scene_index"], batch["point_batch"], batch["superpoint_id"], batch["point_index"]
    ).long()
    logits = module.train()(batch)
    scenes = range(len(batch["scene_index"]))
    loss = sum(F.cross_entropy(logits[batch["point_batch"] == b], target[batch["point_batch"] == b],
                               ignore_index=-1) for b in scenes) / len(scenes)  # fmt: skip
    optimizer = module.configure_optimizers()["optimizer"]
    loss.backward()
    optimizer.step()
    return module.state_dict()


def test_svc_two_processes_train_as_one_process_with_per_scene_loss(
    rooms: Path, svc_runs: dict[str, Any]
) -> None:
    one = svc_runs["ckpt_one"]["state_dict"]
    keys = [k for k in one if k.startswith("backbone.") and one[k].is_floating_point()]
    params = [k for k in keys if "running_" not in k]
    stats = [k for k in keys if "running_" in k]
    update_one, update_two = _updates(svc_runs, params)
    init = svc_runs["initial_one"]
    reference = _svc_step_per_scene_mean(rooms, svc_runs)
    update_ref = torch.cat([(reference[k] - init[k]).double().flatten() for k in params])
    # DDP with SyncBatchNorm is exactly the per-scene-mean step (float rounding: 1.6e-5 measured)
    assert _gap(update_two, update_ref) < 1e-3
    # and the one-process run's per-point mean differs from it by the scenes' weights (0.22 measured)
    assert 0.01 < _gap(update_two, update_one) < 0.5 and _cosine(update_two, update_one) > 0.9
    # SyncBatchNorm: the running statistics are the whole batch's, as on one process (2.7e-7 measured)
    stats_one, stats_two = _updates(svc_runs, stats)
    assert _gap(stats_two, stats_one) < 1e-4
    # after that one step, validation moves little (|delta miou| 2.6e-4 measured); both ranks agree
    m_one, m_two = svc_runs["one"][0]["metrics"], svc_runs["two"][0]["metrics"]
    assert svc_runs["two"][1]["metrics"]["val/miou"] == m_two["val/miou"]
    for key in ("val/miou", "val/acc"):
        assert abs(m_one[key] - m_two[key]) < 0.02, key


def _cluster_share_worker(rank: int, world: int, root: str, batch: int, pooled: bool) -> dict[str, Any]:
    dm = SyntheticRoomsDataModule(**ROOMS, **dict(SVC_DATA, val_batch_size=batch), data_root=root)
    dm.setup("fit")
    module = SimpleNamespace(trainer=SimpleNamespace(datamodule=dm, world_size=world), global_rank=rank)
    torch.manual_seed(0)
    backbone = Res16UNet(in_channels=6, width=0.25).eval()
    scenes = [b["scene_index"].tolist() for b in rank_share(module)]
    centroids, labels = cluster_pass(
        backbone, lambda: rank_share(module), 4, torch.device("cpu"),
        nonparametric=pooled, superpoint_pooling=pooled, niter=10,
    )  # fmt: skip
    return {"scenes": scenes, "centroids": centroids, "labels": labels.state()}


def _cluster_shares(rank: int, world: int, root: str) -> list[dict[str, Any]]:
    # batch 1: a scene a rank; batch 2: one batch, which rank 0 does not get (it clusters no rows of its own)
    cases = ((1, True), (2, False))
    return [_cluster_share_worker(rank, world, root, batch, pooled) for batch, pooled in cases]


def test_clustering_pass_on_two_processes_equals_one_with_uneven_shares(
    rooms: Path, gloo: dict[str, Any]
) -> None:
    ranks = [r["shares"] for r in gloo["ranks"]]
    alone = _cluster_shares(0, 1, str(rooms))
    assert [r[0]["scenes"] for r in ranks] == [[[0]], [[1]]]
    assert [r[1]["scenes"] for r in ranks] == [[], [[0, 1]]]
    for case, single in enumerate(alone):
        for rank in ranks:
            got = rank[case]
            assert torch.equal(got["centroids"], single["centroids"])
            assert sorted(got["labels"]) == sorted(single["labels"]) and len(got["labels"]) == 2
            for key, value in single["labels"].items():
                assert torch.equal(got["labels"][key], value), key


# -- STSSL P2C and tracking ------------------------------------------------------------------------

# 2 training sequences of 2 frames (2 steps at batch 2, or batch 1 a rank), 2 validation frames.
LIDAR = {"num_sequences": 3, "num_val": 1, "frames_per_sequence": 2, "azimuth_steps": 512}
P2C_DATA = {"voxel_size": 0.1, "val_batch_size": 1}


@pytest.fixture(scope="module")
def lidar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lidar")
    SyntheticLidarDataModule(**LIDAR, **P2C_DATA, data_root=str(root)).prepare_data()
    return root


@pytest.fixture(scope="module")
def p2c_runs(lidar: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data = dict(LIDAR, **P2C_DATA, data_root=str(lidar))
    base = tmp_path_factory.mktemp("p2c_ddp")
    # the sanity check validates the seeded initial weights in both fits: one launch fewer than validate
    trainer = {"num_sanity_val_steps": -1}
    return _runs("stssl_p2c.yaml", base, "CountedLidar", data, {"val_points": 500}, trainer, False)


def test_p2c_runs_on_two_processes_probe_once_and_prepares_once(p2c_runs: dict[str, Any]) -> None:
    for rank in p2c_runs["one"] + p2c_runs["two"]:
        assert math.isfinite(rank["metrics"]["train/loss"]) and rank["metrics"]["train/p2c_clusters"] >= 2
    # the clusters of the two frames of a step: on one process together, on two one frame a rank
    clusters_two = sum(r["metrics"]["train/p2c_clusters"] for r in p2c_runs["two"])
    assert clusters_two == p2c_runs["one"][0]["metrics"]["train/p2c_clusters"]
    for run, counts in (("one", [1]), ("two", [1, 0])):
        assert [r["prepare_calls"] for r in p2c_runs[run]] == counts, run
        # the validation probe, in the sanity check and after the epoch
        assert [r["kmeans_runs"] for r in p2c_runs[run]] == [2 * c for c in counts], run
    # DDP keeps both ranks' parameters equal, the momentum target's included
    assert p2c_runs["two"][0]["parameters"] == p2c_runs["two"][1]["parameters"]


def test_p2c_validation_of_the_same_weights_identical_on_one_and_two_processes(
    p2c_runs: dict[str, Any],
) -> None:
    one = p2c_runs["one"][0]["sanity"]
    assert {"val/miou", "val/acc"} <= set(one) and 0 < one["val/acc"] <= 1
    for rank in p2c_runs["two"]:
        assert rank["sanity"] == one


def test_p2c_weights_on_two_processes_close_to_one(p2c_runs: dict[str, Any]) -> None:
    one = p2c_runs["ckpt_one"]["state_dict"]
    online = [k for k in one if k.split(".")[0] in ("backbone", "projector", "predictor")]
    params = [k for k in online if one[k].is_floating_point() and "running_" not in k]
    update_one, update_two = _updates(p2c_runs, params)
    # BatchNorm per frame (rank) instead of per batch, and each rank's mean loss: the two steps go the
    # same way but not the same length (measured: gap 0.47, cosine 0.89)
    assert _gap(update_two, update_one) < 0.7 and _cosine(update_two, update_one) > 0.75


def _retrack(rank: int, world: int, root: str) -> dict[str, Any]:
    """The training frames re-tracked with a seeded backbone's features; the sequences this rank tracked."""
    dm = SyntheticLidarDataModule(**LIDAR, **P2C_DATA, data_root=root, tracks=True, track_min_points=100)
    tracked: list[str] = []
    inner = lidar_tracks.track_frames

    def counted(refs: list, *args: Any, **kwargs: Any) -> None:
        tracked.append(refs[0].sequence)
        inner(refs, *args, **kwargs)

    lidar_tracks.track_frames = counted
    try:
        torch.manual_seed(0)
        tag = dm.refresh_tracks(MinkUNet(in_channels=4, width=0.25), "cpu", rank, world,
                                dist.barrier if world > 1 else None)  # fmt: skip
    finally:
        lidar_tracks.track_frames = inner
    folder = track_dir(dm.prepared_root, dm.track_settings, tag)
    files = {str(p.relative_to(folder)): np.load(p) for p in sorted(folder.rglob("*.npy"))}
    return {"tag": tag, "tracked": tracked, "folder": str(folder), "files": files}


def _gloo_worker(rank: int, world: int, rooms: str, lidar: str) -> dict[str, Any]:
    """The in-process gloo checks, in one launch (each costs seconds of imports)."""
    return {"shares": _cluster_shares(rank, world, rooms), "retrack": _retrack(rank, world, lidar)}


@pytest.fixture(scope="module")
def gloo(rooms: Path, lidar: Path) -> dict[str, Any]:
    alone = _retrack(0, 1, str(lidar))
    shutil.rmtree(alone["folder"])  # the version is named by the weights: let the two processes remake it
    return {"retrack_alone": alone, "ranks": run_distributed(_gloo_worker, 2, str(rooms), str(lidar))}


def test_feature_retracking_on_two_processes_equals_one(gloo: dict[str, Any]) -> None:
    alone, ranks = gloo["retrack_alone"], [r["retrack"] for r in gloo["ranks"]]
    assert sorted(ranks[0]["tracked"] + ranks[1]["tracked"]) == sorted(alone["tracked"]) == ["00", "01"]
    assert ranks[0]["tracked"] and ranks[1]["tracked"]  # a sequence a rank, none twice
    files = ranks[0]["files"]
    assert ranks[0]["tag"] == ranks[1]["tag"] == alone["tag"] and sorted(files) == sorted(alone["files"])
    for name, value in alone["files"].items():
        np.testing.assert_array_equal(files[name], value, err_msg=name)
    for seq in ("00", "01"):
        frames = sorted(n for n in files if n.startswith(f"{seq}/"))
        stats = tracking_stats([files[n] for n in frames])
        assert stats == tracking_stats([alone["files"][n] for n in frames]) and stats["num_tracks"] > 0
