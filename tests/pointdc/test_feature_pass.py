"""CMD's feature pass (PointDC Eq. 3-6) over prepared scenes: what it writes, when it is skipped or
redone, and how the data modules run it and load its targets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from unsup3d.data.scene_folder import list_scenes, read_scene
from unsup3d.pointdc.datamodules import SceneFolderDataModule, SyntheticRoomsDataModule
from unsup3d.pointdc.feature_pass import FeatureTargets, run_feature_pass
from unsup3d.vision import TeacherWeightsNotFoundError

ROOMS = {"num_scenes": 2, "num_val": 1, "frames_per_scene": 3}
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


class ColourTeacher(nn.Module):
    """Test double: a pixel's 'feature' is its colour in [0, 1], at full resolution; so a point's
    target must be the colour it shows, which the scene folder records independently."""

    def __init__(self, name: str = "colour") -> None:
        super().__init__()
        self.name, self.pretrained, self.feature_dim = name, True, 3

    def forward(self, images: Tensor) -> Tensor:
        return images.permute(0, 3, 1, 2).float() / 255


@pytest.fixture(scope="module")
def rooms_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two synthetic rooms (one for training) in ScanNet's raw layout, prepared into scene folders."""
    root = tmp_path_factory.mktemp("rooms")
    SyntheticRoomsDataModule(**ROOMS, data_root=str(root)).prepare_data()
    return root


@pytest.fixture()
def rooms(rooms_root: Path, tmp_path: Path) -> SyntheticRoomsDataModule:
    """A private copy of the rooms (the tests below write into the scene folders)."""
    shutil.copytree(rooms_root, tmp_path / "data")
    return SyntheticRoomsDataModule(**ROOMS, data_root=str(tmp_path / "data"), voxel_size=0.1, batch_size=1)


def _train_scene(dm: SyntheticRoomsDataModule) -> Path:
    return list_scenes(dm.prepared_root, "train")[0]


def _colour_error(scene_dir: Path) -> tuple[float, float]:
    """Median colour error of the seen points' targets, and the same for shuffled points."""
    s = read_scene(scene_dir, ["color", "cmd_target", "cmd_seen"])
    seen = s["cmd_seen"]
    target, colour = s["cmd_target"][seen].astype(np.float32), s["color"][seen] / 255.0
    shuffled = target[np.random.default_rng(0).permutation(len(target))]
    return float(np.median(np.abs(target - colour).max(1))), float(
        np.median(np.abs(shuffled - colour).max(1))
    )


@pytest.mark.parametrize("views", ["frames", "render"])
def test_targets_show_each_point_its_own_colour(rooms: SyntheticRoomsDataModule, views: str) -> None:
    scene = _train_scene(rooms)
    cfg = FeatureTargets(views=views, frame_every=1, num_views=6, inside_fraction=0.5, image_size=(96, 128))
    assert run_feature_pass([scene], cfg, rooms.frames_dir, teacher=ColourTeacher()) == {
        "computed": 1,
        "skipped": 0,
    }
    n = len(np.load(scene / "coord.npy"))
    target, seen = np.load(scene / "cmd_target.npy"), np.load(scene / "cmd_seen.npy")
    assert target.dtype == np.float16 and target.shape == (n, 3)
    assert seen.dtype == np.bool_ and seen.shape == (n,) and seen.mean() > 0.15
    assert not target[~seen].any()  # unseen points carry zeros
    err, shuffled = _colour_error(scene)
    assert err < 0.1 and err < 0.4 * shuffled  # lighting, JPEG and splats blur, a wrong pose would not fit
    record = json.loads((scene / "cmd_target.json").read_text())
    assert record["settings"]["views"] == views and record["settings"]["view_pool"] == "max"
    assert record["stats"]["num_views"] == (3 if views == "frames" else 6)


