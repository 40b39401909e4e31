"""The ablation benchmark's multi-view row (benchmarks/pointdc_ablation.py): K-means of the lifted 2D
features with no 3D network, on tiny scene folders written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.pointdc_ablation import ROWS, multiview_clustering, room_args, unit_features, unseen_unmatched
from unsup3d.metrics import HungarianMIoU


def test_rows_are_table_4_in_order() -> None:
    assert [name for name, _ in ROWS][:3] == ["random clustering", "multi-view clustering", "CMD"]


def test_unit_features_average_the_seen_points_of_each_super_voxel() -> None:
    rng = np.random.default_rng(0)
    superpoint = np.array([4, 4, 9, 9, 9, -1, -1, 4, 7, 7])
    seen = np.array([1, 0, 1, 1, 0, 1, 0, 1, 0, 0], bool)  # super-voxel 7 and the last lone point: unseen
    target = rng.standard_normal((10, 3)).astype(np.float16)
    means, has, unit = unit_features(target, seen, superpoint)
    assert len(means) == 5 and len(has) == 5  # super-voxels 4, 7, 9 and two lone points
    for u in range(5):
        members = [i for i in range(10) if unit[i] == u]
        # points share a unit exactly when they share a super-voxel; a point with none is alone
        assert len({int(superpoint[i]) for i in members}) == 1
        assert superpoint[members[0]] >= 0 or len(members) == 1
        seen_members = [i for i in members if seen[i]]
        assert bool(has[u]) == bool(seen_members)
        if seen_members:
            expect = np.mean([target[i].astype(np.float64) for i in seen_members], axis=0)
            np.testing.assert_allclose(means[u].numpy(), expect, rtol=1e-6)


def test_unseen_points_count_as_unmatched() -> None:
    g = torch.Generator().manual_seed(0)
    clusters, classes = torch.randint(0, 4, (500,), generator=g), torch.randint(0, 4, (500,), generator=g)
    classes[:300] = clusters[:300]  # a clustering that mostly agrees with the classes
    metric = HungarianMIoU(4)
    metric.update(clusters, classes)
    seen = metric.compute()
    miou, acc = unseen_unmatched(seen, torch.zeros(4, dtype=torch.int64))
    assert miou == pytest.approx(float(seen["miou"])) and acc == pytest.approx(float(seen["acc"]))
    # the same points plus a few unseen ones in a fifth cluster the matching leaves out: what the
    # metric itself says of points of an unmatched cluster
    unseen = torch.tensor([0, 0, 1, 2, 3, 3])
    full = HungarianMIoU(4, num_clusters=5)
    full.update(torch.cat([clusters, torch.full((6,), 4)]), torch.cat([classes, unseen]))
    ref = full.compute()
    assert int(ref["assignment"][4]) == -1
    miou, acc = unseen_unmatched(seen, torch.bincount(unseen, minlength=4))
    assert miou == pytest.approx(float(ref["miou"])) and acc == pytest.approx(float(ref["acc"]))
    assert acc < float(seen["acc"])


def _room(d, rng: np.random.Generator, table: np.ndarray, unseen_superpoints: list[int]) -> None:
    """40 super-voxels of 25 points, each of one class (super-voxel id mod 3); the seen points' targets
    are their class's embedding plus noise; a fifth of the points are unseen, and all of those of
    ``unseen_superpoints``."""
    d.mkdir(parents=True)
    superpoint = np.repeat(np.arange(40), 25)
    segment = superpoint % 3
    segment[::50] = -1  # a few unlabelled points
    seen = rng.random(len(superpoint)) > 0.2
    seen[np.isin(superpoint, unseen_superpoints)] = False
    target = table[superpoint % 3] + 0.3 * rng.standard_normal((len(superpoint), table.shape[1]))
    np.save(d / "superpoint.npy", superpoint.astype(np.int64))
    np.save(d / "segment.npy", segment.astype(np.int64))
    np.save(d / "cmd_seen.npy", seen)
    np.save(d / "cmd_target.npy", np.where(seen[:, None], target, 0).astype(np.float16))


def test_multiview_clustering_finds_classes_the_targets_carry(tmp_path) -> None:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((3, 16))
    train = [tmp_path / "train" / f"s{i}" for i in range(2)]
    val = [tmp_path / "val" / "s0"]
    for d in train:
        _room(d, rng, table, [])
    _room(val[0], rng, table, [0, 1, 2, 3])  # 4 of 40 super-voxels no view saw
    out = multiview_clustering(train, val, 3, niter=20, seed=0)
    labelled = np.load(val[0] / "segment.npy") >= 0
    in_unseen = np.isin(np.load(val[0] / "superpoint.npy"), [0, 1, 2, 3])
    assert out["seen_points"] == pytest.approx((labelled & ~in_unseen).sum() / labelled.sum())
    assert out["miou_seen"] == pytest.approx(1.0) and out["acc_seen"] == pytest.approx(1.0)
    # the unseen super-voxels' points are wrong: accuracy is the seen fraction, every IoU below 1
    assert out["acc"] == pytest.approx(out["seen_points"]) and out["miou"] < 0.95


def test_val_rooms_keep_the_recipes_training_rooms() -> None:
    """--val-rooms N: the recipe's training rooms (its num_scenes - num_val) and N validation rooms,
    parsed by the recipe's data module; None leaves the recipe's split."""
    import yaml

    from benchmarks.pointdc_ablation import QUICK

    cfg = yaml.safe_load((QUICK / "pointdc_svc.yaml").read_text())["data"]["init_args"]
    train = cfg["num_scenes"] - cfg["num_val"]
    args = room_args(6)
    assert args == ["--data.init_args.num_scenes", str(train + 6), "--data.init_args.num_val", "6"]
    assert room_args(None) == []
    with pytest.raises(SystemExit):
        room_args(0)


def test_kmeans_draws_validate_the_given_network_once_per_seed(tmp_path, monkeypatch) -> None:
    """--kmeans-draws R: R validations of the SVC recipe, each with the network's weights as its
    starting checkpoint and its own K-means seed (DRAW_SEED + r), after the run's arguments so they
    win; the numbers are those validations', and the temporary checkpoint is removed."""
    import benchmarks.pointdc_ablation as ablation
    from unsup3d.models import Res16UNet
    from unsup3d.training.common import load_backbone

    net = Res16UNet(in_channels=6, width=0.25)
    calls = []

    def fake_run_cli(subcommand, config, args):
        def last(key):  # the CLI takes the last value of a repeated flag
            return args[len(args) - args[::-1].index(key)]

        ckpt, seed = last("--model.init_args.init_checkpoint"), int(last("--model.init_args.seed"))
        other = Res16UNet(in_channels=6, width=0.25)
        load_backbone(other, ckpt)
        same = all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
        calls.append((subcommand, config.name, seed, same))
        return seed

    monkeypatch.setattr(ablation, "run_cli", fake_run_cli)
    monkeypatch.setattr(ablation, "val_metrics", lambda seed: (seed / 1000, seed / 2000))
    base = ["--model.init_args.seed", "2", "--model.init_args.init_checkpoint", "null"]
    got = ablation.kmeans_draws(net, base, 3, tmp_path)
    seeds = [ablation.DRAW_SEED + r for r in range(3)]
    assert calls == [("validate", "pointdc_svc.yaml", s, True) for s in seeds]
    assert got == [(s / 1000, s / 2000) for s in seeds]
    assert not list(tmp_path.iterdir())
