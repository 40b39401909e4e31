"""PointDC's SVC stage: pseudo labels (Eq. 8-10) against loops, training, configs, checkpoints."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_ROOMS
from unsup3d.cli import main
from unsup3d.pointdc.clustering_pass import PseudoLabels, cluster_pass
from unsup3d.pointdc.datamodules import SyntheticRoomsDataModule
from unsup3d.pointdc.svc import SVCModule

REPO = Path(__file__).resolve().parents[2]


#: group weights of the joint (teacher-free) clustering tests, and the 14-column scale they give, written
#: out by hand from the documented layout: colour 0-2, verticality 3, shape 4-6, height 7, context 8-10,
#: segment 11-13
JOINT_WEIGHTS = {"color": 1.0, "height": 2.0, "shape": 0.5, "segment": 1.0}
JOINT_SCALE = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.5, 2.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0])


def _dm(root: Path, **kw) -> SyntheticRoomsDataModule:
    dm = SyntheticRoomsDataModule(
        num_scenes=3, num_val=1, frames_per_scene=2, data_root=str(root), voxel_size=0.1, batch_size=2, **kw
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _backbone() -> torch.nn.Module:
    from unsup3d.models import Res16UNet

    torch.manual_seed(0)
    return Res16UNet(in_channels=6, width=0.25).eval()


def test_pseudo_labels_lookup_and_state_round_trip() -> None:
    labels = PseudoLabels(
        {0: torch.tensor([3, -1, 5], dtype=torch.int16)}, {1: torch.tensor([7, 8, 9], dtype=torch.int16)}
    )
    out = labels.lookup(
        scene_index=torch.tensor([0, 1]),
        point_batch=torch.tensor([0, 0, 0, 1, 1]),
        superpoint_id=torch.tensor([2, 1, -1, 0, 0]),
        point_index=torch.tensor([0, 1, 2, 2, 0]),
    )
    assert out.tolist() == [5, -1, -1, 9, 7]
    back = PseudoLabels.from_state(labels.state())
    assert torch.equal(back.by_superpoint[0], labels.by_superpoint[0]) and torch.equal(
        back.by_point[1], labels.by_point[1]
    )


def _within(got: torch.Tensor, scores: torch.Tensor, tol: float = 1e-5) -> None:
    """Each row's label is its best score's (``scores`` float64, higher is better); a label within
    ``tol`` of the best is a float32 tie the code may break either way, and must stay rare."""
    best = scores.argmax(1)
    assert (got >= 0).all() and (got < scores.shape[1]).all()
    assert (scores.gather(1, got[:, None]).squeeze(1) >= scores.max(1).values - tol).all()
    assert (got == best).float().mean() > 0.995


@pytest.mark.parametrize("joint", [False, True], ids=["cosine", "joint"])
@pytest.mark.parametrize("mode", ["basic", "nonparametric", "pooled"])
def test_cluster_pass_labels_against_a_loop(rooms_root: Path, mode: str, joint: bool) -> None:
    """Eq. 8-10 from scratch, over every super-voxel and every point of the training scenes: the
    backbone run here on each batch, unit point features, each super-voxel's mean by a loop over
    super-voxels, and the labels each equation gives with the centroids ``cluster_pass`` returns.
    ``joint``: the teacher-free path's clustering of ``[S_vox(f) / |S_vox(f)|, S_vox(d) * scale]``,
    Euclidean: the nearest centroid in that space (Eq. 9's score ``-|[f, d] - mu|^2 / 2``)."""
    dm = _dm(rooms_root, descriptors=joint or None)
    scale = JOINT_SCALE if joint else None
    backbone = _backbone()
    loader_fn = dm.cluster_dataloader
    k = 5
    centroids, labels = cluster_pass(
        backbone,
        loader_fn,
        k,
        torch.device("cpu"),
        nonparametric=mode != "basic",
        superpoint_pooling=mode == "pooled",
        scale=scale,
    )
    width = backbone.out_channels + (0 if scale is None else len(scale))
    assert centroids.shape == (k, width)
    mu = centroids.double()
    if not joint:
        mu = mu / mu.norm(dim=1, keepdim=True)

    def scores(x: torch.Tensor) -> torch.Tensor:  # higher is nearer: cosine, or -|x - mu|^2 / 2
        if not joint:
            return (x / x.norm(dim=1, keepdim=True)) @ mu.T
        return -0.5 * ((x[:, None, :] - mu[None]) ** 2).sum(2)

    scenes_seen, used = set(), set()
    with torch.no_grad():
        for batch in loader_fn():
            f = backbone(batch["sparse"], batch["inverse"]).double()
            f = f / f.norm(dim=1, keepdim=True)
            x = f if not joint else torch.cat([f, batch["descriptor"].double() * scale.double()], 1)
            for b, scene in enumerate(batch["scene_index"].tolist()):
                scenes_seen.add(scene)
                rows = batch["point_batch"] == b
                xb, sp, pi = x[rows], batch["superpoint_id"][rows], batch["point_index"][rows]
                assert (sp >= 0).all()  # the synthetic rooms: every point in a super-voxel
                if mode == "basic":  # Eq. 8: the super-voxel's K-means assignment, its nearest centroid
                    table = labels.by_superpoint[scene].long()
                    ids = sp.unique()
                    means = []
                    for s in ids.tolist():
                        members = xb[sp == s]
                        mean_f = members[:, : f.shape[1]].mean(0)
                        mean_f = mean_f / mean_f.norm() if joint else mean_f
                        means.append(torch.cat([mean_f, members[:, f.shape[1] :].mean(0)]))
                    _within(table[ids], scores(torch.stack(means)))
                    got = table[sp]
                    used.update(table[ids].tolist())
                else:
                    got = labels.by_point[scene].long()[pi]
                    point_scores = scores(xb)
                    if mode == "nonparametric":  # Eq. 9: each point's nearest centroid
                        _within(got, point_scores)
                    else:  # Eq. 10: the super-voxel's mean soft assignment (softmax of Eq. 9's scores)
                        soft = point_scores.softmax(1)
                        pooled, first = [], []
                        for s in sp.unique().tolist():
                            members = sp == s
                            pooled.append(soft[members].mean(0))
                            first.append(got[members][0])
                            assert (got[members] == first[-1]).all()  # one label a super-voxel
                        _within(torch.stack(first), torch.stack(pooled))
                    used.update(got.unique().tolist())
                # the stage reads labels through lookup: the same labels, point by point
                zeros = torch.zeros(len(pi), dtype=torch.long)
                assert torch.equal(labels.lookup(torch.tensor([scene]), zeros, sp, pi), got)
    assert scenes_seen == set(range(len(dm.datasets["train_eval"]))) and len(used) >= 3


def test_svc_trains_and_checkpoints_its_clustering_state(rooms_root: Path, tmp_path: Path) -> None:
    from lightning.pytorch import Trainer

    dm = _dm(rooms_root)
    model = SVCModule(
        backbone=_backbone(), num_classes=20, num_clusters=6, recluster_every=1, warmup_epochs=1
    )
    trainer = Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    trainer.fit(model, dm)
    assert int(model.last_cluster_epoch) == 1
    assert not model.classifier.weight.requires_grad  # past warm-up: the non-parametric classifier
    torch.testing.assert_close(torch.nn.functional.normalize(model.centroids, dim=1), model.classifier.weight)
    m = model.last_metrics
    assert 0 <= float(m["miou"]) <= 1 and 0 <= float(m["acc"]) <= 1
    ckpt_path = tmp_path / "svc.ckpt"
    trainer.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True)  # no pickled code in our checkpoints
    assert "centroids" in ckpt["state_dict"] and ckpt["svc_pseudo_labels"]
    fresh = SVCModule(backbone=_backbone(), num_classes=20, num_clusters=6)
    fresh.load_state_dict(ckpt["state_dict"])
    fresh.on_load_checkpoint(ckpt)
    assert fresh.labels.state().keys() == model.labels.state().keys()


