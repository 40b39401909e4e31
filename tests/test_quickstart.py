"""The README's main job: ``python -m unsup3d.quickstart`` runs CMD then SVC and reports mIoU, and the
W&B dashboard of each run (offline) holds what the README promises."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.callbacks.wandb_env import isolate_wandb
from unsup3d import quickstart
from unsup3d.callbacks import OfflineRun, find_offline_runs, read_offline_run
from unsup3d.data.formats.scannet_labels import SCANNET20_CLASS_NAMES
from unsup3d.quickstart import main
from unsup3d.viz import label_colors

MAX_POINTS = 20000  # ValidationMedia's max_points in the quickstart recipes


def _val_scene(root: Path) -> tuple[dict[bytes, int], int]:
    """The one validation room's points (coordinates -> class id) and its point count."""
    (scene,) = [p for p in root.glob("data/quickstart/synthetic_rooms-*/val/*") if p.is_dir()]
    coord, segment = np.load(scene / "coord.npy"), np.load(scene / "segment.npy")
    return {c.tobytes(): int(s) for c, s in zip(coord.astype(np.float32), segment)}, len(coord)


def _check_run(save_dir: Path, lr_key: str, root: Path) -> OfflineRun:
    (run_dir,) = find_offline_runs(save_dir)
    run = read_offline_run(run_dir, timeout=20)
    assert run.finished
    assert run.scalars("train/loss") and all(np.isfinite(run.scalars("train/loss")))
    assert run.scalars(lr_key) and run.scalars(lr_key)[0] > 0
    (miou,), (acc,) = run.scalars("val/miou"), run.scalars("val/acc")
    assert 0 <= miou <= 1 and 0 <= acc <= 1

    (table,) = run.media("val/iou_table")
    table = json.loads(table.read_text())
    assert table["columns"] == ["class", "iou"]
    assert [row[0] for row in table["data"]] == list(SCANNET20_CLASS_NAMES)
    for name, iou in table["data"]:  # the table and the scalar logs agree
        logged = run.scalars(f"val/iou/{name}")
        assert (iou is None and not logged) or logged == [pytest.approx(iou)]
    present = [iou for _, iou in table["data"] if iou is not None]
    assert np.mean(present) == pytest.approx(miou, abs=1e-6)

    (image,) = run.media("val/confusion")
    assert image.suffix == ".png" and min(Image.open(image).size) > 200

    points, total = _val_scene(root)
    clouds = {}
    for what in ("ground_truth", "clusters", "supervoxels"):
        (path,) = run.media(f"val/scene0/{what}")
        assert path.name.endswith(".pts.json")
        clouds[what] = np.asarray(json.loads(path.read_text()), dtype=np.float64)
        assert clouds[what].shape == (min(total, MAX_POINTS), 6)
        assert ((clouds[what][:, 3:] >= 0) & (clouds[what][:, 3:] <= 255)).all()
    xyz = clouds["ground_truth"][:, :3]
    assert all(np.array_equal(c[:, :3], xyz) for c in clouds.values())
    # the points are the scene's own, coloured by their class
    gt = np.array([points[p.astype(np.float32).tobytes()] for p in xyz])
    np.testing.assert_array_equal(clouds["ground_truth"][:, 3:], label_colors(gt))
    # clusters take their matched class's colour: agreement on labelled points is the accuracy
    agree = (clouds["clusters"][:, 3:] == clouds["ground_truth"][:, 3:]).all(1)[gt >= 0].mean()
    assert agree == pytest.approx(acc, abs=0.03)
    assert len(np.unique(clouds["supervoxels"][:, 3:], axis=0)) > 5
    return run


def test_quickstart_runs_cmd_then_svc_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Without the 2D teacher's weights (as on CI) the quickstart runs the teacher-free path."""
    monkeypatch.setattr(quickstart, "teacher_available", lambda name: False)
    isolate_wandb(monkeypatch, tmp_path / "wandb_home")
    monkeypatch.chdir(tmp_path)  # data/ and outputs/ land here; the recipes come from the checkout
    monkeypatch.setattr(sys, "argv", ["quickstart"])
    small = [
        *("--data.init_args.num_scenes", "3", "--data.init_args.num_val", "1"),
        *("--data.init_args.frames_per_scene", "2", "--data.init_args.voxel_size", "0.1"),
        *("--model.init_args.backbone.init_args.width", "0.25", "--trainer.max_epochs", "1"),
        *("--trainer.check_val_every_n_epoch", "1", "--trainer.enable_progress_bar", "false"),
    ]
    metrics = main(small)
    assert 0 <= float(metrics["val/miou"]) <= 1 and 0 <= float(metrics["val/acc"]) <= 1
    outputs = tmp_path / "outputs" / "quickstart"
    assert (outputs / "geometric_cmd" / "checkpoints" / "last.ckpt").is_file()
    out = capsys.readouterr().out
    assert "PointDC quickstart (teacher-free)" in out and "mIoU" in out
    assert "facebook/dino-vits8 are not on this machine" in out
    (scene,) = [p for p in tmp_path.glob("data/quickstart/synthetic_rooms-*/val/*") if p.is_dir()]
    assert np.load(scene / "descriptor.npy").shape == (len(np.load(scene / "coord.npy")), 14)

    # each stage is its own offline W&B run with losses, lr, metrics, IoU table, confusion and clouds
    _check_run(outputs / "geometric_cmd", "lr-Adam", tmp_path)
    svc = _check_run(outputs / "geometric_svc", "lr-SGD", tmp_path)
    assert svc.scalars("val/miou") == [pytest.approx(float(metrics["val/miou"]))]


