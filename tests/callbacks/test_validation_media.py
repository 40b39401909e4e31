"""ValidationMedia: the aligned confusion matrix and cluster ids against loops over the definition, and
the callback in a real (tiny) fit: PNGs on the epochs asked for, nothing without W&B or a folder."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader

from unsup3d.callbacks import ValidationMedia, aligned_confusion, aligned_ids
from unsup3d.metrics import HungarianMIoU
from unsup3d.metrics.hungarian import hungarian_miou
from unsup3d.training.evaluation import log_metric


def test_aligned_confusion_and_ids_match_their_definition() -> None:
    rng = np.random.default_rng(0)
    clusters, classes = 6, 4
    target = rng.integers(0, classes, 3000)
    preds = np.where(rng.random(3000) < 0.7, (target * 5 + 1) % clusters, rng.integers(0, clusters, 3000))
    out = hungarian_miou(torch.from_numpy(preds), torch.from_numpy(target), classes, clusters)
    confusion, assignment = out["confusion"].numpy(), out["assignment"].numpy()
    assert confusion.shape == (clusters, classes) and confusion.sum() == 3000

    aligned = aligned_confusion(confusion, assignment)
    expected = np.zeros((classes, classes + 1), dtype=np.int64)
    for p, t in zip(preds, target):  # rows: the point's class; columns: its cluster's matched class
        expected[t, assignment[p] if assignment[p] >= 0 else classes] += 1
    np.testing.assert_array_equal(aligned, expected)
    # the diagonal is what the metric counted as right
    assert np.trace(aligned[:, :classes]) / 3000 == pytest.approx(float(out["acc"]))

    ids = aligned_ids(np.append(preds, -1), assignment, classes)
    for p, i in zip(preds, ids):
        assert i == (assignment[p] if assignment[p] >= 0 else classes + p)
    assert ids[-1] == -1
    with pytest.raises(ValueError, match="assignment"):
        aligned_confusion(confusion, assignment[:-1])


class _Scenes(torch.utils.data.Dataset):
    """Two small 'rooms' a batch: four classes in quadrants, a super-voxel per 1 m cell."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(i)
        coord = rng.random((300 + 50 * i, 3)).astype(np.float32) * 4
        segment = (coord[:, 0] > 2).astype(np.int64) * 2 + (coord[:, 1] > 2)
        segment[:10] = -1
        cell = np.floor(coord[:, :2]).astype(np.int64)
        return {"coord": coord, "segment": segment, "superpoint": cell[:, 0] * 4 + cell[:, 1], "scene": i}


def _collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    keys = ("coord", "segment", "superpoint")
    batch = {k: torch.from_numpy(np.concatenate([s[k] for s in samples])) for k in keys}
    batch["point_batch"] = torch.cat([torch.full((len(s["coord"]),), b) for b, s in enumerate(samples)])
    batch["scene_index"] = torch.tensor([s["scene"] for s in samples])
    return batch


class _Clusters(LightningModule):
    """Predicts the class, relabelled: a perfect clustering whose ids the Hungarian matching must undo."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.metric = HungarianMIoU(4, num_clusters=5)
        self.class_names = ["a", "b", "c", "d"]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self.layer(batch["coord"]).pow(2).mean()

    def validation_step(self, batch: dict, batch_idx: int) -> dict[str, torch.Tensor]:
        pred = (batch["segment"].clamp_min(0) + 3) % 4
        self.metric.update(pred, batch["segment"])
        return {"pred": pred}

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = log_metric(self, self.metric, "val", self.class_names)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Scenes(), batch_size=2, collate_fn=_collate)

    val_dataloader = train_dataloader


def _fit(tmp_path: Path, callback: ValidationMedia, **trainer: Any) -> None:
    trainer.setdefault("max_epochs", 3)
    Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), **trainer,
    ).fit(_Clusters())  # fmt: skip


def test_logs_on_the_epochs_asked_for() -> None:
    callback = ValidationMedia(every_n_epochs=3)

    def trainer(epoch: int, fn: str = "fit", sanity: bool = False) -> Any:
        state = SimpleNamespace(fn=fn)
        return SimpleNamespace(sanity_checking=sanity, state=state, current_epoch=epoch, max_epochs=8)

    assert [e for e in range(8) if callback._due(trainer(e))] == [2, 5, 7]  # every 3rd, and the last
    assert callback._due(trainer(0, fn="validate")) and not callback._due(trainer(2, sanity=True))


def test_collects_the_first_scenes_own_points() -> None:
    callback = ValidationMedia(num_scenes=3, max_points=320)
    callback._active = True
    loader = DataLoader(_Scenes(), batch_size=2, collate_fn=_collate)
    for batch in loader:
        callback._collect({"pred": batch["segment"] + 1}, batch)
    assert [s["scene"] for s in callback._scenes] == [0, 1, 2]
    for scene in callback._scenes:
        data = _Scenes()[scene["scene"]]
        assert len(scene["coord"]) == min(len(data["coord"]), 320)
        rows = [int(np.flatnonzero((data["coord"] == c).all(1))[0]) for c in scene["coord"]]
        np.testing.assert_array_equal(scene["segment"], data["segment"][rows])
        np.testing.assert_array_equal(scene["superpoint"], data["superpoint"][rows])
        np.testing.assert_array_equal(scene["pred"], data["segment"][rows] + 1)
    callback = ValidationMedia(num_scenes=1)
    callback._active = True
    with pytest.raises(ValueError, match="'pred' has 3 entries"):
        callback._collect({"pred": torch.zeros(3)}, batch)


# A fixed metric for the drawing test: 5 clusters, 4 classes; clusters 0-3 matched to classes 2, 3, 0, 1
# (so a point's aligned id is neither its class nor its raw cluster id), cluster 4 unmatched.
_ASSIGNMENT = np.array([2, 3, 0, 1, -1])
_CONFUSION = np.array([[1, 0, 5, 0], [3, 0, 0, 9], [6, 2, 0, 1], [0, 7, 1, 0], [0, 1, 4, 0]])
# Worked out by hand: row t = class t, column j = the class cluster k was matched to (entry
# _CONFUSION[k, t]), the last column cluster 4's points; every row sums to 10; a zero "unmatched" row
# keeps the matrix square.
_SHOWN = np.array(
    [
        [0.6, 0.0, 0.1, 0.3, 0.0],
        [0.2, 0.7, 0.0, 0.0, 0.1],
        [0.0, 0.1, 0.5, 0.0, 0.4],
        [0.1, 0.0, 0.0, 0.9, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)


class _FixedMetrics(_Clusters):
    """The same predictions, but ``last_metrics`` a known, non-symmetric confusion and assignment."""

    def on_validation_epoch_end(self) -> None:
        self.last_metrics = {
            "iou": torch.full((4,), 0.5), "confusion": torch.from_numpy(_CONFUSION),
            "assignment": torch.from_numpy(_ASSIGNMENT),
        }  # fmt: skip


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB")).astype(np.int64)


def _at(image: np.ndarray, ax: Any, xy: np.ndarray) -> np.ndarray:
    """The PNG's pixels (N, 3) under data points ``xy`` (N, 2) of ``ax`` (display y is from the bottom)."""
    px = ax.transData.transform(xy)
    cols = np.floor(px[:, 0]).astype(int)
    rows = image.shape[0] - 1 - np.floor(px[:, 1]).astype(int)
    return image[rows, cols]


