"""PointDC's CMD stage: the Eq. 7 loss against a plain loop, its masking, a few training steps, the
validation clustering, and every CMD config run through the CLI on tiny synthetic rooms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from unsup3d.data.collate import collate_scenes, voxelize
from unsup3d.data.datasets import color_coord_features
from unsup3d.data.scene_folder import list_scenes
from unsup3d.lightning_cli import Unsup3DCLI
from unsup3d.metrics import HungarianMIoU
from unsup3d.metrics.hungarian import hungarian_miou
from unsup3d.models import Res16UNet
from unsup3d.pointdc import cmd as cmd_stage
from unsup3d.pointdc.cmd import CMDModule, cluster_units, cmd_loss
from unsup3d.training.common import load_backbone

REPO = Path(__file__).resolve().parents[2]
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _loss_inputs(seed: int = 0, p: int = 300, d: int = 6, s: int = 15) -> dict:
    g = torch.Generator().manual_seed(seed)
    sp = torch.randint(-1, s, (p,), generator=g)
    sp[sp == 3] = 4  # super-voxel 3 has no point
    seen = torch.rand(p, generator=g) < 0.6
    seen[sp == 5] = False  # super-voxel 5 has points, none of them seen
    return {
        "pred": torch.randn(p, d, generator=g),
        "target": torch.randn(p, d, generator=g).half(),
        "seen": seen,
        "superpoint": sp,
        "num_superpoints": s,
    }


def _reference_loss(pred, target, seen, superpoint, num_superpoints, normalize: bool) -> tuple[float, int]:
    """Eq. 7 written out, a loop over super-voxels in float64: for each super-voxel with a seen point,
    the squared L2 distance between the mean prediction over all its points and the mean target over
    its seen points (with ``normalize``, the release's variant: both means scaled to unit length
    first); the loss is the mean of those terms."""
    terms = []
    for k in range(num_superpoints):
        members = [j for j in range(len(superpoint)) if int(superpoint[j]) == k]
        seen_members = [j for j in members if bool(seen[j])]
        if not seen_members:
            continue
        p = [sum(float(pred[j, c]) for j in members) / len(members) for c in range(pred.shape[1])]
        f = [sum(float(target[j, c]) for j in seen_members) / len(seen_members) for c in range(pred.shape[1])]
        if normalize:
            p_norm, f_norm = sum(x * x for x in p) ** 0.5, sum(x * x for x in f) ** 0.5
            p, f = [x / p_norm for x in p], [x / f_norm for x in f]
        terms.append(sum((a - b) ** 2 for a, b in zip(p, f)))
    return sum(terms) / len(terms), len(terms)


def test_loss_is_eq7_as_written() -> None:
    """``normalize=False``: the squared distance of the super-voxel means themselves (Eq. 7)."""
    inputs = _loss_inputs()
    inputs["pred"] = inputs["pred"] * 3.0 + 1.0  # means far from unit length: normalising would show
    loss, valid = cmd_loss(**inputs, normalize=False)
    ref, n = _reference_loss(**inputs, normalize=False)
    assert int(valid.sum()) == n and not valid[3] and not valid[5]
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    normalised, _ = _reference_loss(**inputs, normalize=True)
    assert abs(ref - normalised) > 0.1 * ref  # the two variants differ on these inputs


def test_loss_normalised_variant_is_the_release_written_out() -> None:
    """``normalize=True`` (the default): the release's Eq. 7 between unit-length super-voxel means."""
    inputs = _loss_inputs(seed=2)
    loss, valid = cmd_loss(**inputs, normalize=True)
    ref, n = _reference_loss(**inputs, normalize=True)
    assert int(valid.sum()) == n and not valid[3] and not valid[5]
    assert float(loss) == pytest.approx(ref, rel=1e-5)
    default, _ = cmd_loss(**inputs)
    assert float(default) == float(loss)


def test_unsupervised_points_contribute_nothing() -> None:
    inputs = _loss_inputs(seed=1)
    pred = inputs["pred"].clone().requires_grad_(True)
    loss, _ = cmd_loss(**{**inputs, "pred": pred})
    loss.backward()
    loss = loss.detach()
    sp, seen = inputs["superpoint"], inputs["seen"]
    masked = (sp < 0) | (sp == 5)
    assert pred.grad[masked].abs().max() == 0 and pred.grad[~masked].abs().max() > 0
    # moving their predictions, or the targets of unseen points, leaves the loss as it was
    moved = inputs["pred"].clone()
    moved[masked] += 5.0
    target = inputs["target"].clone()
    target[~seen] = 7.0
    loss2, _ = cmd_loss(**{**inputs, "pred": moved, "target": target})
    assert float(loss2) == pytest.approx(float(loss), rel=1e-6)
    # a batch no view saw: a zero loss that still backpropagates
    none_seen = torch.zeros_like(seen)
    pred.grad = None
    zero, valid = cmd_loss(**{**inputs, "pred": pred, "seen": none_seen})
    zero.backward()
    assert float(zero.detach()) == 0.0 and not valid.any() and pred.grad is not None


