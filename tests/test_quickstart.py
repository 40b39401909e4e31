"""The README's main job: ``python -m unsup3d.quickstart`` runs CMD then SVC and reports mIoU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from unsup3d.quickstart import format_metrics, main


def test_quickstart_runs_cmd_then_svc_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
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
    assert (tmp_path / "outputs" / "quickstart" / "cmd" / "checkpoints" / "last.ckpt").is_file()
    out = capsys.readouterr().out
    assert "PointDC quickstart" in out and "mIoU" in out


def test_format_metrics_lists_classes() -> None:
    text = format_metrics({"val/miou": 0.5, "val/acc": 0.75, "val/iou/wall": 0.9})
    assert "50.00" in text and "75.00" in text and "wall" in text
