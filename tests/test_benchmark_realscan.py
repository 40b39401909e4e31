"""benchmarks/realscan.py and its input: rows on tiny scene folders, JSON fields, scan-like rooms."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import realscan
from benchmarks.rooms_as_scene_folders import (
    cut_to_points,
    l_shaped,
    noisy_colour,
    partial_ceiling,
    scan_like,
    thin_structure,
    write_rooms,
)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rooms(tmp_path_factory.mktemp("rooms") / "scenes", train=2, val=1, scan_like_rooms=True)


def test_scan_like_rooms_are_degraded_and_deterministic() -> None:
    rng = np.random.default_rng(0)
    n = 5000
    scene = {
        "coord": np.c_[rng.uniform(0, 4, (n, 2)), rng.uniform(0, 2.5, n)].astype(np.float32),
        "color": rng.integers(0, 256, (n, 3)).astype(np.uint8),
        "segment": rng.integers(0, 20, n),
    }
    a = scan_like(scene, np.random.default_rng([1, 2]))
    b = scan_like(scene, np.random.default_rng([1, 2]))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert len(a["coord"]) != n and (a["segment"] == -1).any() and (a["segment"] == 19).any()
    assert len(a["coord"]) == len(a["color"]) == len(a["segment"])


def _box_room(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A 4 x 3 m floor (class 1) and its four 2.5 m walls (class 0), z up, axis-aligned."""
    floor = np.c_[rng.uniform([0, 0], [4, 3], (4000, 2)), np.zeros(4000)]
    t, z = rng.uniform(0, 1, 6000), rng.uniform(0, 2.5, 6000)
    side = rng.integers(0, 4, 6000)
    x = np.select([side == 0, side == 1, side == 2], [4 * t, 4 * t, np.zeros(6000)], np.full(6000, 4.0))
    y = np.select([side == 0, side == 1, side == 2], [np.zeros(6000), np.full(6000, 3.0), 3 * t], 3 * t)
    coord = np.concatenate([floor, np.c_[x, y, z]]).astype(np.float32)
    segment = np.repeat([1, 0], [4000, 6000])
    color = rng.integers(0, 256, (10000, 3)).astype(np.uint8)
    return {"coord": coord, "color": color, "segment": segment}


def test_partial_ceiling_is_unlabelled_at_the_walls_top() -> None:
    room = _box_room(np.random.default_rng(3))
    for seed in range(5):
        out = partial_ceiling(room, np.random.default_rng(seed))
        added = slice(len(room["coord"]), None)
        np.testing.assert_array_equal(out["coord"][: len(room["coord"])], room["coord"])
        assert (out["segment"][added] == -1).all()
        np.testing.assert_allclose(out["coord"][added, 2], room["coord"][:, 2].max(), atol=1e-6)
        assert len(out["coord"]) - len(room["coord"]) < 0.9 * 4000  # a patch, not the whole ceiling
    counts = [len(partial_ceiling(room, np.random.default_rng(s))["coord"]) for s in range(5)]
    assert max(counts) > len(room["coord"])  # some rooms do get a ceiling


def test_noisy_colour_changes_the_colours_only() -> None:
    """--noisy-colour: the points and labels as they were; the colours under a smooth brightness field
    (+-25 %) and per-point noise (sigma 20), the same for the same draw."""
    room = _box_room(np.random.default_rng(6))
    room["color"] = np.full_like(room["color"], 128)  # a grey room: what changes is the field and noise
    out = noisy_colour(room, np.random.default_rng(7))
    for key in ("coord", "segment"):
        np.testing.assert_array_equal(out[key], room[key])
    np.testing.assert_array_equal(out["color"], noisy_colour(room, np.random.default_rng(7))["color"])
    assert out["color"].dtype == np.uint8
    delta = out["color"].astype(np.float64) - 128
    mean = delta.mean(1)  # the field, the noise averaged over the channels
    assert 0.75 * 128 - 40 < (128 + mean).min() and (128 + mean).max() < 1.25 * 128 + 40
    assert np.ptp(mean) > 0.25 * 128  # the brightness does vary over the room
    residual = delta - delta.mean(1, keepdims=True)  # the per-point noise, the field removed
    assert 14 < residual.std() * np.sqrt(3 / 2) < 26


def test_l_shaped_room_loses_a_walled_off_corner() -> None:
    room = _box_room(np.random.default_rng(4))
    out = l_shaped(room, np.random.default_rng(5))
    again = l_shaped(room, np.random.default_rng(5))
    for key in out:
        np.testing.assert_array_equal(out[key], again[key])
    floor = out["coord"][out["segment"] == 1]
    # the floor's footprint is an L: one corner quadrant of the box holds no floor at all
    cells = np.zeros((8, 6), dtype=bool)
    cells[np.clip((floor[:, 0] * 2).astype(int), 0, 7), np.clip((floor[:, 1] * 2).astype(int), 0, 5)] = True
    corners = [cells[:1, :1], cells[:1, -1:], cells[-1:, :1], cells[-1:, -1:]]
    assert sum(not c.any() for c in corners) == 1 and cells.mean() < 0.95
    # new walls close the cut: wall points stand inside the box, away from its four sides
    wall = out["coord"][out["segment"] == 0]
    inner = (wall[:, 0] > 0.5) & (wall[:, 0] < 3.5) & (wall[:, 1] > 0.5) & (wall[:, 1] < 2.5)
    assert inner.sum() > 100


def test_written_rooms_are_scene_folders(rooms: Path) -> None:
    for split, count in (("train", 2), ("val", 1)):
        dirs = sorted((rooms / split).iterdir())
        assert len(dirs) == count
        assert {p.name for p in dirs[0].iterdir()} == {"coord.npy", "color.npy", "segment.npy"}