@pytest.mark.parametrize("joint", [False, True], ids=["cosine", "joint"])
def test_classifier_logits_in_warm_up_and_after(rooms_root: Path, joint: bool) -> None:
    """The logits ``module(batch)`` against Eq. 9's classifier written out in float64 on the backbone's
    point features ``f`` and the network part ``mu`` of the centroids (all of them, or the first
    ``out_channels`` columns of the joint ones), temperature ``tau``: during warm-up a cosine,
    ``(f / |f|) . (mu / |mu|) / tau``; after it, the release's fixed classifier on unnormalised
    features, ``f . (mu / |mu|) / tau``, unless ``fixed_normalize`` asks for the cosine again."""
    batch = next(iter(_dm(rooms_root, descriptors=joint or None).cluster_dataloader()))
    tau, k = 0.5, 6

    def module(warmup_epochs: int, fixed_normalize: bool = False) -> SVCModule:
        weights = JOINT_WEIGHTS if joint else None
        model = SVCModule(backbone=_backbone(), num_classes=k, warmup_epochs=warmup_epochs, temperature=tau,
                          fixed_normalize=fixed_normalize, descriptor_weights=weights)  # fmt: skip
        torch.manual_seed(1)  # the same centroids each time, far from unit length
        model.centroids.copy_(torch.randn_like(model.centroids) * 3.0)
        model._set_classifier(0)  # no trainer: epoch 0
        return model.eval()

    warm, fixed, fixed_cos = module(1), module(0), module(0, fixed_normalize=True)
    assert warm.classifier.weight.requires_grad and not fixed.classifier.weight.requires_grad
    with torch.no_grad():
        f = warm.backbone(batch["sparse"], batch["inverse"]).double()
        models = {"warm": warm, "fixed": fixed, "cos": fixed_cos}
        logits = {name: m(batch).double() for name, m in models.items()}
    mu = warm.centroids[:, : f.shape[1]].double()
    mu = mu / mu.norm(dim=1, keepdim=True)
    unit = f / f.norm(dim=1, keepdim=True)
    cosine, scaled = unit @ mu.T / tau, f @ mu.T / tau
    assert not torch.allclose(cosine, scaled, rtol=0.05)  # feature norms far from 1: the regimes differ
    torch.testing.assert_close(logits["warm"], cosine, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits["fixed"], scaled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits["cos"], cosine, rtol=1e-4, atol=1e-5)


