"""The W&B logger: offline unless turned on, WANDB_MODE honoured, an online start that cannot reach a
server falls back to offline with one warning, and each fit ends its own run."""

from __future__ import annotations

import os
import re
import socket
import time
import warnings
from pathlib import Path

import pytest

import unsup3d.callbacks.wandb_logger as wandb_logger
from unsup3d.callbacks import WandbLogger, find_offline_runs, read_offline_run, resolve_mode


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("env", "offline", "expected"),
    [
        ({}, True, "offline"),
        ({}, False, "online"),
        ({"WANDB_MODE": "online"}, True, "online"),
        ({"WANDB_MODE": "run"}, True, "online"),
        ({"WANDB_MODE": "dryrun"}, False, "offline"),
        ({"WANDB_MODE": "offline"}, False, "offline"),
        ({"WANDB_MODE": "disabled"}, False, "disabled"),
        ({"WANDB_DISABLED": "true"}, True, "disabled"),
    ],
)
def test_mode_follows_wandb_mode_then_offline(monkeypatch, env, offline, expected) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_mode(offline) == expected


def test_offline_by_default_and_each_finalize_ends_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    wandb.setup()  # the service starts (or runs) in another folder than the relative save_dir's
    monkeypatch.chdir(tmp_path)
    logger = WandbLogger(save_dir="runs", name="a")
    logger.log_metrics({"train/loss": 1.5}, step=0)
    assert logger.experiment.settings.mode == "offline"
    assert "WANDB_MODE" not in os.environ  # Lightning's logger sets it for the whole process
    first_id = logger.version
    logger.finalize("success")
    assert wandb.run is None  # a second logger of the process starts its own run
    logger.log_metrics({"train/loss": 0.5}, step=1)  # used again (fit then test): a new offline run
    second_id = logger.version
    assert second_id != first_id
    logger.finalize("success")
    runs = {d.name.rsplit("-", 1)[1]: read_offline_run(d, timeout=20) for d in find_offline_runs("runs")}
    assert runs.keys() == {first_id, second_id}
    assert runs[first_id].scalars("train/loss") == [1.5]
    assert runs[second_id].scalars("train/loss") == [0.5]


@pytest.mark.parametrize("api_key", [None, "x" * 40], ids=["no-key", "unreachable-server"])
def test_online_start_without_network_falls_back_to_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str | None
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    if api_key:
        monkeypatch.setenv("WANDB_API_KEY", api_key)
    start = time.monotonic()
    logger = WandbLogger(save_dir=str(tmp_path / "first"), offline=False, init_timeout=2)
    with pytest.warns(RuntimeWarning, match="could not start an online run") as caught:
        logger.log_metrics({"val/miou": 0.25}, step=0)
    cause = "UsageError: No API key" if api_key is None else "CommError"
    assert any(re.search(cause, str(w.message)) for w in caught)
    assert logger.experiment.settings.mode == "offline"
    logger.finalize("success")
    assert time.monotonic() - start < 30

    # the next logger of the process goes straight to offline, without a second warning or wait
    second = WandbLogger(save_dir=str(tmp_path / "second"), offline=False, init_timeout=2)
    assert second.mode == "offline"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        second.log_metrics({"val/miou": 0.5}, step=0)
    second.finalize("success")
    for folder, value in (("first", 0.25), ("second", 0.5)):
        (run,) = find_offline_runs(tmp_path / folder)
        assert read_offline_run(run, timeout=20).scalars("val/miou") == [value]
    assert wandb_logger._ONLINE_FAILURE is not None