def test_handcrafted_row_and_json(rooms: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import benchmarks._common

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")  # not the repository's
    out = tmp_path / "rows.jsonl"
    results = realscan.main(
        ["--root", str(rooms), "--seeds", "2", "--rows", "kmeans-handcrafted", "--json", str(out)]
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["row"], r["seed"]) for r in rows] == [("kmeans-handcrafted", 0), ("kmeans-handcrafted", 1)]
    for r, (miou, acc) in zip(rows, results["kmeans-handcrafted"]):
        assert r["miou"] == miou and r["acc"] == acc and 0 < miou <= acc <= 1
        # each class's IoU (None: not in val) averages to the mIoU; the shares of the val points sum to 1
        assert len(r["iou"]) == r["num_classes"] == len(r["class_share"])
        assert np.mean([v for v in r["iou"] if v is not None]) == pytest.approx(miou)
        assert sum(r["class_share"]) == pytest.approx(1.0)
        # a class in val always has an IoU; one absent from it none, or 0 where a cluster was matched to it
        for v, share in zip(r["iou"], r["class_share"]):
            assert v is not None if share > 0 else v in (None, 0.0)
        in_val = [v for v, share in zip(r["iou"], r["class_share"]) if share > 0]
        assert r["miou_present"] == pytest.approx(sum(in_val) / len(in_val))
        assert r["miou_all"] == pytest.approx(sum(v or 0.0 for v in r["iou"]) / r["num_classes"])
    printed = capsys.readouterr().out
    assert "kmeans-handcrafted" in printed and "IoU per class" in printed and "floor" in printed
    assert "mIoU, classes in val" in printed
    assert "points a square metre of footprint" in printed  # the scenes' sizes, before the rows
    # the descriptors and super-voxels were added to the scene folders once
    scene = next((rooms / "val").iterdir())
    assert np.load(scene / "descriptor.npy").shape == (len(np.load(scene / "coord.npy")), 14)


