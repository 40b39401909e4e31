"""Shared fixtures: the real LiDAR samples in ../shared/data, and GPU / slow markers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_data_root() -> Path:
    env = os.environ.get("UNSUP3D_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


SHARED_DATA = _shared_data_root()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real sample data (KITTI sequence 00 frames, one nuScenes sweep)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set UNSUP3D_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kitti_seq_dir(shared_data: Path) -> Path:
    """SemanticKITTI sequence 00: velodyne/, labels/ (frames 0-2), calib.txt, poses.txt."""
    return shared_data / "semantickitti_seq00" / "sequences" / "00"


@pytest.fixture(scope="session")
def nuscenes_sweep(shared_data: Path) -> Path:
    """One nuScenes LIDAR_TOP sweep, 34,688 points of (x, y, z, intensity, ring)."""
    return next((shared_data / "nuscenes_sample" / "samples" / "LIDAR_TOP").glob("*.pcd.bin"))


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