def test_pngs_of_scenes_and_confusion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import unsup3d.viz as viz

    figures: dict[str, Any] = {}
    draw_confusion, draw_scenes = viz.draw_confusion, viz.draw_scenes

    def keep_confusion(*args: Any, **kwargs: Any) -> Any:
        figures["confusion"] = draw_confusion(*args, **kwargs)
        return figures["confusion"]

    def keep_scenes(*args: Any, **kwargs: Any) -> Any:
        figures["scene"] = draw_scenes(*args, **kwargs)
        figures["scene_coord"] = np.asarray(args[0])
        return figures["scene"]

    monkeypatch.setattr(viz, "draw_confusion", keep_confusion)
    monkeypatch.setattr(viz, "draw_scenes", keep_scenes)
    callback = ValidationMedia(num_scenes=1, max_points=200, save_dir=str(tmp_path / "png"))
    Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), max_epochs=1, callbacks=[callback],
    ).fit(_FixedMetrics())  # fmt: skip
    png = tmp_path / "png"
    assert sorted(p.name for p in png.iterdir()) == [
        "val_epoch000_confusion.png", "val_epoch000_scene0.png",
    ]  # fmt: skip

    # The confusion: the matrix shown is the hand-worked one, and the PNG's cells are darker (Blues) the
    # larger their share of the row. Each cell is read a third of a cell off its centre, clear of its text.
    ax = figures["confusion"].axes[0]
    np.testing.assert_allclose(np.asarray(ax.images[0].get_array()), _SHOWN)
    image = _pixels(png / "val_epoch000_confusion.png")
    rows, cols = np.indices(_SHOWN.shape).reshape(2, -1)
    brightness = _at(image, ax, np.column_stack([cols - 1 / 3, rows - 1 / 3])).sum(axis=1)
    value = _SHOWN[rows, cols]
    for a in range(len(value)):
        for b in range(len(value)):
            if value[a] < value[b]:
                assert brightness[a] > brightness[b], ((rows[a], cols[a]), (rows[b], cols[b]))
            elif value[a] == value[b]:
                assert abs(brightness[a] - brightness[b]) <= 6
    assert brightness[value == 0].min() >= 3 * 240  # empty cells near white

    # The scene: three top views (ground truth, aligned clusters, super-voxels); the pixel under each
    # point has the palette colour of that point's id, looked up in the data set by its coordinates.
    data = _Scenes()[0]
    coord = figures["scene_coord"]
    assert len(coord) == 200
    found = [int(np.flatnonzero((data["coord"] == c).all(1))[0]) for c in coord]
    segment, superpoint = data["segment"][found], data["superpoint"][found]
    cluster = (np.maximum(segment, 0) + 3) % 4  # _Clusters.validation_step
    expected = {
        "ground_truth": [tuple(viz.PALETTE[s]) if s >= 0 else viz.IGNORE_COLOR for s in segment],
        "clusters": [tuple(viz.PALETTE[_ASSIGNMENT[k]]) for k in cluster],
        "supervoxels": [tuple(viz.PALETTE[v]) for v in superpoint],
    }
    image = _pixels(png / "val_epoch000_scene0.png")
    panels = figures["scene"].axes
    assert [a.get_title() for a in panels] == list(expected)
    for ax, (what, colours) in zip(panels, expected.items()):
        drawn = _at(image, ax, coord[:, :2])
        right = (np.abs(drawn - np.array(colours)) <= 2).all(axis=1)
        # a square may hide part of an earlier (lower) neighbour's: measured 200 of 200 right
        assert right.mean() > 0.95, (what, right.mean())


def test_quiet_without_wandb_or_folder(tmp_path: Path) -> None:
    callback = ValidationMedia()
    _fit(tmp_path, callback, callbacks=[callback])
    _fit(tmp_path, callback, callbacks=[callback], fast_dev_run=True)
    assert not callback._scenes and not callback._active
    assert [p.name for p in tmp_path.iterdir()] == ["wandb_home"]
    with pytest.raises(ValueError, match="every_n_epochs"):
        ValidationMedia(every_n_epochs=0)
