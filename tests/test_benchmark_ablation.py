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


# -- the geometric teacher (--teacher geometric): the teacher-free path as Table 4's teacher ---------


def _descriptor_room(d, rng: np.random.Generator, directions: np.ndarray, noise: float) -> None:
    """60 points a class (3 classes), every point a super-voxel of its own; ``region.npy`` groups each
    class's points in 3 regions. Descriptors: column 0-2 are the class's ``directions`` row plus
    ``noise``; column 3 is loud noise that a zero weight must silence."""
    d.mkdir(parents=True)
    segment = np.repeat(np.arange(3), 60)
    desc = directions[segment] + noise * rng.standard_normal((180, 3))
    desc = np.concatenate([desc, 50.0 * rng.standard_normal((180, 1))], axis=1)
    np.save(d / "descriptor.npy", desc.astype(np.float16))
    np.save(d / "superpoint.npy", np.arange(180, dtype=np.int64))
    np.save(d / "region.npy", (segment * 3 + np.arange(180) % 3).astype(np.int64))
    np.save(d / "segment.npy", segment.astype(np.int64))


def _descriptor_split(tmp_path, seed: int, directions: np.ndarray, noise: float, train: int = 2):
    """``train`` training rooms and one val room of :func:`_descriptor_room` under ``tmp_path``."""
    rng = np.random.default_rng(seed)
    train_dirs = [tmp_path / "train" / f"s{i}" for i in range(train)]
    val_dirs = [tmp_path / "val" / "s0"]
    for d in [*train_dirs, *val_dirs]:
        _descriptor_room(d, rng, directions, noise)
    return train_dirs, val_dirs


def test_descriptor_row_clusters_by_distance_with_the_weights(tmp_path) -> None:
    """The geometric teacher's row 2: Euclidean K-means of the weighted descriptors. Classes whose
    descriptors point the same way at different lengths are one direction to a cosine, three clusters
    to a distance; a column of weight 0 does not count however loud."""
    directions = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.0, 3.0, 3.0]])
    train, val = _descriptor_split(tmp_path, 0, directions, noise=0.05)
    geo = {"target_key": "descriptor", "seen_key": None, "unit_key": "region"}
    out = multiview_clustering(train, val, 3, niter=30, seed=0, scale=torch.tensor([1.0, 1, 1, 0]), **geo)
    assert out["miou"] == pytest.approx(1.0) and out["seen_points"] == 1.0
    loud = multiview_clustering(train, val, 3, niter=30, seed=0, scale=torch.ones(4), **geo)
    assert loud["miou"] < 0.9  # the noise column, weighted in, splits the classes
    cosine = multiview_clustering(train, val, 3, niter=30, seed=0, **{**geo, "target_key": "descriptor"})
    assert cosine["miou"] < 0.9  # spherical K-means sees one direction (and the noise column)


def test_descriptor_row_pools_over_the_units_asked_for(tmp_path) -> None:
    """``unit_key``: pooled over the class-pure regions the per-point noise averages out; over the
    super-voxels (one point each here) it does not."""
    directions = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    train, val = _descriptor_split(tmp_path, 1, directions, noise=0.6)
    scale = torch.tensor([1.0, 1, 1, 0])
    kw = {"target_key": "descriptor", "seen_key": None, "scale": scale, "niter": 30, "seed": 0}
    by_region = multiview_clustering(train, val, 3, unit_key="region", **kw)
    by_superpoint = multiview_clustering(train, val, 3, unit_key="superpoint", **kw)
    assert by_region["miou"] == pytest.approx(1.0)
    assert by_superpoint["miou"] < 0.8


def test_recipe_teacher_is_the_quickstarts_choice(monkeypatch) -> None:
    """--teacher recipe (the default) runs what the quickstart runs: the 2D recipes where their
    teacher's weights load here, else the teacher-free path; any other teacher is itself."""
    import unsup3d.quickstart
    from benchmarks.pointdc_ablation import GEOMETRIC, TWO_D, resolve_teacher

    asked = []
    for here in (False, True):
        available = lambda name, h=here: asked.append(name) or h  # noqa: E731
        monkeypatch.setattr(unsup3d.quickstart, "teacher_available", available)
        assert resolve_teacher("recipe")[0] == (TWO_D if here else GEOMETRIC)
    assert asked == ["facebook/dino-vits8"] * 2  # the 2D CMD recipe's teacher
    for other in ("oracle", GEOMETRIC, TWO_D, "/models/dino-vits8"):
        assert resolve_teacher(other)[0] == other
    assert len(asked) == 2  # no weights looked for