def test_quickstart_picks_the_2d_teacher_only_where_its_weights_are(monkeypatch: pytest.MonkeyPatch) -> None:
    root = quickstart.experiments_dir()
    asked = []
    monkeypatch.setattr(quickstart, "teacher_available", lambda name: asked.append(name) or True)
    cmd, svc, why = quickstart.pointdc_recipes(root)
    assert (cmd.name, svc.name) == ("pointdc_cmd.yaml", "pointdc_svc.yaml") and asked == [
        "facebook/dino-vits8"
    ]
    monkeypatch.setattr(quickstart, "teacher_available", lambda name: False)
    cmd, svc, why = quickstart.pointdc_recipes(root)
    assert (cmd.name, svc.name) == ("pointdc_geometric_cmd.yaml", "pointdc_geometric_svc.yaml")
    assert why.startswith("teacher-free")
    cmd, svc, why = quickstart.pointdc_recipes(root, "random-teacher")
    assert cmd.name == "pointdc_cmd.yaml" and "random" in why


def test_teacher_available_is_false_without_weights(tmp_path: Path) -> None:
    assert not quickstart.teacher_available(str(tmp_path / "no-such-teacher"))




def test_take_teacher_takes_both_spellings_and_leaves_the_rest() -> None:
    assert quickstart.take_teacher(["--teacher", "/m/dino", "--trainer.max_epochs", "2"]) == (
        "/m/dino",
        ["--trainer.max_epochs", "2"],
    )
    assert quickstart.take_teacher(["--trainer.max_epochs", "2", "--teacher=/m/dino"]) == (
        "/m/dino",
        ["--trainer.max_epochs", "2"],
    )
    assert quickstart.take_teacher(["--trainer.max_epochs", "2"]) == (None, ["--trainer.max_epochs", "2"])
    with pytest.raises(SystemExit, match="needs a name or a path"):
        quickstart.take_teacher(["--teacher"])


def test_a_named_teacher_is_checked_and_never_swapped_for_the_teacher_free_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = quickstart.experiments_dir()
    asked = []
    monkeypatch.setattr(quickstart, "teacher_available", lambda name: asked.append(name) or True)
    cmd, svc, why = quickstart.pointdc_recipes(root, teacher="/models/dino-vits8")
    assert (cmd.name, svc.name) == ("pointdc_cmd.yaml", "pointdc_svc.yaml")
    assert asked == ["/models/dino-vits8"] and why == "2D teacher /models/dino-vits8"
    monkeypatch.setattr(quickstart, "teacher_available", lambda name: False)
    with pytest.raises(SystemExit, match="no weights of the 2D teacher /models/dino-vits8"):
        quickstart.pointdc_recipes(root, teacher="/models/dino-vits8")
    with pytest.raises(SystemExit, match="exclude each other"):
        quickstart.pointdc_recipes(root, "random-teacher", teacher="/models/dino-vits8")


def test_main_gives_the_named_teacher_to_cmd_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher reaches CMD's data module (``feature_targets.teacher``); SVC, which reads no 2D
    targets, gets the other arguments and CMD's checkpoint."""
    from types import SimpleNamespace

    runs = []

    def fake_fit(config: Path, extra: list[str]) -> SimpleNamespace:
        runs.append((config.name, list(extra)))
        ckpt = SimpleNamespace(last_model_path=f"{config.stem}.ckpt", best_model_path="")
        metrics = {"val/miou": 0.5, "val/acc": 0.75}
        trainer = SimpleNamespace(checkpoint_callback=ckpt, callback_metrics=metrics)
        return SimpleNamespace(trainer=trainer)

    monkeypatch.setattr(quickstart, "teacher_available", lambda name: name == "/models/dino-vits8")
    monkeypatch.setattr(quickstart, "_fit", fake_fit)
    metrics = quickstart.main(["--teacher", "/models/dino-vits8", "--trainer.max_epochs", "1"])
    assert metrics == {"val/miou": 0.5, "val/acc": 0.75}
    assert runs == [
        (
            "pointdc_cmd.yaml",
            ["--data.init_args.feature_targets.teacher", "/models/dino-vits8", "--trainer.max_epochs", "1"],
        ),
        (
            "pointdc_svc.yaml",
            ["--model.init_args.init_checkpoint", "pointdc_cmd.ckpt", "--trainer.max_epochs", "1"],
        ),
    ]


@pytest.mark.parametrize(("epochs", "every", "limit", "validated"), [
    (12, 4, 1.0, False),  # the last epoch was validated: its metrics stand
    (10, 4, 1.0, True),  # epochs 4 and 8 validated, not 10: the last checkpoint is validated
    (2, 4, 1.0, True),  # never validated
    (10, 4, 0, False),  # validation switched off
])  # fmt: skip
def test_fit_validates_the_last_checkpoint_where_the_last_epoch_was_not(
    monkeypatch: pytest.MonkeyPatch, epochs: int, every: int, limit: float, validated: bool
) -> None:
    from types import SimpleNamespace

    calls = []

    class FakeTrainer:
        current_epoch, check_val_every_n_epoch, limit_val_batches = epochs, every, limit
        checkpoint_callback = SimpleNamespace(last_model_path="last.ckpt", best_model_path="")

        def validate(self, model, datamodule=None, ckpt_path=None, verbose=True):
            calls.append((model, datamodule, ckpt_path))

    def fake_cli(args):
        return SimpleNamespace(trainer=FakeTrainer(), model="model", datamodule="data")

    monkeypatch.setattr(quickstart, "Unsup3DCLI", fake_cli)
    quickstart._fit(Path("recipe.yaml"), ["--trainer.max_epochs", str(epochs)])
    assert calls == ([("model", "data", "last.ckpt")] if validated else [])
