from __future__ import annotations

from pathlib import Path

import pytest

from tests.callbacks.wandb_env import isolate_wandb


@pytest.fixture(autouse=True)
def wandb_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test here keeps W&B's folders in its tmp dir, silent and offline-capable."""
    isolate_wandb(monkeypatch, tmp_path / "wandb_home")
    return tmp_path / "wandb_home"