def test_pass_is_skipped_when_settings_match_and_redone_when_they_change(
    rooms: SyntheticRoomsDataModule,
) -> None:
    scene = _train_scene(rooms)
    cfg = FeatureTargets(views="frames", frame_every=1, image_size=(48, 64))
    teacher = ColourTeacher()

    def run(c: FeatureTargets = cfg, t: nn.Module = teacher) -> dict[str, int]:
        return run_feature_pass([scene], c, rooms.frames_dir, teacher=t)

    assert run()["computed"] == 1
    stamp = (scene / "cmd_target.npy").stat().st_mtime_ns
    assert run() == {"computed": 0, "skipped": 1}
    assert (scene / "cmd_target.npy").stat().st_mtime_ns == stamp
    mean = FeatureTargets(views="frames", frame_every=1, image_size=(48, 64), view_pool="mean")
    assert run(mean)["computed"] == 1
    assert json.loads((scene / "cmd_target.json").read_text())["settings"]["view_pool"] == "mean"
    assert run(mean, ColourTeacher("another teacher"))["computed"] == 1
    # a scene interrupted between its arrays and its json, or with arrays of the wrong size, is redone
    (scene / "cmd_target.json").unlink()
    assert run()["computed"] == 1
    np.save(scene / "cmd_seen.npy", np.zeros(3, bool))
    assert run()["computed"] == 1 and np.load(scene / "cmd_seen.npy").shape == (
        len(np.load(scene / "coord.npy")),
    )


def test_data_module_writes_training_targets_that_follow_the_points(rooms: SyntheticRoomsDataModule) -> None:
    ft = FeatureTargets(
        allow_random_teacher=True,
        random_teacher_config=TINY_VIT,
        cache_dir=str(rooms.data_root / "no_hf_cache"),
        frame_every=1,
        image_size=(48, 64),
    )
    dm = SyntheticRoomsDataModule(
        **ROOMS, data_root=str(rooms.data_root), voxel_size=0.1, batch_size=1, feature_targets=ft
    )
    assert dm.prepared_root == rooms.prepared_root  # the targets do not change the scene cache
    with pytest.warns(UserWarning, match="RANDOM 2D TEACHER"):
        dm.prepare_data()
    train, val = _train_scene(dm), list_scenes(dm.prepared_root, "val")[0]
    assert not (val / "cmd_target.npy").exists()  # validation needs no targets
    record = json.loads((train / "cmd_target.json").read_text())["settings"]
    assert record["views"] == "frames" and not record["teacher_pretrained"] and record["feature_dim"] == 32
    stamp = (train / "cmd_target.npy").stat().st_mtime_ns
    with pytest.warns(UserWarning, match="RANDOM 2D TEACHER"):
        dm.prepare_data()
    assert (train / "cmd_target.npy").stat().st_mtime_ns == stamp

    dm.setup("fit")
    assert "cmd_target" not in dm.datasets["val"].keys
    batch = next(iter(dm.train_dataloader()))  # augmented: rotated, jittered
    stored = read_scene(train, ["cmd_target", "cmd_seen"])
    assert batch["cmd_target"].dtype == torch.float16 and batch["cmd_target"].shape == (
        len(batch["inverse"]),
        32,
    )
    idx = batch["point_index"].numpy()
    np.testing.assert_array_equal(batch["cmd_target"].numpy(), stored["cmd_target"][idx])
    np.testing.assert_array_equal(batch["cmd_seen"].numpy(), stored["cmd_seen"][idx])


def test_a_scene_without_usable_frames_trains_without_targets(rooms: SyntheticRoomsDataModule) -> None:
    scene = _train_scene(rooms)
    for pose in (rooms.frames_dir(scene) / "pose").glob("*.txt"):
        pose.write_text("-inf -inf -inf -inf\n" * 4)  # SensReader's mark of lost tracking
    with pytest.warns(UserWarning, match=f"{scene.name}.*no usable frame"):
        run_feature_pass([scene], FeatureTargets(views="frames"), rooms.frames_dir, teacher=ColourTeacher())
    assert not np.load(scene / "cmd_seen.npy").any() and np.load(scene / "cmd_target.npy").shape[1] == 3
    assert "no usable frame" in json.loads((scene / "cmd_target.json").read_text())["stats"]["problem"]