def test_descriptor_targets_are_weighted_per_column() -> None:
    """``target_weights`` (the teacher-free recipe): Eq. 7 as written between the super-voxel means of
    the head's outputs and of the descriptor targets with each column multiplied by its group's weight,
    the 14-column scale written out by hand (colour 0-2, verticality 3, shape 4-6, height 7, context
    8-10, segment 11-13), against the loop of ``_reference_loss``."""
    g = torch.Generator().manual_seed(3)
    p, s = 80, 6
    sp = torch.randint(-1, s, (p,), generator=g)
    batch = {
        "descriptor": torch.rand(p, 14, generator=g),
        "superpoint": sp,
        "num_superpoints": s,
        "inverse": torch.arange(p),
    }
    pred = torch.randn(p, 14, generator=g)
    module = CMDModule(
        backbone=Res16UNet(in_channels=6, width=0.25), target_dim=14, normalize=False,
        target_key="descriptor", seen_key=None, target_weights={"height": 2.0, "color": 0.5, "segment": 3.0},
    )  # fmt: skip
    scale = torch.tensor([0.5, 0.5, 0.5, 0, 0, 0, 0, 2.0, 0, 0, 0, 3.0, 3.0, 3.0])
    loss, valid = module._loss(batch, pred)
    ref, n = _reference_loss(pred, batch["descriptor"] * scale, torch.ones(p, dtype=torch.bool), sp, s, False)
    assert int(valid.sum()) == n and float(loss) == pytest.approx(ref, rel=1e-5)


def _scene_batch(seed: int = 0, n: int = 2500, dim: int = 8) -> dict:
    """A random room-sized cloud; super-voxels are 0.4 m cells, each with its own target direction."""
    rng = np.random.default_rng(seed)
    coord = (rng.random((n, 3)) * [3.0, 3.0, 1.5]).astype(np.float32)
    cell = np.floor(coord / 0.4).astype(np.int64)
    superpoint = np.unique(cell, axis=0, return_inverse=True)[1].reshape(-1)
    directions = rng.standard_normal((superpoint.max() + 1, dim))
    sample = {
        "coord": coord,
        "color": rng.integers(0, 256, (n, 3)).astype(np.uint8),
        "segment": (superpoint % 4).astype(np.int64),
        "superpoint": superpoint,
        "cmd_target": (directions[superpoint] + 0.3 * rng.standard_normal((n, dim))).astype(np.float16),
        "cmd_seen": rng.random(n) < 0.7,
        "scene_index": np.array(0),
    }
    return collate_scenes([voxelize(sample, 0.1, color_coord_features(sample))])


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    batch = _scene_batch()
    module = CMDModule(backbone=Res16UNet(in_channels=6, width=0.25), target_dim=8, lr=1e-2)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Adam)
    losses = []
    for _ in range(12):
        _, pred = module(batch)
        loss, valid = module._loss(batch, pred)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert valid.float().mean() > 0.9 and losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("replay", [1 << 22, 7])
def test_validation_clusters_units_and_counts_their_points(monkeypatch, replay: int) -> None:
    monkeypatch.setattr(cmd_stage, "_REPLAY_POINTS", replay)
    g = torch.Generator().manual_seed(0)
    groups = torch.randint(0, 3, (40,), generator=g)
    feats = F.one_hot(groups, 3).float() + 0.05 * torch.randn(40, 3, generator=g)
    counts = torch.randint(0, 4, (40, 5), generator=g)
    metric = HungarianMIoU(5, 3)
    assign = cluster_units(feats, counts, 3, metric)
    # three well-separated groups: K-means finds them
    assert all(len(assign[groups == c].unique()) == 1 for c in range(3)) and len(assign.unique()) == 3
    # the metric saw each unit's points with the unit's cluster, as a per-point evaluation would
    preds = torch.cat([assign[u].repeat(int(counts[u].sum())) for u in range(40)])
    labels = torch.cat([torch.arange(5).repeat_interleave(counts[u]) for u in range(40)])
    ref = hungarian_miou(preds, labels, 5, 3)
    out = metric.compute()
    assert torch.equal(metric.confusion.cpu(), torch.zeros(3, 5, dtype=torch.int64).index_put_(
        (preds, labels), torch.ones_like(preds), accumulate=True))  # fmt: skip
    assert float(out["miou"]) == pytest.approx(float(ref["miou"])) and float(out["acc"]) == pytest.approx(
        float(ref["acc"])
    )


