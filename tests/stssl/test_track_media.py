"""TrackMedia on STSSL's inter-frame quickstart at a tiny size: the W&B run holds clouds of the
training frames coloured by the location-only tracks at the start, and by the feature tracks the stage
re-makes; each cloud is the frame's points with the colours of its cached track ids."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.callbacks.wandb_env import isolate_wandb
from unsup3d.callbacks import find_offline_runs, read_offline_run
from unsup3d.cli import main
from unsup3d.data.formats.semantic_kitti import read_scan
from unsup3d.models import MinkUNet
from unsup3d.stssl.datamodules import SyntheticLidarDataModule
from unsup3d.stssl.p2c import P2CModule
from unsup3d.stssl.track_media import TrackMedia
from unsup3d.viz import label_colors

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "quickstart" / "stssl_interframe.yaml"
TINY = {
    "num_sequences": 2, "num_val": 1, "frames_per_sequence": 3, "azimuth_steps": 256, "voxel_size": 0.2,
    "max_voxels": 1200, "track_min_points": 40, "num_workers": 0, "prepare_workers": 1,
}  # fmt: skip


@pytest.fixture(autouse=True)
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test keeps W&B's folders in its tmp dir, silent and offline-capable (as tests/callbacks)."""
    isolate_wandb(monkeypatch, tmp_path / "wandb_home")
    return tmp_path / "wandb_home"


def _colours(points: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in row) for row in np.unique(points[:, 3:], axis=0)}


def test_track_clouds_at_start_and_after_retracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # outputs/ lands here
    monkeypatch.setattr(sys, "argv", ["unsup3d"])
    ckpt = tmp_path / "p2c.ckpt"
    torch.save({"state_dict": P2CModule(backbone=MinkUNet(4, width=0.25)).state_dict()}, ckpt)
    args = [f"--data.init_args.{k}={v}" for k, v in TINY.items()]
    args += [f"--data.init_args.data_root={tmp_path / 'data'}", f"--model.init_args.init_checkpoint={ckpt}"]
    args += ["--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false"]
    main(["fit", "--config", str(CONFIG), *args])

    (run_dir,) = find_offline_runs(tmp_path / "outputs" / "quickstart" / "stssl_interframe")
    run = read_offline_run(run_dir, timeout=20)
    assert run.finished and run.scalars("train/loss")
    versions = {}
    for marker in (tmp_path / "data").glob("synthetic_lidar-*/tracks/*/tracks.json"):
        features = json.loads(marker.read_text())["features"]
        versions["location" if features is None else "features"] = marker.parent
    assert versions.keys() == {"location", "features"}
    (raw,) = (tmp_path / "data").glob("synthetic_lidar-raw-*")
    for source, root in versions.items():
        for index in range(3):
            (path,) = run.media(f"tracks/{source}/frame{index}")
            cloud = np.asarray(json.loads(path.read_text()), dtype=np.float64)
            scan = read_scan(raw / "sequences" / "00" / "velodyne" / f"{index:06d}.bin")
            ids = np.load(root / "00" / f"{index:06d}.npy")
            assert cloud.shape == (len(scan), 6)  # fewer than max_points: every point of the frame
            assert _colours(cloud) == _colours(np.concatenate([scan[:, :3], label_colors(ids)], 1))
            if index == 0:  # the first frame is the world origin
                np.testing.assert_allclose(cloud[:, :3], scan[:, :3], atol=1e-4)
            assert (ids >= 0).any()
        (joint,) = run.media(f"tracks/{source}/all")
        assert len(json.loads(joint.read_text())) == min(20000, 3 * len(scan))

    # P2C's data has clusters but no tracks: each frame's clusters are drawn instead
    dm = SyntheticLidarDataModule(**TINY, data_root=str(tmp_path / "data"), tracks=False)
    media = TrackMedia(num_frames=2).media(dm)
    assert sorted(media) == ["clusters/frame0", "clusters/frame1"]


def test_probe_validation_logs_iou_table_and_confusion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STSSL's K-means probe (P2C, inter-frame) logs the per-class IoU table and the confusion image."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["unsup3d"])
    config = CONFIG.parent / "stssl_p2c.yaml"
    ckpt = tmp_path / "p2c.ckpt"
    torch.save({"state_dict": P2CModule(backbone=MinkUNet(4, width=0.25)).state_dict()}, ckpt)
    args = [f"--data.init_args.{k}={v}" for k, v in TINY.items() if k != "track_min_points"]
    args += [f"--data.init_args.data_root={tmp_path / 'data'}"]
    args += ["--model.init_args.backbone.init_args.width=0.25"]
    args += ["--trainer.enable_progress_bar=false", f"--model.init_args.init_checkpoint={ckpt}"]
    main(["validate", "--config", str(config), *args])

    runs = find_offline_runs(tmp_path / "outputs" / "quickstart" / "stssl_p2c")
    run = read_offline_run(runs[-1], timeout=20)
    (table,) = run.media("val/iou_table")
    rows = json.loads(table.read_text())["data"]
    ious = [iou for _, iou in rows if iou is not None]
    assert ious and np.isclose(np.mean(ious), run.scalars("val/miou")[-1], atol=1e-6)
    (image,) = run.media("val/confusion")
    assert image.suffix == ".png" and image.stat().st_size > 0
