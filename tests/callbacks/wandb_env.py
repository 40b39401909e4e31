"""Keep W&B inside a test's tmp folder: no writes to the user's home, no network, no output."""

from __future__ import annotations

from pathlib import Path

import pytest

import unsup3d.callbacks.wandb_logger as wandb_logger


def isolate_wandb(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Point every W&B folder into ``root``, silence it, drop any mode, key or server the user set,
    and forget an earlier failed online start of this process."""
    for var, sub in (
        ("WANDB_DIR", "dir"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(root / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_MODE", "WANDB_DISABLED", "WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_PROJECT",
                "WANDB_INIT_TIMEOUT", "WANDB_ENTITY", "WANDB_RUN_ID", "WANDB_RESUME"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(wandb_logger, "_ONLINE_FAILURE", None)