@pytest.mark.parametrize("asked", ["geometric", "recipe"])
def test_geometric_teacher_runs_the_teacher_free_recipes(tmp_path, monkeypatch, asked) -> None:
    """--teacher geometric (and the default, recipe, on a machine without the 2D teacher's weights):
    every run is of the teacher-free recipes; the random and CMD rows cluster
    and score the network's features alone (no descriptors) and are scored again in the joint space
    (``joint_miou``); row 2 clusters the descriptors over the recipe's units; the SVC rows are the
    recipe's fits from CMD's checkpoint. The rows' numbers are the runs' own. ``--svc-args`` reaches
    every run of the SVC recipe and no CMD run, and the rows record it."""
    import json
    import sys
    from types import SimpleNamespace

    import benchmarks.pointdc_ablation as ablation

    directions = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    train, val = _descriptor_split(tmp_path, 0, directions, noise=0.05, train=1)
    for d in [*train, *val]:
        desc = np.load(d / "descriptor.npy").astype(np.float32)
        full = np.zeros((len(desc), 14), np.float32)
        full[:, :3] = desc[:, :3]  # the colour columns (weight 0.5 in the recipe); the rest 0
        np.save(d / "descriptor.npy", full.astype(np.float16))
    calls = []

    def fake_run_cli(subcommand, config, args):
        calls.append((subcommand, config.name, list(args)))
        n = len(calls)
        hp = SimpleNamespace(num_classes=3, kmeans_iters=20, kmeans_restarts=2)
        return SimpleNamespace(
            model=SimpleNamespace(backbone=torch.nn.Linear(1, 1), hparams=hp),
            trainer=SimpleNamespace(
                callback_metrics={"val/miou": torch.tensor(n / 100), "val/acc": torch.tensor(n / 50)},
                checkpoint_callback=SimpleNamespace(last_model_path="cmd.ckpt"),
            ),
            datamodule=SimpleNamespace(scene_dirs=lambda split: train if split == "train" else val),
        )

    import unsup3d.quickstart

    monkeypatch.setattr(unsup3d.quickstart, "teacher_available", lambda name: False)
    monkeypatch.setattr(ablation, "run_cli", fake_run_cli)
    monkeypatch.setattr(ablation, "write_row", lambda *a, **k: None)
    out = tmp_path / "rows.jsonl"
    argv = ["pointdc_ablation.py", "--seeds", "1", "--teacher", asked, "--json", str(out),
            "--data-root", str(tmp_path / "data"),
            "--svc-args", "--model.init_args.kmeans_restarts 2"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    ablation.main()

    def has(args, key, value):
        return any(a == key and b == value for a, b in zip(args, args[1:]))

    configs = {name for _, name, _ in calls}
    assert configs == {"pointdc_geometric_cmd.yaml", "pointdc_geometric_svc.yaml"}
    random_row, cmd_fit, cmd_row, joint_random, joint_cmd, *svc_fits = calls
    assert random_row[0] == "validate" and has(random_row[2], "--model.init_args.init_checkpoint", "null")
    assert cmd_fit[:2] == ("fit", "pointdc_geometric_cmd.yaml")
    assert has(cmd_row[2], "--model.init_args.init_checkpoint", "cmd.ckpt")
    for _, _, args in (random_row, cmd_row):
        assert has(args, "--model.init_args.descriptor_weights", "null")
        assert has(args, "--model.init_args.eval_descriptors", "false")
    for (_, _, joint), (_, _, alone) in ((joint_random, random_row), (joint_cmd, cmd_row)):
        assert "--model.init_args.descriptor_weights" not in joint  # the recipe's joint space
        assert joint + ablation.NETWORK_ONLY == alone  # otherwise the same run
    assert [c[0] for c in svc_fits] == ["fit"] * 3
    for config, args in [(name, a) for _, name, a in calls]:
        assert has(args, "--model.init_args.kmeans_restarts", "2") == (config == "pointdc_geometric_svc.yaml")
    assert all(has(a, "--model.init_args.init_checkpoint", "cmd.ckpt") for _, _, a in svc_fits)
    rows = {r["row"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["random clustering"]["miou"] == pytest.approx(0.01)
    assert rows["CMD"]["miou"] == pytest.approx(0.03)
    assert rows["random clustering"]["joint_miou"] == pytest.approx(0.04)
    assert rows["CMD"]["joint_miou"] == pytest.approx(0.05)
    assert rows["+ super-voxel pooling"]["miou"] == pytest.approx(0.08)
    # row 2 from the descriptors (class-pure colour columns): no network, no run
    assert rows["multi-view clustering"]["miou"] == pytest.approx(1.0)
    assert all(r["svc_args"] == ["--model.init_args.kmeans_restarts", "2"] for r in rows.values())
    assert rows["multi-view clustering"]["units"] == "region"
    assert {(r["teacher"], r["teacher_asked"]) for r in rows.values()} == {("geometric", asked)}
    # with no --val-rooms every run is on the default 6 validation rooms, and the rows say so
    assert all(has(a, "--data.init_args.num_val", str(ablation.VAL_ROOMS)) for _, _, a in calls)
    assert ablation.VAL_ROOMS == 6 and {r["val_rooms"] for r in rows.values()} == {6}