def test_reclustering_runs_every_recluster_every_epochs(rooms_root: Path, tmp_path: Path) -> None:
    """``recluster_every=2`` over 5 epochs: the training set is clustered at the start of epochs 0, 2
    and 4 only (the release clusters every 5 epochs, not every epoch), each call spied on."""
    from lightning.pytorch import Trainer

    model = SVCModule(backbone=_backbone(), num_classes=20, num_clusters=4, recluster_every=2,
                      warmup_epochs=1, kmeans_iters=2, feature_cache_mb=0)  # fmt: skip
    calls, real = [], model.recluster

    def spy(epoch: int) -> None:
        calls.append((epoch, model.current_epoch))
        real(epoch)

    model.recluster = spy
    trainer = Trainer(
        max_epochs=5, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
        limit_train_batches=1, limit_val_batches=0, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(model, _dm(rooms_root))
    assert calls == [(0, 0), (2, 2), (4, 4)]
    assert int(model.last_cluster_epoch) == 4


def test_kmeans_restarts_keep_the_lowest_inertia(rooms_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kmeans_restarts``: the clustering kept is the one of lowest inertia over the restarts, the
    inertia written out here in float64 over the joint super-voxel features (each row's squared
    distance to its nearest centroid), against each restart's own seed run alone."""
    from unsup3d.pointdc.clustering_pass import superpoint_features

    dm = _dm(rooms_root, descriptors=True)
    weights = JOINT_WEIGHTS  # the module's own scale must be JOINT_SCALE for its inertia to be this one
    feats, _, _ = superpoint_features(_backbone(), dm.cluster_dataloader(), torch.device("cpu"), JOINT_SCALE)
    x = feats.double()
    monkeypatch.setattr("unsup3d.pointdc.svc.rank_share", lambda module: dm.cluster_dataloader())

    def inertia(model: SVCModule) -> float:
        return float(torch.cdist(x, model.centroids.double()).pow(2).min(1).values.sum())

    def clustered(restarts: int, seed: int) -> SVCModule:
        model = SVCModule(backbone=_backbone(), num_classes=20, num_clusters=6, descriptor_weights=weights,
                          kmeans_restarts=restarts, seed=seed, kmeans_iters=10)
        model.recluster(0)
        return model

    singles = [inertia(clustered(1, seed)) for seed in range(8)]
    # a first seed whose own run is not the best of its 4 restarts (restart r uses seed + r)
    start = next(s for s in range(5) if singles[s] > min(singles[s : s + 4]) * (1 + 1e-4))
    best = inertia(clustered(4, start))
    assert best == pytest.approx(min(singles[start : start + 4]), rel=1e-5)


@pytest.mark.parametrize(
    "config",
    ["pointdc_svc.yaml", "pointdc_s3dis_svc.yaml", "pointdc_linear_probe.yaml",
     "quickstart/pointdc_svc.yaml", "quickstart/pointdc_linear_probe.yaml",
     "pointdc_geometric_svc.yaml", "quickstart/pointdc_geometric_svc.yaml"],
)  # fmt: skip
def test_config_runs_one_step(
    config: str, rooms_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["unsup3d"])  # the CLI gets its arguments from args=, not pytest's
    args = [
        "fit", "--config", str(REPO / "experiments" / config),
        "--data", "unsup3d.pointdc.datamodules.SyntheticRoomsDataModule", *TINY_ROOMS,
        "--data.init_args.data_root", str(rooms_root), "--data.init_args.batch_size", "1",
        "--model.init_args.init_checkpoint", "null", "--model.init_args.backbone.init_args.width", "0.25",
        "--trainer.fast_dev_run", "1", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false", "--trainer.callbacks", "[]",
    ]  # fmt: skip
    main(args)


def test_over_clusters_merge_once_per_evaluation(rooms_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unsup3d.pointdc.svc as svc_mod

    calls = []
    real = svc_mod.merge_clusters
    monkeypatch.setattr(svc_mod, "merge_clusters", lambda w, k, **kw: calls.append(k) or real(w, k, **kw))
    dm = _dm(rooms_root)
    model = SVCModule(backbone=_backbone(), num_classes=4, num_clusters=9, merge_clusters=True).eval()
    batch = next(iter(dm.cluster_dataloader()))
    with torch.no_grad():
        first = model.predict_clusters(batch)
        second = model.predict_clusters(batch)
    assert calls == [4]  # the centroids' K-means ran once for both batches
    assert torch.equal(first, second) and int(first.max()) < 4
    model.on_validation_epoch_start()
    with torch.no_grad():
        model.predict_clusters(batch)
    assert calls == [4, 4]  # a new evaluation merges again


def test_merge_clusters_in_the_clustering_space() -> None:
    """Cosine merging groups by direction, Euclidean merging by place (scikit-learn's K-means as the
    reference); the joint (teacher-free) centroids, made by Euclidean K-means, merge by it."""
    from sklearn.cluster import KMeans

    from unsup3d.training.evaluation import merge_clusters

    c = torch.tensor([[5.0, 0.0], [5.0, 1.0], [0.1, 1.0], [1.0, 0.1]])
    ref = KMeans(2, n_init=10, random_state=0).fit_predict(c.numpy())
    euclid = merge_clusters(c, 2, spherical=False)
    assert ref[0] == ref[1] != ref[2] == ref[3]
    assert int(euclid[0]) == int(euclid[1]) != int(euclid[2]) == int(euclid[3])
    cosine = merge_clusters(c, 2)  # (1, 0.1) points nearly along (5, 0)
    assert int(cosine[0]) == int(cosine[1]) == int(cosine[3]) != int(cosine[2])


def test_teacher_free_over_clusters_merge_euclidean(monkeypatch: pytest.MonkeyPatch) -> None:
    import unsup3d.pointdc.svc as svc_mod

    seen = []
    monkeypatch.setattr(svc_mod, "merge_clusters", lambda w, k, spherical=True: seen.append(spherical) or
                        torch.arange(w.shape[0]) % k)  # fmt: skip
    n = 50
    batch = {
        "sparse": None, "descriptor": torch.rand(n, 14), "superpoint": torch.arange(n) // 10,
        "num_superpoints": 5,
    }  # fmt: skip
    for weights, expect in ((None, True), ({"color": 1.0}, False)):
        model = SVCModule(backbone=_backbone(), num_classes=3, num_clusters=6, merge_clusters=True,
                          descriptor_weights=weights, eval_descriptors=weights is not None)  # fmt: skip
        monkeypatch.setattr(model, "eval_logits", lambda b: torch.randn(n, 6))
        model.predict_clusters(batch)
        assert seen[-1] is expect


def test_svc_loss_is_eq_11_written_out() -> None:
    import math

    from unsup3d.pointdc.svc import svc_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 7, generator=g, dtype=torch.float64) * 3
    target = torch.randint(-1, 7, (40,), generator=g)
    terms = []
    for i in range(40):  # -log(e^{l_iy} / sum_k e^{l_ik}) over the labelled points, then the mean
        if target[i] >= 0:
            row = logits[i].tolist()
            terms.append(-(row[int(target[i])] - math.log(sum(math.exp(v) for v in row))))
    assert math.isclose(float(svc_loss(logits, target)), sum(terms) / len(terms), rel_tol=1e-6)
    none = svc_loss(logits.float().requires_grad_(), torch.full((40,), -1))
    assert float(none) == 0.0 and none.requires_grad  # no label: nothing to learn, no NaN


@pytest.mark.parametrize("config", ["quickstart/pointdc_svc.yaml", "quickstart/pointdc_geometric_svc.yaml"])
def test_quickstart_svc_lr_is_the_releases_scaled_to_its_batch(config: str) -> None:
    """The release's SGD lr is for its batch of 8 scenes (the paper recipe); a recipe on another batch
    scales it linearly (at the release's lr on batch 2, SVC lost 7.5 mIoU to CMD with oracle targets,
    README Table 4). Changing a recipe's batch without its lr fails here."""
    import yaml

    def load(name: str) -> tuple[float, int]:
        cfg = yaml.safe_load((REPO / "experiments" / name).read_text())
        return float(cfg["model"]["init_args"]["lr"]), int(cfg["data"]["init_args"]["batch_size"])

    release_lr, release_batch = load("pointdc_svc.yaml")
    assert (release_lr, release_batch) == (0.03, 8)
    lr, batch = load(config)
    assert lr == pytest.approx(release_lr * batch / release_batch)



def test_a_checkpoint_past_warm_up_is_validated_as_in_training(rooms_root: Path, tmp_path: Path) -> None:
    """``validate`` / ``unsup3d evaluate`` from a checkpoint: Lightning restores no fit loop there
    (``current_epoch`` reads 0), yet the classifier must score as at the checkpoint's epoch, past
    warm-up the release's unnormalised ``|f| cos``: the flag seen inside the validation steps, and the
    same mIoU as the fit's last validation."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    class Seen(Callback):
        def __init__(self) -> None:
            self.normalize: list[bool] = []

        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            self.normalize.append(module.classifier.normalize_input)

    def module() -> SVCModule:
        return SVCModule(backbone=_backbone(), num_classes=20, num_clusters=6, warmup_epochs=1,
                         kmeans_iters=2, feature_cache_mb=0, fixed_normalize=False)  # fmt: skip

    quiet = dict(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path,
                 enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    fit_seen, ckpt = Seen(), ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit = Trainer(max_epochs=3, limit_train_batches=1, check_val_every_n_epoch=3, callbacks=[fit_seen, ckpt],
                  **quiet)  # fmt: skip
    fit.fit(module(), _dm(rooms_root))
    trained = float(fit.callback_metrics["val/miou"])
    assert fit_seen.normalize and not any(fit_seen.normalize)  # epoch 2, past the 1 warm-up epoch

    seen = Seen()
    out = Trainer(callbacks=[seen], **quiet).validate(
        module(), datamodule=_dm(rooms_root), ckpt_path=ckpt.last_model_path, verbose=False
    )
    assert seen.normalize and not any(seen.normalize)
    assert out[0]["val/miou"] == pytest.approx(trained, abs=1e-6)
