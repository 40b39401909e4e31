"""``unsup3d preprocess`` and ``unsup3d evaluate`` on the quickstart recipes at a tiny size, and their
checkpoint errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from unsup3d.cli import main
from unsup3d.evaluate import evaluate, summarize_load_error
from unsup3d.lightning_cli import Unsup3DCLI

QUICKSTART = Path(__file__).resolve().parents[1] / "experiments" / "quickstart"
TINY_ROOMS = [
    *("--data.init_args.num_scenes=2", "--data.init_args.num_val=1", "--data.init_args.frames_per_scene=1"),
    "--data.init_args.voxel_size=0.1",
]
TINY_LIDAR = [
    *("--data.init_args.num_sequences=2", "--data.init_args.num_val=1"),
    *("--data.init_args.frames_per_sequence=3", "--data.init_args.azimuth_steps=128"),
    "--data.init_args.beams=16",
]
#: the trainer of the tiny SVC run: one epoch, validated, a checkpoint, nothing else written
TRAINER = """
trainer:
  max_epochs: 1
  check_val_every_n_epoch: 1
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {dirpath: ckpt, save_last: true}
"""


@pytest.fixture(autouse=True)
def _no_pytest_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["unsup3d"])  # the CLI gets its arguments from main(), not pytest's


def _files(data: Path) -> dict[Path, int]:
    """Every file under ``data`` (scenes, frames, clusters, prepared.json, the generator's lists) but
    the lock files, which each preparation rewrites with its holder."""
    files = (p for p in data.rglob("*") if p.is_file() and p.name != ".lock")
    return {p: p.stat().st_mtime_ns for p in files}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working folder of the SVC tests: the rooms one preprocess test prepares are the run's."""
    return tmp_path_factory.mktemp("cli")


@pytest.mark.parametrize(
    ("recipe", "tiny", "unit", "sizes"),
    [("pointdc_svc.yaml", TINY_ROOMS, "scene", (1, 1)), ("stssl_p2c.yaml", TINY_LIDAR, "frames", (3, 3))],
)
def test_preprocess_prepares_once_and_reports(
    recipe: str, tiny: list[str], unit: str, sizes: tuple[int, int], workdir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(workdir)  # the recipe's data_root (data/quickstart) is relative
    args = ["preprocess", "--config", str(QUICKSTART / recipe), *tiny]
    main(args)
    out = capsys.readouterr().out
    data = workdir / "data" / "quickstart"
    name = "synthetic_rooms" if "svc" in recipe else "synthetic_lidar"
    prepared = list(data.glob(f"{name}-[0-9a-f]*"))
    assert len(prepared) == 1 and (prepared[0] / "prepared.json").is_file()
    assert f"prepared data in {Path('data/quickstart') / prepared[0].name}" in out
    assert re.search(rf"train\s+{sizes[0]} {unit}", out) and re.search(rf"val\s+{sizes[1]} {unit}", out)
    assert not (workdir / "outputs").exists()  # no model, trainer or logger was built
    before = _files(data)
    assert any(p.suffix == ".npy" for p in before)

    main(args)  # cached: the same report, nothing rewritten
    assert capsys.readouterr().out == out
    assert _files(data) == before


def test_python_m_unsup3d_cli_runs_the_commands(workdir: Path, monkeypatch, capsys) -> None:
    """``python -m unsup3d.cli preprocess|evaluate ...``, run in this process (runpy, as ``-m`` does)."""
    import runpy
    import warnings

    def python_m(*argv: str) -> None:
        monkeypatch.setattr(sys, "argv", ["cli.py", *argv])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # runpy: unsup3d.cli is imported already
            runpy.run_module("unsup3d.cli", run_name="__main__")

    monkeypatch.chdir(workdir)
    lidar = ["--config", str(QUICKSTART / "stssl_p2c.yaml"), *TINY_LIDAR]
    python_m("preprocess", *lidar)
    assert "SyntheticLidarDataModule: prepared data in" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        python_m("evaluate", *lidar, "--ckpt_path=none.ckpt")
    assert exc.value.code == 2
    assert (
        capsys.readouterr().err == "unsup3d evaluate: error: ckpt_path: none.ckpt: no such checkpoint file\n"
    )


@pytest.fixture(scope="module")
def svc_run(workdir: Path) -> list[str]:
    """A one-epoch SVC run of the quickstart recipe at a tiny size in ``workdir``; its config args."""
    (workdir / "trainer.yaml").write_text(TRAINER)
    config = [
        *("--config", str(QUICKSTART / "pointdc_svc.yaml"), "--config", str(workdir / "trainer.yaml")),
        *TINY_ROOMS,
        "--model.init_args.backbone.init_args.width=0.25",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        mp.setattr(sys, "argv", ["unsup3d"])
        main(["fit", *config])
    assert (workdir / "ckpt" / "last.ckpt").is_file()
    return config


def _outputs(workdir: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in workdir.rglob("*") if p.relative_to(workdir).parts[0] != "data"}


def _table(out: str) -> dict[str, float]:
    rows = re.findall(r"^\s*(\S.*?)\s+(-?\d+\.\d\d)$", out, re.M)
    return {name: float(value) for name, value in rows}


def test_evaluate_prints_the_numbers_of_trainer_validate(workdir: Path, svc_run, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workdir)
    ckpt, config = workdir / "ckpt" / "last.ckpt", svc_run
    before = _outputs(workdir)
    main(["evaluate", *config, "--ckpt_path", str(ckpt)])
    assert _outputs(workdir) == before  # nothing logged or saved
    out = capsys.readouterr().out
    table = _table(out)

    # the reference: Trainer.validate on the same checkpoint, the model and data built from the recipe
    cli = Unsup3DCLI(args=config, run=False)
    ref = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt, verbose=False)[0]
    classes = {k.split("/")[-1]: v for k, v in ref.items() if k.startswith("val/iou/")}
    assert classes, "the stage logs per-class IoU"
    assert set(table) == {"mIoU", "accuracy", *classes}
    assert table["mIoU"] == pytest.approx(100 * ref["val/miou"], abs=0.006)
    assert table["accuracy"] == pytest.approx(100 * ref["val/acc"], abs=0.006)
    for name, iou in classes.items():
        assert table[name] == pytest.approx(100 * iou, abs=0.006), name

    # evaluate() returns the same numbers unrounded; --split test runs the stage's test step. The
    # checkpoint names an init_checkpoint that is gone: its weights replace those, it is not read.
    moved = torch.load(ckpt, weights_only=True)
    moved["hyper_parameters"]["init_checkpoint"] = str(workdir / "gone.ckpt")
    torch.save(moved, ckpt := workdir / "moved.ckpt")
    metrics = evaluate([*config, "--ckpt_path", str(ckpt), "--split", "test"])
    assert metrics["test/miou"] == pytest.approx(ref["val/miou"], abs=1e-6)  # the test loader is val's
    assert metrics["test/acc"] == pytest.approx(ref["val/acc"], abs=1e-6)
    assert f"SVCModule {ckpt} on test" in capsys.readouterr().out


def test_a_checkpoint_evaluates_from_the_recipe_alone(workdir: Path, svc_run, monkeypatch, capsys) -> None:
    """The width-0.25 checkpoint carries its backbone's class and arguments (plain data, loaded with
    weights_only=True): the recipe's half-width backbone is replaced by the trained one."""
    monkeypatch.chdir(workdir)
    ckpt, config = workdir / "ckpt" / "last.ckpt", svc_run
    saved = torch.load(ckpt, weights_only=True)
    spec = saved["unsup3d_backbone"]
    assert spec["class_path"] == "unsup3d.models.res16unet.Res16UNet"
    assert spec["init_args"]["width"] == 0.25 and spec["init_args"]["in_channels"] == 6
    recipe_alone = [a for a in config if "width" not in a]  # the recipe's half-width backbone
    with pytest.warns(UserWarning, match="building its own backbone"):
        alone = evaluate([*recipe_alone, "--ckpt_path", str(ckpt)])
    assert alone == evaluate([*config, "--ckpt_path", str(ckpt)])
    assert {"val/miou", "val/acc"} <= set(alone)


def test_evaluate_names_a_checkpoint_that_does_not_fit(workdir: Path, svc_run, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workdir)
    ckpt, config = workdir / "ckpt" / "last.ckpt", svc_run
    old = torch.load(ckpt, weights_only=True)  # a checkpoint from before backbones were recorded
    del old["unsup3d_backbone"]
    torch.save(old, ckpt := workdir / "old.ckpt")
    wider = [a for a in config if "width" not in a]  # the recipe's half-width backbone: not the trained one
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", *wider, "--ckpt_path", str(ckpt)])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"unsup3d evaluate: error: ckpt_path: {ckpt}: does not fit the SVCModule")
    assert "shapes differ" in err and len(err) < 400


class WritesMarker:
    """Unpickling this runs ``open(marker, "w")``: the file appears if pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("command", ["evaluate", "fit"])
def test_checkpoint_errors_name_the_file(command: str, tmp_path: Path, capsys) -> None:
    from tests.test_cli import _write_config

    config = ["--config", str(_write_config(tmp_path))]
    missing, junk, evil = tmp_path / "missing.ckpt", tmp_path / "junk.ckpt", tmp_path / "evil.ckpt"
    junk.write_text("not a checkpoint\n")
    marker = tmp_path / "ran"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": WritesMarker(marker)}}, evil)
    expected = {
        missing: "no such checkpoint file",
        junk: "not a PyTorch checkpoint",
        evil: "refusing to load it: it holds pickled code (io.open)",
    }
    for path, why in expected.items():
        with pytest.raises(SystemExit) as exc:
            main([command, *config, "--ckpt_path", str(path)])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"unsup3d {command}: error: ckpt_path: {path}: {why}") and "\n" not in err
    assert not marker.exists()  # the pickled code never ran


def test_fit_resumes_with_weights_only(tmp_path: Path, capsys) -> None:
    from tests.test_cli import _write_config

    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(_write_config(tmp_path)), "--print_config"])
    assert exc.value.code == 0
    assert re.search(r"^weights_only: true$", capsys.readouterr().out, re.M)


def test_load_error_summary() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 3))
    state = {"0.weight": torch.zeros(4, 2), "0.bias": torch.zeros(4), "1.weight": torch.zeros(1)}
    with pytest.raises(RuntimeError) as exc:
        model.load_state_dict(state)
    summary = summarize_load_error(str(exc.value))
    assert summary is not None and "\n" not in summary
    assert "does not fit the Sequential" in summary
    assert "2 shapes differ, e.g. 0.weight: checkpoint [4, 2], model [3, 2]" in summary
    assert "1 keys unknown to the model, e.g. 1.weight" in summary
    assert summarize_load_error("CUDA out of memory") is None
