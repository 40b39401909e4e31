"""A tiny synthetic-room data root shared by the stage tests (generated once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_ROOMS = [
    "--data.init_args.num_scenes",
    "3",
    "--data.init_args.num_val",
    "1",
    "--data.init_args.frames_per_scene",
    "2",
]


@pytest.fixture(scope="session")
def rooms_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_root for ``SyntheticRoomsDataModule(num_scenes=3, num_val=1, frames_per_scene=2)``."""
    from unsup3d.data.datamodules import SyntheticRoomsDataModule

    root = tmp_path_factory.mktemp("rooms")
    SyntheticRoomsDataModule(num_scenes=3, num_val=1, frames_per_scene=2, data_root=str(root)).prepare_data()
    return root