def test_root_without_val_holds_out_every_nth_scene(rooms: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """All scenes in train/ (``unsup3d import`` with no --val-fraction): every 3rd scene by name is val,
    through symlinks, and both K-means rows (super-voxels, regions) run on that split."""
    import benchmarks._common

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    flat = tmp_path / "flat"
    (flat / "train").mkdir(parents=True)
    for split in ("train", "val"):
        for scene in (rooms / split).iterdir():
            shutil.copytree(scene, flat / "train" / f"{split}_{scene.name}")
    names = sorted(p.name for p in (flat / "train").iterdir())
    assert len(names) == 3
    work = tmp_path / "work"
    results = realscan.main(
        [
            "--root",
            str(flat),
            "--seeds",
            "1",
            "--rows",
            "kmeans-handcrafted",
            "kmeans-regions",
            "--work",
            str(work),
        ]
    )
    assert "holding out every 3rd scene by name (1 of 3)" in capsys.readouterr().out
    view = work / "split_view"
    assert sorted(p.name for p in (view / "val").iterdir()) == names[2:]
    assert sorted(p.name for p in (view / "train").iterdir()) == names[:2]
    assert (view / "val" / names[2]).resolve() == (flat / "train" / names[2]).resolve()
    assert (flat / "train" / names[2] / "region.npy").is_file()  # caches land in the scene folders
    for row in ("kmeans-handcrafted", "kmeans-regions"):
        assert 0 < results[row][0][0] <= results[row][0][1] <= 1
    assert realscan.held_out_view(rooms, work, 3) == rooms  # a root with val scenes is used as it is
    few = tmp_path / "few"
    for name in names[:2]:
        shutil.copytree(flat / "train" / name, few / "train" / name)
    with pytest.raises(SystemExit, match="its 2 scenes are fewer than --val-every 3"):
        realscan.held_out_view(few, tmp_path / "work_few", 3)
    assert not (tmp_path / "work_few").exists()  # stopped before it made a view


def test_present_miou_averages_over_the_classes_in_val() -> None:
    """The same classes for every row: those holding val points, a present class with no IoU as 0."""
    share = [0.3, 0.0, 0.0, 0.7]
    assert realscan.present_miou([0.5, None, 0.0, 1.0], share) == pytest.approx(0.75)
    assert realscan.present_miou([0.5, 0.0, None, None], share) == pytest.approx(0.25)
    assert np.isnan(realscan.present_miou([None, None], [0.0, 0.0]))


def test_release_miou_averages_over_every_class() -> None:
    """The releases' mean: every class, one with no IoU (absent, no cluster matched to it) as 0."""
    assert realscan.release_miou([0.5, None, 0.0, 1.0]) == pytest.approx(0.375)


def test_descriptor_settings_reach_every_row(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """--descriptors: the descriptor pass's settings for the K-means rows (the data module here) and,
    through the CLI, the teacher-free rows; recorded in the scene folders and the JSON rows."""
    import benchmarks._common

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    root = tmp_path / "copy"
    shutil.copytree(rooms, root)
    out = tmp_path / "rows.jsonl"
    settings = '{"outline": "hull", "column_cap": null}'
    args = ["--root", str(root), "--seeds", "1", "--rows", "kmeans-regions", "teacher-free-untrained"]
    args += ["--voxel-size", "0.1", "--jobs", "1", "--work", str(tmp_path / "work"), "--json", str(out)]
    realscan.main([*args, "--descriptors", settings])
    for scene in (root / "train").iterdir():
        recorded = json.loads((scene / "descriptor.json").read_text())
        assert recorded["outline"] == "hull" and recorded["column_cap"] is None
    for record in map(json.loads, out.read_text().splitlines()):
        assert record["descriptors"] == {"outline": "hull", "column_cap": None}


def test_kmeans_merged_row_and_first_seed(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """``kmeans-merged`` runs only when named, over the merged regions (``merged.npy``, written when
    ``--descriptors`` asks for them); ``--first-seed`` shifts the seeds, each row's the row function's
    for that seed."""
    import benchmarks._common

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    assert "kmeans-merged" in realscan.ROWS and "kmeans-merged" in realscan.NAMED_ONLY
    root = tmp_path / "copy"
    shutil.copytree(rooms, root)
    out = tmp_path / "rows.jsonl"
    args = ["--root", str(root), "--seeds", "2", "--first-seed", "3", "--rows", "kmeans-regions"]
    args += ["kmeans-merged", "--jobs", "1", "--work", str(tmp_path / "work"), "--json", str(out)]
    results = realscan.main([*args, "--descriptors", '{"merge_regions": 15}'])
    records = list(map(json.loads, out.read_text().splitlines()))
    assert sorted((r["row"], r["seed"]) for r in records) == [
        ("kmeans-merged", 3), ("kmeans-merged", 4), ("kmeans-regions", 3), ("kmeans-regions", 4)
    ]  # fmt: skip
    dm = realscan.data_module(root, 0.05, {"merge_regions": 15})
    k = realscan.count_classes(dm)
    for scene in dm.scene_dirs("train"):
        assert np.load(scene / "merged.npy").max() < 15
    for row, unit in (("kmeans-regions", "region"), ("kmeans-merged", "merged")):
        expect = [realscan.kmeans_handcrafted(dm, k, seed, unit=unit)[:2] for seed in (3, 4)]
        np.testing.assert_allclose(np.array(results[row]), np.array(expect))
    assert all(r["descriptors"] == {"merge_regions": 15} for r in records)


def _blob_scene(d: Path, rng: np.random.Generator, positions: np.ndarray) -> None:
    """24 units of 15 points, unit u of class u % 3, the same ids as super-voxels, regions and merged
    regions; every descriptor column of a point is its class's position on a line plus a little noise,
    so the units' pooled descriptors form three tight blobs along one direction. A few points are
    unlabelled (-1)."""
    d.mkdir(parents=True)
    unit = np.repeat(np.arange(24), 15)
    segment = unit % 3
    desc = positions[segment][:, None] + 0.01 * rng.standard_normal((len(unit), 14))
    segment[::37] = -1
    for name in ("superpoint", "region", "merged"):
        np.save(d / f"{name}.npy", unit)
    np.save(d / "segment.npy", segment)
    np.save(d / "descriptor.npy", desc.astype(np.float32))


def test_kmeans_rows_recover_well_separated_classes(tmp_path: Path) -> None:
    """Every K-means row (super-voxels, regions, merged regions; plain and over-clustered) on scenes
    whose units' descriptors are three tight blobs at 0, 0.8 and 2 along one line: each val unit's
    nearest centroid is its own class's, so mIoU, accuracy and every class's IoU are 1. (The blobs are
    uneven on purpose: the farthest centroid of the blobs at 0 and 0.8 is the same one.)"""
    import argparse

    rng = np.random.default_rng(0)
    positions = np.array([0.0, 0.8, 2.0])
    splits = {s: [tmp_path / s / f"s{i}" for i in range(n)] for s, n in (("train", 2), ("val", 2))}
    for dirs in splits.values():
        for d in dirs:
            _blob_scene(d, rng, positions)

    class Scenes:
        def scene_dirs(self, split):
            return splits[split]

    for clusters in (None, 9):
        args = argparse.Namespace(clusters=clusters)
        for row in realscan.KMEANS_ROWS:
            for seed in (0, 1):
                miou, acc, iou = realscan.run_row(row, tmp_path, Scenes(), args, seed, 3)
                assert (miou, acc) == pytest.approx((1.0, 1.0)), (row, clusters, seed)
                assert iou == pytest.approx([1.0, 1.0, 1.0])


def test_kmeans_rows_restart_as_the_recipe_does(rooms: Path, monkeypatch) -> None:
    """The K-means rows keep the best of the teacher-free recipe's ``kmeans_restarts`` (1 where the
    recipe names none), as its own clusterings do."""
    recipe = realscan._recipe()
    assert realscan.recipe_restarts() == recipe["model"]["init_args"].get("kmeans_restarts", 1)
    dm = realscan.prepare(rooms, 0.05)
    k = realscan.count_classes(dm)
    seen, real = [], realscan.kmeans
    monkeypatch.setattr(realscan, "kmeans", lambda *a, **kw: seen.append(kw.get("nredo")) or real(*a, **kw))
    for restarts in (1, 3):
        recipe["model"]["init_args"]["kmeans_restarts"] = restarts
        monkeypatch.setattr(realscan, "_recipe", lambda r=recipe: r)
        realscan.kmeans_handcrafted(dm, k, 0, unit="region")
    assert seen == [1, 3]


def test_over_clustered_kmeans_rows(rooms: Path, monkeypatch) -> None:
    """--clusters K: K-means into K, merged into the classes before matching (more clusters than
    classes never reach the metric); K <= classes is the plain row."""
    from unsup3d.metrics import HungarianMIoU

    dm = realscan.prepare(rooms, 0.05)
    k = realscan.count_classes(dm)
    plain = realscan.kmeans_handcrafted(dm, k, 0, unit="region")
    assert realscan.kmeans_handcrafted(dm, k, 0, unit="region", clusters=k) == plain
    seen = []
    real_update = HungarianMIoU.update
    monkeypatch.setattr(
        HungarianMIoU, "update", lambda self, p, t: seen.append(int(p.max())) or real_update(self, p, t)
    )
    miou, acc, _ = realscan.kmeans_handcrafted(dm, k, 0, unit="region", clusters=3 * k)
    assert 0 < miou <= acc <= 1 and max(seen) < k


def test_clusters_reach_the_teacher_free_rows_only(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """--clusters K > classes: both teacher-free rows run SVC with K clusters merged into the classes;
    svc-scratch keeps the classes; K <= classes adds nothing."""
    import argparse

    calls = {}
    monkeypatch.setattr(realscan, "run_cli", lambda cmd, cfg, args: calls.setdefault(len(calls), args))
    monkeypatch.setattr(realscan, "cli_scores", lambda cli, k: (0.5, 0.5, [None] * k))
    dm = realscan.prepare(rooms, 0.05)
    for clusters, expect in ((60, True), (20, False), (None, False)):
        args = argparse.Namespace(
            voxel_size=0.05, batch_size=4, svc_epochs=1, work=tmp_path, clusters=clusters,
            teacher_free_cmd=False, descriptors=None, svc_lr=None if clusters else 0.015,
            teacher_free_args=None,
        )  # fmt: skip
        for row in ("teacher-free-untrained", "teacher-free", "svc-scratch"):
            calls.clear()
            realscan.run_row(row, rooms, dm, args, 0, 20)
            cli = calls[0]
            # --svc-lr reaches every SVC row; without it the recipe's lr is left alone
            assert ("--model.init_args.lr" in cli) == (clusters is None)
            if clusters is None:
                assert cli[cli.index("--model.init_args.lr") + 1] == "0.015"
            over = "--model.init_args.num_clusters" in cli
            assert over == (expect and row != "svc-scratch"), (clusters, row)
            if over:
                assert cli[cli.index("--model.init_args.num_clusters") + 1] == "60"
                assert cli[cli.index("--model.init_args.merge_clusters") + 1] == "true"


def test_teacher_free_args_reach_the_teacher_free_rows_only(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """--teacher-free-args: split like a shell line, appended to both teacher-free rows' SVC recipe
    (after the recipe's own arguments, so they win), not to svc-scratch; recorded in their JSON rows."""
    import benchmarks._common

    calls = {}
    monkeypatch.setattr(realscan, "run_cli", lambda cmd, cfg, args: calls.setdefault(len(calls), args))
    monkeypatch.setattr(realscan, "cli_scores", lambda cli, k: (0.5, 0.25, [None] * k))
    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    realscan.main([
        "--root", str(rooms), "--seeds", "1", "--jobs", "1", "--work", str(tmp_path / "w"),
        "--rows", "teacher-free-untrained", "teacher-free", "svc-scratch",
        "--json", str(tmp_path / "r.jsonl"),
        "--teacher-free-args", "--model.init_args.superpoint_pooling false",
    ])  # fmt: skip
    by_row = {}
    for cli in calls.values():
        pooling = [cli[i + 1] for i, a in enumerate(cli) if a == "--model.init_args.superpoint_pooling"]
        units = cli[cli.index("--data.init_args.units") + 1]
        by_row[units] = pooling
    assert by_row[realscan.recipe_units()] == ["false"]  # the teacher-free rows: the given value, last
    assert by_row["superpoint"] == ["true"]  # svc-scratch: the release's Eq. 10, untouched
    assert len(calls) == 3
    records = {r["row"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    for row in ("teacher-free-untrained", "teacher-free"):
        assert records[row]["teacher_free_args"] == ["--model.init_args.superpoint_pooling", "false"]
        assert (records[row]["miou"], records[row]["acc"]) == (0.5, 0.25)
    assert records["svc-scratch"]["teacher_free_args"] is None
    assert {(r["source_root"], r["train_scenes"]) for r in records.values()} == {(str(rooms), None)}


def test_train_scenes_reach_the_rows_and_their_records(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    import benchmarks._common

    roots = []

    def fake_cli(cmd, cfg, args):
        roots.append(args[args.index("--data.init_args.root") + 1])

    monkeypatch.setattr(realscan, "run_cli", fake_cli)
    monkeypatch.setattr(realscan, "cli_scores", lambda cli, k: (0.5, 0.25, [None] * k))
    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    out = tmp_path / "r.jsonl"
    realscan.main([
        "--root", str(rooms), "--seeds", "1", "--jobs", "1", "--work", str(tmp_path / "w"),
        "--rows", "kmeans-regions", "teacher-free", "--train-scenes", "1", "--json", str(out),
    ])  # fmt: skip
    view = tmp_path / "w" / "train1_view"
    assert roots == [str(view)] and len(list((view / "train").iterdir())) == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["source_root"], r["train_scenes"]) for r in records} == {(str(rooms), 1)}


def test_teacher_row_needs_a_teacher(rooms: Path) -> None:
    with pytest.raises(SystemExit):
        realscan.main(["--root", str(rooms), "--rows", "teacher"])


def test_network_rows_run_end_to_end(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """random-clustering, svc-scratch, teacher-free and teacher (a tiny ViT saved as a local folder,
    so it loads as pretrained with no random fallback) at one epoch each, one process."""
    import benchmarks._common
    from unsup3d.vision.teacher import ViTTeacher

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    tiny = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    tiny.update(intermediate_size=64, patch_size=8, image_size=64)
    ViTTeacher.from_config(tiny).model.save_pretrained(tmp_path / "tiny-vit")
    out = tmp_path / "rows.jsonl"
    rows = ["random-clustering", "teacher-free-untrained", "svc-scratch", "teacher-free", "teacher"]
    args = ["--root", str(rooms), "--seeds", "1", "--rows", *rows, "--teacher", str(tmp_path / "tiny-vit")]
    args += ["--cmd-epochs", "1", "--svc-epochs", "1", "--voxel-size", "0.1", "--jobs", "1"]
    results = realscan.main([*args, "--json", str(out), "--work", str(tmp_path / "work")])
    records = {r["row"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == set(rows) and records["teacher"]["teacher"] == str(tmp_path / "tiny-vit")
    for row in rows:
        assert 0 < results[row][0][0] <= 1 and 0 < results[row][0][1] <= 1
        # the per-class IoU the run logged (val/iou/<c>) averages to its mIoU
        ious = [v for v in records[row]["iou"] if v is not None]
        assert len(records[row]["iou"]) == records[row]["num_classes"]
        assert np.mean(ious) == pytest.approx(records[row]["miou"], abs=1e-6)
    train_scene = next((rooms / "train").iterdir())
    assert (train_scene / "cmd_target.npy").is_file()  # the teacher row's feature pass, on rendered views
    assert json.loads((train_scene / "cmd_target.json").read_text())["settings"]["views"] == "render"


def test_class_count_leaves_out_an_ignore_id(tmp_path: Path, capsys) -> None:
    class Scenes:  # the part of the data module count_classes reads
        root = tmp_path

        def scene_dirs(self, split: str) -> list[Path]:
            return sorted((tmp_path / split).iterdir())

    for split, labels in (("train", [0, 3, -1, 19]), ("val", [1, 2, 19])):
        (tmp_path / split / "s").mkdir(parents=True)
        np.save(tmp_path / split / "s" / "segment.npy", np.array(labels))
    assert realscan.count_classes(Scenes()) == 20
    assert "ignore" not in capsys.readouterr().out
    np.save(tmp_path / "val" / "s" / "segment.npy", np.array([1, 255]))
    assert realscan.count_classes(Scenes()) == 20  # 0-19 scored, 255 left out
    assert "ignore ids" in capsys.readouterr().out
    np.save(tmp_path / "train" / "s" / "segment.npy", np.array([0, 300, 255]))
    assert realscan.count_classes(Scenes()) == 2  # every id from 255 up is an ignore id
    assert "[255, 300]" in capsys.readouterr().out
    for split in ("train", "val"):  # only ids from 255 up: they are the classes
        np.save(tmp_path / split / "s" / "segment.npy", np.array([255, 256]))
    assert realscan.count_classes(Scenes()) == 257
    assert "ignore" not in capsys.readouterr().out


def test_read_only_root_is_read_through_a_view(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """A root that cannot be written (a read-only mount; simulated, since root may write anywhere):
    its scenes are read through symlinked files under --work and the caches are written there, the
    root untouched; with all scenes in train/, the held-out split is made on that view."""
    import benchmarks._common

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    src = tmp_path / "mounted"
    for split in ("train", "val"):
        for scene in (rooms / split).iterdir():
            shutil.copytree(scene, src / "train" / f"{split}_{scene.name}", ignore=shutil.ignore_patterns(
                "superpoint*", "region*", "merged*", "descriptor*", ".*"))  # fmt: skip
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    real_can_write = realscan.can_write
    monkeypatch.setattr(realscan, "can_write", lambda d: src not in [d, *d.parents] and real_can_write(d))
    work = tmp_path / "work"
    args = ["--root", str(src), "--seeds", "1", "--rows", "kmeans-regions", "--work", str(work)]
    results = realscan.main(args)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before  # nothing written
    view = work / "writable_view" / "train"
    names = sorted(p.name for p in view.iterdir())
    assert names == sorted(p.name for p in (src / "train").iterdir())
    scene = view / names[0]
    assert (scene / "coord.npy").is_symlink() and (
        scene / "coord.npy"
    ).resolve().parent == src / "train" / names[0]
    assert (scene / "region.npy").is_file() and not (scene / "region.npy").is_symlink()
    held_out = work / "split_view" / "val" / names[2]
    assert held_out.resolve() == scene.parent.joinpath(names[2]).resolve()
    assert 0 < results["kmeans-regions"][0][0] <= results["kmeans-regions"][0][1] <= 1
    assert realscan.writable_view(rooms, work) == rooms  # a writable root is used as it is


def test_train_subset_view_keeps_the_first_training_scenes_and_every_val_scene(tmp_path: Path) -> None:
    root = tmp_path / "root"
    names = {"train": ["s3", "s0", "s2", "s1"], "val": ["v1", "v0"]}
    for split, scenes in names.items():
        for name in scenes:
            (root / split / name).mkdir(parents=True)
            np.save(root / split / name / "coord.npy", np.zeros((3, 3), np.float32))
    view = realscan.train_subset_view(root, tmp_path / "work", 2)
    assert view != root
    assert sorted(p.name for p in (view / "train").iterdir()) == ["s0", "s1"]  # the first two by name
    assert sorted(p.name for p in (view / "val").iterdir()) == ["v0", "v1"]
    assert (view / "train" / "s1").resolve() == (root / "train" / "s1").resolve()
    # a second call with another n replaces the view's scenes rather than adding to them
    view = realscan.train_subset_view(root, tmp_path / "work", 1)
    assert sorted(p.name for p in (view / "train").iterdir()) == ["s0"]
    for n in (None, 4, 9):  # nothing to leave out: the root itself
        assert realscan.train_subset_view(root, tmp_path / "work", n) == root
    with pytest.raises(SystemExit):
        realscan.train_subset_view(root, tmp_path / "work", 0)


def test_can_write_tries_a_file(tmp_path: Path) -> None:
    assert realscan.can_write(tmp_path)
    assert not realscan.can_write(tmp_path / "missing")
    (tmp_path / "a_file").write_text("")
    assert not realscan.can_write(tmp_path / "a_file")


def test_joint_parts_sum_to_the_joint_distance() -> None:
    """joint_parts.part_scores: the joint score's argmax is the nearest centroid in the joint space
    ``[f, d]`` (the distance written out), and it is the sum of its two halves."""
    from benchmarks.joint_parts import part_scores

    g = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(200, 8, generator=g), dim=1)
    d = torch.rand(200, 5, generator=g)
    centroids = torch.randn(6, 13, generator=g)
    s = part_scores(f, d, centroids)
    dist = ((torch.cat([f, d], 1)[:, None, :] - centroids[None]) ** 2).sum(-1)
    torch.testing.assert_close(s["joint"], s["network"] + s["descriptors"])
    assert torch.equal(s["joint"].argmax(1), dist.argmin(1))
    torch.testing.assert_close(
        s["joint"] - s["joint"][:, :1], -(dist - dist[:, :1]) / 2, rtol=1e-4, atol=1e-5
    )
    dist_d = ((d[:, None, :] - centroids[None, :, 8:]) ** 2).sum(-1)
    assert torch.equal(s["descriptors"].argmax(1), dist_d.argmin(1))


def test_joint_parts_reproduce_the_recipes_evaluation(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """joint_parts.py on the tiny rooms, one epoch: its ``joint`` scoring is the recipe's own validation
    (same mIoU and accuracy), and the halves' numbers are fractions."""
    import benchmarks._common
    from benchmarks import joint_parts

    monkeypatch.setattr(benchmarks._common, "RESULTS", tmp_path / "results")
    out = tmp_path / "rows.jsonl"
    args = ["--root", str(rooms), "--seeds", "1", "--svc-epochs", "1", "--voxel-size", "0.1"]
    (row,) = joint_parts.main([*args, "--json", str(out), "--work", str(tmp_path / "work")])
    assert row["joint_miou"] == pytest.approx(row["recipe_miou"], abs=1e-6)
    assert row["joint_acc"] == pytest.approx(row["recipe_acc"], abs=1e-6)
    for part in ("descriptors", "network"):
        assert 0 < row[f"{part}_miou"] <= 1 and 0 <= row[f"{part}_agreement"] <= 1
        assert row[f"{part}_spread"] > 0
    assert json.loads(out.read_text())["seed"] == 0


def test_units_ceiling_labels_each_unit_by_its_majority(tmp_path: Path) -> None:
    """The ceiling rows: a unit holding 3 points of class 1 and 1 of class 0 counts as class 1 for all
    four; a pure unit is exact; unlabelled points neither vote nor count. Checked against the
    confusion written out by hand."""

    class Scenes:
        def scene_dirs(self, split):
            return [tmp_path] if split == "val" else []

    np.save(tmp_path / "segment.npy", np.array([1, 1, 1, 0, 0, 0, -1, 2]))
    np.save(tmp_path / "region.npy", np.array([0, 0, 0, 0, 1, 1, 1, 2]))
    miou, acc, iou = realscan.units_ceiling(Scenes(), 3, "region")
    # predicted: [1, 1, 1, 1, 0, 0, 0, 2]; scored points 0-5 and 7: class 0 IoU 2/3, class 1 3/4, class 2 1
    assert acc == pytest.approx(6 / 7)
    assert miou == pytest.approx((2 / 3 + 3 / 4 + 1) / 3)
    assert iou == pytest.approx([2 / 3, 3 / 4, 1])


def test_class_names_by_count_list_and_ids() -> None:
    assert realscan.class_names(None, 20)[:2] == ["wall", "floor"]
    assert realscan.class_names(None, 13)[:2] == ["ceiling", "floor"]
    assert realscan.class_names(None, 3) == ["0", "1", "2"]
    assert realscan.class_names("ids", 20)[19] == "19"
    assert realscan.class_names("a, b,c", 3) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="2 names for 3 classes"):
        realscan.class_names("a,b", 3)


def test_class_share_counts_the_scored_val_points(tmp_path: Path) -> None:
    class Scenes:
        def scene_dirs(self, split):
            return [tmp_path / "a", tmp_path / "b"] if split == "val" else [tmp_path / "t"]

    for name, seg in (("a", [0, 0, 1, -1]), ("b", [2, 255, 0, 1]), ("t", [2, 2, 2, 2])):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "segment.npy", np.array(seg))
    # val points scored: 0, 0, 1, 2, 0, 1 (the -1 and the 255 left out; the training scene not read)
    assert realscan.class_share(Scenes(), 3) == pytest.approx([3 / 6, 2 / 6, 1 / 6])


def test_teacher_free_cmd_pools_over_the_recipes_units(rooms: Path, tmp_path: Path, monkeypatch) -> None:
    """--teacher-free-cmd: CMD distils the descriptors over the units the teacher-free SVC recipe pools
    over (not a fixed choice), then SVC starts from CMD's last checkpoint."""
    import argparse
    from types import SimpleNamespace

    calls = []

    def fake_cli(cmd, cfg, args):
        calls.append((Path(cfg).name, args))
        kept = SimpleNamespace(last_model_path="c.ckpt")
        return SimpleNamespace(trainer=SimpleNamespace(checkpoint_callback=kept))

    monkeypatch.setattr(realscan, "run_cli", fake_cli)
    monkeypatch.setattr(realscan, "cli_scores", lambda cli, k: (0.5, 0.5, [None] * k))
    dm = realscan.prepare(rooms, 0.05)
    args = argparse.Namespace(
        voxel_size=0.05, batch_size=4, svc_epochs=1, cmd_epochs=1, work=tmp_path, clusters=None,
        teacher_free_cmd=True, descriptors=None, svc_lr=None, teacher_free_args=None,
    )  # fmt: skip
    for units in ("region", "merged"):
        monkeypatch.setattr(realscan, "recipe_units", lambda units=units: units)
        calls.clear()
        realscan.run_row("teacher-free", rooms, dm, args, 0, 20)
        (cmd_cfg, cmd), (svc_cfg, svc) = calls
        assert (cmd_cfg, svc_cfg) == ("pointdc_geometric_cmd.yaml", "pointdc_geometric_svc.yaml")
        for cli in (cmd, svc):
            assert cli[cli.index("--data.init_args.units") + 1] == units
        assert svc[len(svc) - 1 - svc[::-1].index("--model.init_args.init_checkpoint") + 1] == "c.ckpt"


def test_unsplit_rooms_are_the_same_scenes_all_in_train(rooms: Path, tmp_path: Path) -> None:
    """--unsplit: every scene of the split draw, array for array, under train/ and none under val/."""
    flat = write_rooms(tmp_path / "flat", train=2, val=1, scan_like_rooms=True, unsplit=True)
    split = {d.name: d for s in ("train", "val") for d in (rooms / s).iterdir()}
    assert not (flat / "val").exists()
    assert sorted(d.name for d in (flat / "train").iterdir()) == sorted(split)
    for name, d in split.items():
        for key in ("coord", "color", "segment"):
            got = np.load(flat / "train" / name / f"{key}.npy")
            np.testing.assert_array_equal(got, np.load(d / f"{key}.npy"))


def _box_room_with_normals(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """:func:`_box_room` with its true normals: the floor's up, each wall's along its axis."""
    room = _box_room(rng)
    x, y, z = room["coord"].T
    normal = np.zeros_like(room["coord"])
    normal[room["segment"] == 1] = [0, 0, 1]
    wall = room["segment"] == 0
    on_x = wall & ((np.abs(x) < 1e-6) | (np.abs(x - 4) < 1e-6)) & (z >= 0)
    normal[on_x] = [1, 0, 0]
    normal[wall & ~on_x] = [0, 1, 0]
    room["normal"] = normal.astype(np.float32)
    return room


def _plane_normals(coord: np.ndarray, idx: np.ndarray, radius: float = 0.2) -> np.ndarray:
    """The normal of the plane fitted (SVD) to each ``coord[idx]``'s neighbours within ``radius``."""
    out = []
    for i in idx:
        nbr = coord[np.linalg.norm(coord - coord[i], axis=1) < radius]
        out.append(np.linalg.svd(nbr - nbr.mean(0), full_matrices=False)[2][-1])
    return np.array(out)


def test_normals_are_carried_through_every_degradation() -> None:
    """--normals: every degradation keeps the other arrays of the same draw and carries unit normals
    that still lie across the surfaces they sit on (checked against planes fitted to the points)."""
    room = _box_room_with_normals(np.random.default_rng(8))
    plain = {k: v for k, v in room.items() if k != "normal"}

    def degrade(scene: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
        scene = l_shaped(scene, np.random.default_rng(1))
        scene = partial_ceiling(scene, np.random.default_rng(4))
        scene = scan_like(scene, np.random.default_rng([2, seed]))  # each seed turns the room its own way
        return noisy_colour(scene, np.random.default_rng(3))

    for seed in range(3):
        out, ref = degrade(room, seed), degrade(plain, seed)
        assert set(out) == {"coord", "color", "segment", "normal"} and set(ref) == {
            "coord",
            "color",
            "segment",
        }
        for key in ref:
            np.testing.assert_array_equal(out[key], ref[key])
        np.testing.assert_allclose(np.linalg.norm(out["normal"], axis=1), 1.0, atol=1e-5)
        rng = np.random.default_rng(0)
        for label in (0, 1):  # walls (the closing walls among them) and the floor, turned with the scene
            idx = rng.choice(np.flatnonzero(out["segment"] == label), 60, replace=False)
            cos = np.abs((_plane_normals(out["coord"], idx) * out["normal"][idx]).sum(1))
            assert np.median(cos) > 0.95, (seed, label, np.median(cos))
    for seed in range(5):  # the ceiling's points (some draws have none) face down
        with_ceiling = partial_ceiling(room, np.random.default_rng(seed))
        np.testing.assert_array_equal(
            with_ceiling["normal"][len(room["coord"]) :],
            [[0, 0, -1]] * (len(with_ceiling["coord"]) - len(room["coord"])),
        )


def test_written_normals_are_the_meshes(rooms: Path, tmp_path: Path) -> None:
    """write_rooms(normals=True): the same scenes plus normal.npy, unit, vertical on the floor and
    horizontal on the walls."""
    with_normals = write_rooms(tmp_path / "n", train=2, val=1, scan_like_rooms=True, normals=True)
    for split in ("train", "val"):
        for d in (rooms / split).iterdir():
            for key in ("coord", "color", "segment"):
                np.testing.assert_array_equal(
                    np.load(with_normals / split / d.name / f"{key}.npy"), np.load(d / f"{key}.npy")
                )
            normal = np.load(with_normals / split / d.name / "normal.npy")
            segment = np.load(d / "segment.npy")
            assert normal.shape == (len(segment), 3) and normal.dtype == np.float32
            np.testing.assert_allclose(np.linalg.norm(normal, axis=1), 1.0, atol=1e-5)
            assert (np.abs(normal[segment == 1, 2]) > 0.95).mean() > 0.9
            assert (np.abs(normal[segment == 0, 2]) < 0.3).mean() > 0.9


def test_denser_rooms_are_the_same_rooms(tmp_path: Path) -> None:
    """write_rooms(points_per_m2=...): the same layout (extent, classes) at about that many times the
    points."""
    base = write_rooms(tmp_path / "base", train=1, val=1, scan_like_rooms=False)
    dense = write_rooms(tmp_path / "dense", train=1, val=1, scan_like_rooms=False, points_per_m2=750.0)
    for split in ("train", "val"):
        for d in (base / split).iterdir():
            a, b = (np.load(r / split / d.name / "coord.npy") for r in (base, dense))
            assert 2.4 < len(b) / len(a) < 3.6
            np.testing.assert_allclose(b.min(0), a.min(0), atol=0.1)
            np.testing.assert_allclose(b.max(0), a.max(0), atol=0.1)
            labels = [np.unique(np.load(r / split / d.name / "segment.npy")) for r in (base, dense)]
            np.testing.assert_array_equal(*labels)


def test_thinned_structure_holds_its_share_and_keeps_every_other_point() -> None:
    """--structure-share: walls and floor thinned to the share of the labelled points; the objects,
    the unlabelled points and every array's rows of the kept points as they were."""
    room = _box_room_with_normals(np.random.default_rng(8))
    n = len(room["coord"])
    rng = np.random.default_rng(1)
    objects = {  # a table-sized class-7 block and unlabelled clutter beside the walls and floor
        "coord": rng.uniform([1, 1, 0], [2, 2, 0.8], (3000, 3)),
        "color": rng.integers(0, 256, (3000, 3)).astype(np.uint8),
        "segment": np.r_[np.full(2500, 7), np.full(500, -1)],
        "normal": np.tile([0.0, 0.0, 1.0], (3000, 1)),
    }
    scene = {k: np.concatenate([room[k], objects[k].astype(room[k].dtype)]) for k in room}
    structure = np.isin(scene["segment"], (0, 1))
    assert structure.sum() / (scene["segment"] >= 0).sum() > 0.75
    out = thin_structure(scene, 0.5, np.random.default_rng(3))
    kept_struct = np.isin(out["segment"], (0, 1))
    assert kept_struct.sum() / (out["segment"] >= 0).sum() == pytest.approx(0.5, abs=0.02)
    for key in scene:  # the objects and the unlabelled points: the same rows, in the same order
        np.testing.assert_array_equal(out[key][~kept_struct], scene[key][~structure])
    # the kept wall and floor points are rows of the input, in order, with their own colours and normals
    row_of = {tuple(c): i for i, c in zip(np.flatnonzero(structure), scene["coord"][structure])}
    picked = np.array([row_of[tuple(c)] for c in out["coord"][kept_struct]])
    assert len(picked) < structure.sum() and (np.diff(picked) > 0).all()
    for key in scene:
        np.testing.assert_array_equal(out[key][kept_struct], scene[key][picked])
    # where walls and floor already hold less, nothing is dropped
    same = thin_structure(scene, 0.9, np.random.default_rng(3))
    for key in scene:
        np.testing.assert_array_equal(same[key], scene[key])
    assert len(room["coord"]) == n
    with pytest.raises(ValueError, match="structure-share"):
        thin_structure(scene, 1.0, np.random.default_rng(3))


def test_cut_to_points_keeps_that_many_rows_of_every_array_in_order() -> None:
    """--points-per-scene: n distinct rows of the scene, every array's the same rows, in their order;
    a scene of n points or fewer as it is."""
    room = _box_room_with_normals(np.random.default_rng(8))
    total = len(room["coord"])
    out = cut_to_points(room, 2500, np.random.default_rng(5))
    assert all(len(v) == 2500 for v in out.values())
    row_of = {tuple(c): i for i, c in enumerate(room["coord"])}
    assert len(row_of) == total  # every point is its own row
    picked = np.array([row_of[tuple(c)] for c in out["coord"]])
    assert (np.diff(picked) > 0).all()  # distinct and in order
    for key in room:
        np.testing.assert_array_equal(out[key], room[key][picked])
    # drawn at random, not the first rows: the kept rows span the scene
    assert picked.min() < total // 10 and picked.max() > total - total // 10
    for n in (total, total + 1):
        same = cut_to_points(room, n, np.random.default_rng(5))
        for key in room:
            np.testing.assert_array_equal(same[key], room[key])
    with pytest.raises(ValueError, match="points-per-scene"):
        cut_to_points(room, 0, np.random.default_rng(5))


def test_scene_sizes_count_points_and_footprints(tmp_path: Path) -> None:
    """Every train and val scene's points and footprint (a 2 x 3 m and a 4 x 4 m floor plan, points
    on a 5 cm grid), and the line the benchmark prints of them."""

    def floor(nx: int, ny: int) -> np.ndarray:
        x, y = np.meshgrid(np.arange(nx) * 0.05 + 0.01, np.arange(ny) * 0.05 + 0.01, indexing="ij")
        return np.c_[x.ravel(), y.ravel(), np.zeros(x.size)].astype(np.float32)

    for name, coord in (("t", floor(40, 60)), ("v", floor(80, 80))):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "coord.npy", coord)

    class Scenes:
        def scene_dirs(self, split):
            return [tmp_path / ("v" if split == "val" else "t")]

    sizes = realscan.scene_sizes(Scenes())
    np.testing.assert_allclose(sizes, [[2400, 6.0], [6400, 16.0]])
    line = realscan.describe_sizes(sizes)
    assert "2400-6400 (median 4400) points" in line
    assert "6.0-16.0 (median 11.0) square metres" in line
    assert "400-400 (median 400) points a square metre" in line