def _units_batch(seed: int, c: int = 4, dim: int = 5) -> tuple[dict, Tensor]:
    """Two scenes (stored indices 7 and 2) of 30 and 25 points; super-voxels 0-2 in the first, 3-5
    in the second, and 4 + 3 points in no super-voxel (-1); labels in ``[-1, c + 1]`` (-1 and the
    labels past ``c`` are ignored). Returns the batch and random point features ``(55, dim)``."""
    g = torch.Generator().manual_seed(seed)
    point_batch = torch.tensor([0] * 30 + [1] * 25)
    sp = torch.cat([torch.randint(0, 3, (30,), generator=g), torch.randint(3, 6, (25,), generator=g)])
    sp[torch.tensor([2, 11, 12, 29, 30, 41, 54])] = -1
    batch = {
        "superpoint": sp,
        "num_superpoints": 6,
        "superpoint_batch": torch.tensor([0, 0, 0, 1, 1, 1]),
        "point_batch": point_batch,
        "scene_index": torch.tensor([7, 2]),
        "segment": torch.randint(-1, c + 2, (55,), generator=g),
        "inverse": torch.arange(55),
    }
    return batch, torch.randn(55, dim, generator=g)


def test_validation_units_are_super_voxel_means_and_loose_points() -> None:
    """``CMDModule._units`` against a loop: one unit per super-voxel (its points' mean feature, its
    scene), then one per point in no super-voxel (the point's feature and scene), in that order; each
    point's unit; each unit's count of points of every class, labels outside ``[0, num_classes)``
    left out."""
    c = 4
    batch, feats = _units_batch(0, c)
    module = CMDModule(backbone=Res16UNet(in_channels=6, width=0.25), target_dim=8, num_classes=c)
    got_feats, got_counts, got_unit, got_scene = module._units(feats, batch)
    sp, label, item = batch["superpoint"].tolist(), batch["segment"].tolist(), batch["point_batch"].tolist()
    members = [[j for j in range(55) if sp[j] == k] for k in range(6)]
    members += [[j] for j in range(55) if sp[j] < 0]
    unit_of = {j: u for u, points in enumerate(members) for j in points}
    ref_feats = torch.stack([feats[points].double().mean(0) for points in members])
    ref_counts = [[sum(label[j] == cls for j in points) for cls in range(c)] for points in members]
    scenes = [7, 2]
    ref_scene = [scenes[item[points[0]]] for points in members]
    assert got_feats.shape == (6 + 7, 5) and got_counts.shape == (13, c)
    torch.testing.assert_close(got_feats.double(), ref_feats, rtol=1e-5, atol=1e-6)
    assert got_counts.tolist() == ref_counts
    assert got_unit.tolist() == [unit_of[j] for j in range(55)]
    assert got_scene.tolist() == ref_scene
    assert int(got_counts.sum()) == sum(0 <= v < c for v in label)


class _FeatureLookup(torch.nn.Module):
    """A stand-in backbone: the batch's ``sparse`` entry holds the point features themselves."""

    out_channels = 3

    def forward(self, sparse: Tensor, inverse: Tensor) -> Tensor:
        return sparse[inverse]


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no trainer to log to
def test_validation_epoch_clusters_separable_units_perfectly() -> None:
    """Two validation batches through ``validation_step`` and the epoch's end: points of class ``y``
    (super-voxels of one class, and loose points) have features near the ``y``-th axis, so the K-means
    of the units must recover the classes: mIoU and accuracy 1, each point's unit (offset by the
    units of the earlier batches) in a cluster of its class alone."""
    c = 3
    module = CMDModule(backbone=_FeatureLookup(), target_dim=4, num_classes=c, class_names=["a", "b", "c"])
    module.on_validation_epoch_start()
    g = torch.Generator().manual_seed(1)
    units, classes = [], []
    for seed in (0, 1):
        batch, _ = _units_batch(seed, c)
        sp = batch["superpoint"]
        loose = torch.randint(0, c, sp.shape, generator=g)
        cls = torch.where(sp >= 0, sp % c, loose)  # one class a super-voxel
        batch["segment"] = torch.where(batch["segment"] < 0, -1, cls)  # some points unlabelled
        batch["sparse"] = F.one_hot(cls, c).float() + 0.05 * torch.randn(len(cls), c, generator=g)
        out = module.validation_step(batch, seed)
        units.append(out["unit"])
        classes.append(cls)
    module.on_validation_epoch_end()
    m = module.last_metrics
    assert float(m["miou"]) == pytest.approx(1.0) and float(m["acc"]) == pytest.approx(1.0)
    assert int(units[1].min()) == 13  # the second batch's units follow the first's 6 + 7
    clusters = m["unit_clusters"][torch.cat(units)]
    cls = torch.cat(classes)
    assert all(len(clusters[cls == y].unique()) == 1 for y in range(c)) and len(clusters.unique()) == c


