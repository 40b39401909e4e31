"""Shared fixtures: the real LiDAR samples that ship in samples/, a tiny synthetic-room data root (generated
once per session) shared by the stage tests, and GPU / slow markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _sample_data_root() -> Path:
    env = os.environ.get("UNSUP3D_SAMPLE_DATA")
    return Path(env) if env else REPO_ROOT / "samples"


SAMPLE_DATA = _sample_data_root()

TINY_ROOMS = [
    "--data.init_args.num_scenes",
    "3",
    "--data.init_args.num_val",
    "1",
    "--data.init_args.frames_per_scene",
    "2",
]


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """Root of the real sample data in the repository (KITTI sequence 00 frames, one nuScenes sweep).

    The samples ship with the repository, so a missing folder is a broken checkout: the tests fail
    instead of skipping.
    """
    if not (SAMPLE_DATA / "semantickitti_seq00").is_dir():
        pytest.fail(f"real sample data missing from {SAMPLE_DATA} (see samples/README.md)", pytrace=False)
    return SAMPLE_DATA


@pytest.fixture(scope="session")
def kitti_seq_dir(sample_data: Path) -> Path:
    """SemanticKITTI sequence 00: velodyne/, labels/ (frames 0-2), calib.txt, poses.txt."""
    return sample_data / "semantickitti_seq00" / "sequences" / "00"


@pytest.fixture(scope="session")
def nuscenes_sweep(sample_data: Path) -> Path:
    """One nuScenes LIDAR_TOP sweep, 34,688 points of (x, y, z, intensity, ring)."""
    return next((sample_data / "nuscenes_sample" / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))


@pytest.fixture(scope="session")
def rooms_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_root for ``SyntheticRoomsDataModule(num_scenes=3, num_val=1, frames_per_scene=2)``."""
    from unsup3d.pointdc.datamodules import SyntheticRoomsDataModule

    root = tmp_path_factory.mktemp("rooms")
    SyntheticRoomsDataModule(num_scenes=3, num_val=1, frames_per_scene=2, data_root=str(root)).prepare_data()
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # The sparse convolution runs many small ops, which intra-op threads slow down badly whenever the
    # cores are shared (worker processes, gloo ranks, a busy CI box): one thread is faster and steadier.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _wandb_in_tmp(tmp_path_factory: pytest.TempPathFactory):
    """Every recipe logs to an offline W&B run: keep its folders out of the user's home, silent."""
    from tests.callbacks.wandb_env import isolate_wandb

    with pytest.MonkeyPatch.context() as mp:
        isolate_wandb(mp, tmp_path_factory.mktemp("wandb_home"))
        yield