def test_missing_teacher_weights_stop_the_pass(rooms: SyntheticRoomsDataModule) -> None:
    cfg = FeatureTargets(cache_dir=str(rooms.data_root / "no_hf_cache"))
    with pytest.raises(TeacherWeightsNotFoundError, match="huggingface-cli download"):
        run_feature_pass([_train_scene(rooms)], cfg, rooms.frames_dir)


def test_rendered_targets_are_redone_when_the_scene_is_recoloured(rooms: SyntheticRoomsDataModule) -> None:
    """The json records digests of the points, super-voxels and (rendered views) colours: a scene
    recoloured in place gets targets of its new colours; a json written before the sources were
    recorded is trusted."""
    from unsup3d.data.scene_folder import file_digest

    scene = _train_scene(rooms)
    cfg = FeatureTargets(views="render", num_views=6, inside_fraction=0.5, image_size=(96, 128))

    def run() -> dict[str, int]:
        return run_feature_pass([scene], cfg, teacher=ColourTeacher())

    assert run()["computed"] == 1
    sources = json.loads((scene / "cmd_target.json").read_text())["sources"]
    assert sources["color"] == file_digest(scene / "color.npy") and set(sources) == {
        "coord",
        "superpoint",
        "color",
    }
    assert run()["skipped"] == 1
    np.save(scene / "color.npy", 255 - np.load(scene / "color.npy"))  # recoloured in place
    assert run()["computed"] == 1
    err, shuffled = _colour_error(scene)
    assert err < 0.1 and err < 0.4 * shuffled  # the targets show the new colours
    record = json.loads((scene / "cmd_target.json").read_text())
    del record["sources"]  # a record of the version before the sources
    (scene / "cmd_target.json").write_text(json.dumps(record))
    np.save(scene / "color.npy", 255 - np.load(scene / "color.npy"))
    assert run()["skipped"] == 1


def test_scene_folders_render_their_views(rooms: SyntheticRoomsDataModule, tmp_path: Path) -> None:
    root = tmp_path / "folders"
    shutil.copytree(rooms.prepared_root, root)
    scene = list_scenes(root, "train")[0]
    with pytest.raises(FileNotFoundError, match=f"{scene.name}.*no exported frames"):
        run_feature_pass([scene], FeatureTargets(views="frames"), teacher=ColourTeacher())
    ft = FeatureTargets(
        allow_random_teacher=True,
        random_teacher_config=TINY_VIT,
        cache_dir=str(tmp_path / "no_hf_cache"),
        num_views=4,
        image_size=(48, 64),
        splits=["train", "val"],
    )
    dm = SceneFolderDataModule(root=str(root), voxel_size=0.1, feature_targets=ft)
    assert dm.frames_dir(scene) is None  # bare scene folders have no raw frames: views: auto renders
    with pytest.warns(UserWarning, match="RANDOM 2D TEACHER"):
        dm.prepare_data()
    for split in ("train", "val"):
        record = json.loads((list_scenes(root, split)[0] / "cmd_target.json").read_text())
        assert record["settings"]["views"] == "render" and record["stats"]["num_views"] == 4
    dm.setup("fit")
    assert "cmd_target" in dm.datasets["val"].keys  # validation scenes with targets load them


def test_training_scenes_without_targets_are_named(rooms: SyntheticRoomsDataModule) -> None:
    dm = SyntheticRoomsDataModule(
        **ROOMS, data_root=str(rooms.data_root), voxel_size=0.1, extra_keys=["cmd_target", "cmd_seen"]
    )
    with pytest.raises(FileNotFoundError, match=f"{_train_scene(rooms).name}.*cmd_target.npy is missing"):
        dm.setup("fit")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="view_pool"):
        FeatureTargets(view_pool="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="inside_fraction"):
        FeatureTargets(inside_fraction=1.5)
