"""import_scenes: hand-made PLY / NPY scenes in, scene folders out, checked value by value."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import plyfile
import pytest

from unsup3d.data.import_scenes import (
    NO_COLOR,
    as_uint8_color,
    assign_splits,
    import_scenes,
    read_user_scene,
)
from unsup3d.data.scene_folder import list_scenes, read_scene


def write_ply(path: Path, fields: dict[str, np.ndarray], text: bool = False) -> Path:
    """A PLY point cloud with one vertex property per entry of ``fields`` (dtype kept)."""
    n = len(next(iter(fields.values())))
    vertex = np.empty(n, dtype=[(k, v.dtype) for k, v in fields.items()])
    for k, v in fields.items():
        vertex[k] = v
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex")], text=text).write(str(path))
    return path


@pytest.fixture
def xyz() -> np.ndarray:
    return np.random.default_rng(0).uniform(-2, 2, (50, 3)).astype(np.float32)


def test_ply_with_uchar_colour_label_and_normals(tmp_path: Path, xyz: np.ndarray) -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (50, 3)).astype(np.uint8)
    label = np.arange(50, dtype=np.int32) % 4 - 1  # includes -1
    normal = np.tile(np.array([0, 0, 1], np.float32), (50, 1))
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "red": rgb[:, 0], "green": rgb[:, 1]}
    fields |= {"blue": rgb[:, 2], "nx": normal[:, 0], "ny": normal[:, 1], "nz": normal[:, 2], "label": label}
    scene = read_user_scene(write_ply(tmp_path / "a.ply", fields))
    np.testing.assert_array_equal(scene["coord"], xyz)
    np.testing.assert_array_equal(scene["color"], rgb)
    np.testing.assert_array_equal(scene["normal"], normal)
    np.testing.assert_array_equal(scene["segment"], label.astype(np.int64))
    assert scene["segment"].dtype == np.int64 and scene["color"].dtype == np.uint8


def test_ply_float_colour_ascii_no_label_and_class_field(tmp_path: Path, xyz: np.ndarray) -> None:
    unit = np.linspace(0, 1, 150).reshape(50, 3).astype(np.float32)
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    scene = read_user_scene(
        write_ply(tmp_path / "b.ply", fields | {"r": unit[:, 0], "g": unit[:, 1], "b": unit[:, 2]}, text=True)
    )
    np.testing.assert_array_equal(scene["color"], np.round(unit.astype(np.float64) * 255).astype(np.uint8))
    np.testing.assert_array_equal(scene["segment"], -np.ones(50, np.int64))
    assert "normal" not in scene

    bare = read_user_scene(write_ply(tmp_path / "c.ply", fields | {"class": np.full(50, 7, np.uint8)}))
    np.testing.assert_array_equal(bare["color"], np.full((50, 3), NO_COLOR, np.uint8))
    np.testing.assert_array_equal(bare["segment"], np.full(50, 7))
    # An explicit label property must exist; a label map sends unknown ids to -1.
    with pytest.raises(ValueError, match="c.ply.*'semantic_id'"):
        read_user_scene(tmp_path / "c.ply", label_field="semantic_id")
    mapped = read_user_scene(tmp_path / "c.ply", label_map={7: 2})
    np.testing.assert_array_equal(mapped["segment"], np.full(50, 2))
    assert (read_user_scene(tmp_path / "c.ply", label_map={3: 0})["segment"] == -1).all()


def test_npy_layouts(tmp_path: Path, xyz: np.ndarray) -> None:
    rgb255 = np.random.default_rng(2).integers(0, 256, (50, 3)).astype(np.float64)
    np.save(tmp_path / "p3.npy", xyz)
    np.save(tmp_path / "p6.npy", np.hstack([xyz, rgb255]))  # float colours 0-255
    np.save(tmp_path / "p6u.npy", np.hstack([xyz, rgb255 / 255.0]))  # float colours 0-1
    labels = np.arange(50) % 3
    np.save(tmp_path / "p7.npy", np.hstack([xyz, rgb255, labels[:, None]]))
    assert (read_user_scene(tmp_path / "p3.npy")["color"] == NO_COLOR).all()
    for name in ("p6", "p6u", "p7"):
        scene = read_user_scene(tmp_path / f"{name}.npy")
        np.testing.assert_allclose(scene["coord"], xyz, atol=1e-6)
        np.testing.assert_array_equal(scene["color"], rgb255.astype(np.uint8))
    np.testing.assert_array_equal(read_user_scene(tmp_path / "p7.npy")["segment"], labels)
    np.save(tmp_path / "p4.npy", np.hstack([xyz, xyz[:, :1]]))
    with pytest.raises(ValueError, match=r"p4\.npy.*\(50, 4\)"):
        read_user_scene(tmp_path / "p4.npy")


def test_folder_scene_and_label_npy(tmp_path: Path, xyz: np.ndarray) -> None:
    d = tmp_path / "room"
    d.mkdir()
    np.save(d / "coord.npy", xyz.astype(np.float64))
    np.save(d / "color.npy", np.full((50, 3), 9, np.int32))
    np.save(d / "label.npy", np.full(50, 5, np.int16))
    scene = read_user_scene(d)
    assert (
        scene["coord"].dtype == np.float32 and (scene["color"] == 9).all() and (scene["segment"] == 5).all()
    )
    np.save(d / "color.npy", np.full((49, 3), 9, np.uint8))
    with pytest.raises(ValueError, match="room.*color.*50 points"):
        read_user_scene(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="empty.*coord.npy"):
        read_user_scene(empty)


def test_folder_scene_reads_pointcept_scannet20_labels(tmp_path: Path, xyz: np.ndarray) -> None:
    """Pointcept's ScanNet folders hold ``segment20.npy`` (ScanNet-20 ids, -1 ignored) and
    ``segment200.npy``, no ``segment.npy``: the 20-class labels are read, never the 200-class ones."""
    d = tmp_path / "scene0000_00"
    d.mkdir()
    np.save(d / "coord.npy", xyz)
    labels = np.arange(50) % 21 - 1  # -1 .. 19
    np.save(d / "segment20.npy", labels.astype(np.int16))
    np.save(d / "segment200.npy", np.full(50, 150, np.int16))
    np.testing.assert_array_equal(read_user_scene(d)["segment"], labels)
    np.save(d / "segment.npy", np.full(50, 3, np.int64))  # a scene's own segment.npy comes first
    assert (read_user_scene(d)["segment"] == 3).all()


def test_bad_files_name_the_file(tmp_path: Path, xyz: np.ndarray) -> None:
    (tmp_path / "junk.ply").write_bytes(b"ply\nformat nonsense\n")
    with pytest.raises(ValueError, match="junk.ply"):
        read_user_scene(tmp_path / "junk.ply")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(ValueError, match="junk.npy"):
        read_user_scene(tmp_path / "junk.npy")
    np.save(tmp_path / "hot.npy", np.hstack([xyz, np.full((50, 3), 300.0)]))
    with pytest.raises(ValueError, match="hot.npy.*0-255"):
        read_user_scene(tmp_path / "hot.npy")
    np.save(tmp_path / "frac.npy", np.hstack([xyz, np.full((50, 3), 0.5), np.full((50, 1), 0.5)]))
    with pytest.raises(ValueError, match="frac.npy.*whole numbers"):
        read_user_scene(tmp_path / "frac.npy")


def test_as_uint8_color_rules() -> None:
    assert as_uint8_color(np.array([[0.0, 0.5, 1.0]]), "x").tolist() == [[0, 128, 255]]
    assert as_uint8_color(np.array([[0.0, 2.0, 255.0]]), "x").tolist() == [[0, 2, 255]]
    assert as_uint8_color(np.array([[0, 1, 255]], np.int64), "x").tolist() == [[0, 1, 255]]
    with pytest.raises(ValueError, match="x: colours span"):
        as_uint8_color(np.array([[-1, 0, 0]]), "x")


def test_assign_splits() -> None:
    names = [f"s{i}" for i in range(10)]
    assert set(assign_splits(names, "train").values()) == {"train"}
    a = assign_splits(names, "train", val_fraction=0.3, seed=4)
    assert sorted(a.values()).count("val") == 3 and a == assign_splits(names, "train", 0.3, 4)
    draws = {
        tuple(sorted(k for k, v in assign_splits(names, "train", 0.3, s).items() if v == "val"))
        for s in range(5)
    }
    assert len(draws) > 1  # the seed chooses which scenes validate
    assert list(assign_splits(["a", "b"], "train", 0.01).values()).count("val") == 1  # at least one
    explicit = assign_splits(["a", "b", "c"], {"train": ["a", "c"], "val": ["b"]})
    assert explicit == {"a": "train", "b": "val", "c": "train"}
    with pytest.raises(ValueError, match="no split.*'c'"):
        assign_splits(["a", "b", "c"], {"train": ["a"], "val": ["b"]})
    with pytest.raises(ValueError, match="not in the source.*'z'"):
        assign_splits(["a"], {"train": ["a", "z"]})
    with pytest.raises(ValueError, match="not both"):
        assign_splits(["a"], {"train": ["a"]}, val_fraction=0.5)


def test_import_folder_end_to_end(tmp_path: Path, xyz: np.ndarray) -> None:
    src = tmp_path / "mine"
    src.mkdir()
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    write_ply(src / "kitchen.ply", fields | {"label": np.full(50, 1, np.int32)})
    np.save(src / "office.npy", np.hstack([xyz, np.full((50, 3), 0.25)]))
    (src / "scan_03").mkdir()
    np.save(src / "scan_03" / "coord.npy", xyz)
    (src / "README.txt").write_text("notes")
    bad = xyz.copy()
    bad[:5] = np.nan
    np.save(src / "partial.npy", bad)
    np.save(src / "void.npy", np.full((4, 3), np.inf))

    root = tmp_path / "scenes"
    with pytest.warns(UserWarning) as record:
        out = import_scenes(
            src, root, split={"train": ["kitchen", "office", "partial", "void"], "val": ["scan_03"]}
        )
    messages = " ".join(str(w.message) for w in record)
    assert "README.txt" in messages and "partial.npy: dropping 5 of 50" in messages and "void.npy" in messages
    assert [p.name for p in list_scenes(root, "train")] == ["kitchen", "office", "partial"]
    assert [p.name for p in list_scenes(root, "val")] == ["scan_03"] and len(out) == 4
    kitchen = read_scene(root / "train" / "kitchen")
    assert set(kitchen) == {"coord", "color", "segment"} and (kitchen["segment"] == 1).all()
    assert (read_scene(root / "train" / "office")["color"] == 64).all()
    assert len(read_scene(root / "train" / "partial")["coord"]) == 45

    np.save(src / "kitchen.npy", xyz)
    clash = "kitchen.npy.*kitchen.ply|kitchen.ply.*kitchen.npy"
    with pytest.raises(ValueError, match=clash), pytest.warns(UserWarning, match="README"):
        import_scenes(src, tmp_path / "other")
    assert not (tmp_path / "other").exists()  # the clash is found before anything is written

    # One file as the source; the same scene imported into another split is flagged.
    with pytest.warns(UserWarning, match=r"'office' is also in .*train"):
        (moved,) = import_scenes(src / "office.npy", root, split="val")
    assert moved == root / "val" / "office"


def test_imported_scenes_train_with_scene_folder_module(tmp_path: Path) -> None:
    from unsup3d.pointdc.datamodules import SceneFolderDataModule

    rng = np.random.default_rng(3)
    for i in range(2):
        pts = np.hstack([rng.uniform(0, 2, (300, 3)), rng.uniform(0, 1, (300, 3))])
        np.save(tmp_path / f"s{i}.npy", pts)
    root = tmp_path / "root"
    import_scenes([tmp_path / "s0.npy", tmp_path / "s1.npy"], root, split="train", val_fraction=0.5, seed=0)
    dm = SceneFolderDataModule(root=str(root), voxel_size=0.1, batch_size=1)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert (batch["segment"] == -1).all() and batch["num_superpoints"] > 0
    assert dm.datasets["val"] is not None and len(dm.datasets["train"]) == 1


def test_unsup3d_import_command(tmp_path: Path, xyz: np.ndarray, capsys) -> None:
    """``unsup3d import SRC ROOT``: the same scenes as ``import_scenes``, a summary, one-line errors."""
    import json

    from unsup3d.cli import main

    src = tmp_path / "scans"
    src.mkdir()
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2]}
    for i, raw in enumerate((7, 9, 7, 3)):
        write_ply(src / f"room_{i}.ply", fields | {"class": np.full(50, raw, np.int32)})
    (tmp_path / "map.json").write_text(json.dumps({"7": 0, "9": 1}))
    root = tmp_path / "scenes"
    main(["import", str(src), str(root), "--val-fraction", "0.25", "--seed", "1", "--label-map",
          str(tmp_path / "map.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert f"imported 4 scenes into {root}" in out
    assert re.search(r"train\s+3 scenes", out) and re.search(r"val\s+1 scenes", out)
    assert "SceneFolderDataModule --data.init_args.root " + str(root) in out
    expected = assign_splits([f"room_{i}" for i in range(4)], "train", 0.25, 1)
    for i, label in enumerate((0, 1, 0, -1)):  # 3 is not in the map: unlabelled
        scene = read_scene(root / expected[f"room_{i}"] / f"room_{i}")
        assert (scene["segment"] == label).all()

    (tmp_path / "bad.json").write_text('{"7": "chair"}')
    (src / "broken.npy").write_bytes(b"not an array")
    for argv, message in (
        ([str(tmp_path / "nowhere"), str(root)], "nowhere: source folder does not exist"),
        (
            [str(src), str(root), "--label-map", str(tmp_path / "bad.json")],
            "keys and values must be integers",
        ),
        ([str(src), str(root), "--label-map", str(tmp_path / "none.json")], "none.json"),
        ([str(src), str(root), "--val-fraction", "1.5"], "val_fraction must be in [0, 1)"),
        ([str(src / "broken.npy"), str(root)], "broken.npy"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["import", *argv])
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar, one line
        assert exc.value.code == 2 and err.startswith("unsup3d import: error:") and message in err, err
