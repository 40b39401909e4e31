"""The offline-run reader against runs written by wandb itself: values, records split across 32 KiB
blocks, and the errors on a damaged or foreign file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unsup3d.callbacks import find_offline_runs, iter_records, read_offline_run


@pytest.fixture(scope="module")
def written_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    import wandb

    from tests.callbacks.wandb_env import isolate_wandb

    root = tmp_path_factory.mktemp("offline_run")
    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, root / "home")
        rng = np.random.default_rng(0)
        rows = [{"train/loss": float(v), "epoch": i} for i, v in enumerate(rng.random(300))]
        rows.insert(150, {"long": "x" * 80_000})  # one record over two 32 KiB blocks
        run = wandb.init(project="p", dir=str(root), mode="offline", config={"lr": 0.03, "net": {"w": 2}})
        for row in rows:
            run.log(row)
        run.finish()
    (run_dir,) = find_offline_runs(root)
    return run_dir, rows


def test_reads_what_wandb_wrote(written_run) -> None:
    run_dir, rows = written_run
    run = read_offline_run(run_dir, timeout=20)
    assert run.finished
    assert run.scalars("train/loss") == [r["train/loss"] for r in rows if "train/loss" in r]
    assert run.scalars("epoch") == list(range(300))
    assert [r["long"] for r in run.history if "long" in r] == ["x" * 80_000]
    assert run.summary["train/loss"] == rows[-1]["train/loss"]
    assert run.config["lr"] == 0.03 and run.config["net"] == {"w": 2}


def test_damaged_or_foreign_files_are_named(written_run, tmp_path: Path) -> None:
    run_dir, _ = written_run
    (log,) = run_dir.glob("run-*.wandb")
    data = bytearray(log.read_bytes())
    assert len(data) > 2 * 32768
    data[40_000] ^= 0xFF
    bad = tmp_path / "run-bad.wandb"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="run-bad.wandb: checksum mismatch"):
        list(iter_records(bad))
    foreign = tmp_path / "run-foreign.wandb"
    foreign.write_bytes(b"PK\x03\x04 not a run")
    with pytest.raises(ValueError, match="run-foreign.wandb: not a W&B run log"):
        read_offline_run(foreign)
    with pytest.raises(FileNotFoundError, match="expected one run-"):
        read_offline_run(tmp_path / "nothing")