# -- the configs, through the CLI ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for every CLI run: the rooms are generated and converted once."""
    return tmp_path_factory.mktemp("cmd_cli")


def _tiny_data_args(root: Path) -> list[str]:
    ft = "--data.init_args.feature_targets."
    return [
        "--data.class_path=unsup3d.pointdc.datamodules.SyntheticRoomsDataModule",
        "--data.init_args.num_scenes=2",
        "--data.init_args.num_val=1",
        "--data.init_args.frames_per_scene=2",
        f"--data.init_args.data_root={root / 'data'}",
        "--data.init_args.voxel_size=0.1",
        "--data.init_args.batch_size=1",
        "--data.init_args.num_workers=0",
        "--data.init_args.prepare_workers=1",
        f"{ft}allow_random_teacher=true",
        f"{ft}random_teacher_config={json.dumps(TINY_VIT)}",
        f"{ft}cache_dir={root / 'no_hf_cache'}",
        f"{ft}frame_every=1",
        f"{ft}num_views=3",
        f"{ft}image_size=[48, 64]",
        "--model.init_args.target_dim=null",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


@pytest.mark.parametrize(
    "config", ["pointdc_cmd.yaml", "pointdc_s3dis_cmd.yaml", "quickstart/pointdc_cmd.yaml"]
)
def test_config_runs_one_step(config: str, cli_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the configs' relative output folders land here
    args = ["fit", f"--config={REPO / 'experiments' / config}", *_tiny_data_args(cli_data)]
    if not config.startswith("quickstart"):  # the paper's full-width backbone: made small for a CPU test
        args.append("--model.init_args.backbone.init_args.width=0.25")
    with pytest.warns(UserWarning, match="RANDOM 2D TEACHER"):
        cli = Unsup3DCLI(args=[*args, "--trainer.fast_dev_run=true"])
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"])
    assert 0.0 <= float(metrics["val/miou"]) <= 1.0 and 0.0 <= float(metrics["val/acc"]) <= 1.0
    assert cli.model.hparams.target_dim == 32  # read from the tiny teacher's targets
    scene = list_scenes(cli.datamodule.prepared_root, "train")[0]
    record = json.loads((scene / "cmd_target.json").read_text())["settings"]
    assert record["views"] == ("render" if "s3dis" in config else "frames")  # S3DIS has no frames: rendered


@pytest.mark.parametrize("config", ["pointdc_geometric_cmd.yaml", "quickstart/pointdc_geometric_cmd.yaml"])
def test_teacher_free_config_runs_one_step(config: str, cli_data: Path, tmp_path: Path, monkeypatch) -> None:
    """The teacher-free recipes distil the scenes' descriptors: no 2D teacher is loaded."""
    monkeypatch.chdir(tmp_path)
    data = [a for a in _tiny_data_args(tmp_path) if not a.startswith("--data.init_args.feature_targets")]
    args = ["fit", f"--config={REPO / 'experiments' / config}", *data]
    args.append("--model.init_args.backbone.init_args.width=0.25")
    cli = Unsup3DCLI(args=[*args, "--trainer.fast_dev_run=true"])
    assert torch.isfinite(cli.trainer.callback_metrics["train/loss"])
    assert cli.model.hparams.target_dim == 14
    scene = list_scenes(cli.datamodule.prepared_root, "train")[0]
    assert (scene / "descriptor.npy").is_file() and not (scene / "cmd_target.npy").exists()


def test_quickstart_checkpoint_loads_without_pickles(cli_data: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        f"--config={REPO / 'experiments' / 'quickstart' / 'pointdc_cmd.yaml'}",
        *_tiny_data_args(cli_data),
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.check_val_every_n_epoch=1",
        "--data.init_args.feature_targets.splits=[train, val]",
    ]
    with pytest.warns(UserWarning, match="RANDOM 2D TEACHER"):
        cli = Unsup3DCLI(args=args)
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])  # validation scenes with targets
    path = tmp_path / "outputs" / "quickstart" / "cmd" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["target_dim"] == 32
    backbone = Res16UNet(in_channels=6, width=0.5)
    load_backbone(backbone, path)
    state = ckpt["state_dict"]
    assert torch.equal(backbone.state_dict()["conv0p1s1.kernel"], state["backbone.conv0p1s1.kernel"])
    module = CMDModule(backbone=Res16UNet(in_channels=6, width=0.5), target_dim=32)
    module.load_state_dict(state)  # strict: nothing else is stored in the weights
