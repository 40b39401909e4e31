"""The console scripts: LightningCLI in subclass mode, and two runs in a row into one log folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

from unsup3d.cli import main


class TinyModule(LightningModule):
    """A one-layer regression model, enough to drive the CLI through fit."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class TinyData(LightningDataModule):
    def __init__(self, n: int = 16) -> None:
        super().__init__()
        self.n = n

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(self.n, 3, generator=g)
        return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


def _write_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        f"""
model:
  class_path: tests.test_cli.TinyModule
  init_args: {{lr: 0.05}}
data:
  class_path: tests.test_cli.TinyData
trainer:
  max_steps: 2
  default_root_dir: {tmp_path / "runs"}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {tmp_path / "runs"}, name: tiny, version: fixed}}
  enable_progress_bar: false
  enable_model_summary: false
"""
    )
    return cfg


def test_fit_twice_into_the_same_folder(tmp_path: Path) -> None:
    cfg = _write_config(tmp_path)
    for _ in range(2):  # the second run must not refuse to start because config.yaml exists
        main(["fit", "--config", str(cfg)])
    saved = tmp_path / "runs" / "tiny" / "fixed" / "config.yaml"
    assert saved.is_file()
    assert "tests.test_cli.TinyModule" in saved.read_text()


def test_console_scripts_answer_help() -> None:
    for script in ("lightning", "unsup3d"):
        exe = Path(sys.executable).parent / script
        out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
        assert "fit" in out.stdout and "validate" in out.stdout


def test_cpu_threads_fallback(monkeypatch) -> None:
    from unsup3d.cli import set_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setenv("UNSUP3D_CPU_THREADS", "2")
        assert set_cpu_threads() == 2
        monkeypatch.delenv("UNSUP3D_CPU_THREADS")
        assert set_cpu_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert set_cpu_threads() == 2  # an explicit OMP_NUM_THREADS is respected
    finally:
        torch.set_num_threads(before)
