"""The console scripts: LightningCLI in subclass mode, and two runs in a row into one log folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
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


COMMANDS = ("fit", "validate", "test", "predict", "preprocess", "import", "evaluate")


def test_console_scripts_answer_help(capsys) -> None:
    exe = Path(sys.executable).parent / "unsup3d"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert tuple(re.findall(r"^  (\w+)  ", out, re.M)) == COMMANDS  # every command, one a line
    # the ``lightning`` script is lightning_main (a subprocess more would cost seconds of imports)
    from unsup3d.cli import lightning_main

    with pytest.raises(SystemExit) as exc:
        lightning_main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and out.startswith("usage: lightning") and "fit" in out and "validate" in out


def test_help_of_each_command(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and tuple(re.findall(r"^  (\w+)  ", out, re.M)) == COMMANDS
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2 and "preprocess" in capsys.readouterr().err  # no command: usage, status 2
    for command, option in (
        ("preprocess", "--config"),
        ("import", "--val-fraction"),
        ("evaluate", "--ckpt_path"),
    ):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        out = capsys.readouterr().out
        assert exc.value.code == 0 and f"unsup3d {command}" in out and option in out
    with pytest.raises(SystemExit) as exc:
        main(["fitt", "--config", "x.yaml"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("unsup3d: error: no command 'fitt' (did you mean fit?")


QUICKSTART_SVC = Path(__file__).resolve().parents[1] / "experiments" / "quickstart" / "pointdc_svc.yaml"


def _recipe(tmp_path: Path, old: str, new: str) -> list[str]:
    text = QUICKSTART_SVC.read_text()
    assert old in text
    path = tmp_path / "recipe.yaml"
    path.write_text(text.replace(old, new))
    return ["--config", str(path)]


DM = "unsup3d.pointdc.datamodules"
NO_BATCH_SISE = (
    f"data.init_args.batch_sise: {DM}.SyntheticRoomsDataModule takes no such argument; "
    "did you mean 'batch_size'?"
)
CONFIG_ERRORS = {
    "unknown-class": (
        ("svc.SVCModule", "svc.NoSuchModule"), [],
        "model.class_path: unsup3d.pointdc.svc.NoSuchModule is not importable "
        "(no NoSuchModule in unsup3d.pointdc.svc; did you mean SVCModule?)",
    ),
    "misspelt-data-module": (
        ("SyntheticRoomsDataModule", "SyntheticRoomDataModule"), [],
        f"data.class_path: {DM}.SyntheticRoomDataModule is not importable "
        f"(no SyntheticRoomDataModule in {DM}; did you mean SyntheticRoomsDataModule?)",
    ),
    "not-a-module": (
        ("unsup3d.pointdc.svc.SVCModule", "torch.nn.Linear"), [],
        "model.class_path: torch.nn.Linear is not a LightningModule",
    ),
    "unknown-arg": (("batch_size:", "batch_sise:"), [], NO_BATCH_SISE),
    "unknown-arg-cli": (None, ["--data.init_args.batch_sise=2"], NO_BATCH_SISE),
    "wrong-type": (
        None, ["--data.init_args.batch_size", "abc"], "data.init_args.batch_size: expected int, got 'abc'"
    ),
    "nested-wrong-type": (
        None, ["--model.init_args.backbone.init_args.width=abc"],
        "model.init_args.backbone.init_args.width: expected float, got 'abc'",
    ),
    "trainer-wrong-type": (None, ["--trainer.max_epochs=abc"], "trainer.max_epochs: expected int, got 'abc'"),
    # a class named as the key's bare value (the README's own-data form `--data X`)
    "unknown-class-bare": (
        None, ["--model", "unsup3d.pointdc.svc.NoSuchModule"],
        "model.class_path: unsup3d.pointdc.svc.NoSuchModule is not importable "
        "(no NoSuchModule in unsup3d.pointdc.svc; did you mean SVCModule?)",
    ),
    "misspelt-data-module-bare": (
        None, ["--data", f"{DM}.SceneFolderDataModul"],
        f"data.class_path: {DM}.SceneFolderDataModul is not importable "
        f"(no SceneFolderDataModul in {DM}; did you mean SceneFolderDataModule?)",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("edit", "override", "expected"), CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_config_errors_are_one_line(tmp_path: Path, capsys, edit, override, expected: str) -> None:
    config = _recipe(tmp_path, *edit) if edit else ["--config", str(QUICKSTART_SVC)]
    with pytest.raises(SystemExit) as exc:
        main(["fit", *config, *override])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"unsup3d fit: error: {expected}\n"  # the whole report: one line


def test_missing_required_argument(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "scannet.yaml"
    recipe.write_text(f"data:\n  class_path: {DM}.ScanNetDataModule\n  init_args: {{data_root: data}}\n")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(QUICKSTART_SVC), "--config", str(recipe)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(f": error: data.init_args.raw_root: required by {DM}.ScanNetDataModule, not given\n")


def test_preprocess_and_evaluate_report_config_errors_alike(tmp_path: Path, capsys) -> None:
    ckpt = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {}}, ckpt)  # a well-formed checkpoint: the config is what is wrong
    bad = ["--config", str(QUICKSTART_SVC), "--data.init_args.batch_size=abc"]
    for command, extra in (("preprocess", []), ("evaluate", ["--ckpt_path", str(ckpt)])):
        with pytest.raises(SystemExit) as exc:
            main([command, *bad, *extra])
        assert exc.value.code == 2
        expected = "data.init_args.batch_size: expected int, got 'abc'"
        assert capsys.readouterr().err == f"unsup3d {command}: error: {expected}\n"


def test_unknown_error_shapes_pass_through() -> None:
    from unsup3d.lightning_cli import condense_parse_error

    assert condense_parse_error("unrecognized arguments: --foo 1") == "unrecognized arguments: --foo 1"
    odd = 'Parser key "x":\n  first\n  second'
    assert condense_parse_error(odd) == odd  # nothing is lost where the shape is not one we know


def test_cpu_threads_fallback(monkeypatch) -> None:
    from unsup3d.lightning_cli import set_cpu_threads

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
